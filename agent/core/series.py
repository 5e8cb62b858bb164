"""Read promtool's notation for input series, so rule tests are written the way Prometheus users know.

A rule test names each input series with a selector (`metric{label="value", ...}`) and gives its
samples in promtool's expanding notation (`0+10x5 _ stale`). This module turns both into plain
data; `agent.adapters.local_prometheus` backfills that data into a real Prometheus, which evaluates the rules.

The semantics follow promtool's series-description grammar (Prometheus 2.x), item by item:

    a        one sample (a number, `Inf`, `NaN`, optionally signed)
    axN      N+1 samples of a (shorthand for a+0xN)
    a+bxN    N+1 samples: a, a+b, ..., a+N*b, accumulated by repeated addition as promtool does
    a-bxN    the same, decrementing
    _        no sample at this step
    _xN      N steps without a sample (N, not N+1: a missing sample cannot increment)
    stale    a staleness marker at this step

Items are separated by whitespace and the i-th item lands at start + i*interval. As in promtool,
an integer literal with a leading zero is octal (`010` is 8). Unlike promtool, `stale` cannot be
repeated or incremented (`stale+0x2` would make plain NaNs there): write it once per step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final, Literal

STALE: Final = "stale"
"""The value of a step that carries a staleness marker."""

SeriesValue = float | None | Literal["stale"]
"""One step of an input series: a sample value, None for no sample, or a staleness marker."""

MAX_STEPS: Final = 1_000_000
"""More steps than any rule test needs; guards against a typo such as `1x10000000000`."""


class SeriesNotationError(ValueError):
    """An input series' selector or values do not follow promtool's notation."""


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF]|[nN][aA][nN]"
_ITEM = re.compile(
    rf"""
    (?P<start>[+-]?(?:{_NUMBER})|stale|_)
    (?:(?P<sign>[+-])(?P<step>{_NUMBER}))?
    (?:x(?P<times>\d+))?
    """,
    re.VERBOSE,
)
_OCTAL = re.compile(r"0[0-7]+")

_EXPECTED = "expected a number, `_`, `stale`, `axN`, `a+bxN`, `a-bxN` or `_xN`"


def expand_values(text: str) -> list[SeriesValue]:
    """The steps that promtool's expanding notation `text` stands for, in order."""
    steps: list[SeriesValue] = []
    for match in re.finditer(r"\S+", text):
        steps.extend(_expand_item(match.group(), text=text, column=match.start() + 1))
        if len(steps) > MAX_STEPS:
            raise SeriesNotationError(f"values {text!r} expand to more than {MAX_STEPS} steps; use fewer repetitions")
    return steps


def _expand_item(item: str, *, text: str, column: int) -> list[SeriesValue]:
    match = _ITEM.fullmatch(item)
    where = f"`{item}` at column {column} of values {text!r}"
    if match is None:
        raise SeriesNotationError(f"bad value {where}: {_EXPECTED}")
    start, sign, step, times = match.group("start", "sign", "step", "times")
    count = 0 if times is None else int(times)
    if count >= MAX_STEPS:
        raise SeriesNotationError(f"bad value {where}: more than {MAX_STEPS} steps")
    if start == "_":
        if step is not None:
            raise SeriesNotationError(f"bad value {where}: a missing sample `_` cannot increment")
        return [None] * (count if times is not None else 1)
    if start == STALE:
        if step is not None or times is not None:
            raise SeriesNotationError(
                f"bad value {where}: `stale` cannot be repeated or incremented; write it once per step"
            )
        return [STALE]
    value = _number(start)
    if times is None:
        if step is not None:
            raise SeriesNotationError(f"bad value {where}: `a{sign}b` needs a count, as in `a{sign}bxN`")
        return [value]
    increment = 0.0 if step is None else _number(step) * (-1.0 if sign == "-" else 1.0)
    values: list[SeriesValue] = []
    for _ in range(count + 1):
        values.append(value)
        value += increment
    return values


def _number(literal: str) -> float:
    """A number literal as promtool reads it: Go's ParseInt with base 0 first, then ParseFloat."""
    negative = literal.startswith("-")
    digits = literal.lstrip("+-")
    value = float(int(digits, 8)) if _OCTAL.fullmatch(digits) else float(digits)
    return -value if negative else value


def with_timestamps(
    values: Sequence[SeriesValue], *, start_seconds: float, interval_seconds: float
) -> list[tuple[float, SeriesValue]]:
    """Pair each step with its time: the i-th step is at start + i*interval, as in promtool."""
    if not (interval_seconds > 0 and math.isfinite(interval_seconds)):
        raise SeriesNotationError(f"interval must be a positive number of seconds, not {interval_seconds}")
    return [(start_seconds + index * interval_seconds, value) for index, value in enumerate(values)]


# --- series selectors --------------------------------------------------------------------------

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_STRING = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`""", re.DOTALL)
_ESCAPE = re.compile(r"\\(?:[0-7]{3}|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.DOTALL)
_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}


def parse_series_selector(text: str) -> tuple[str, dict[str, str]]:
    """The metric name and labels of `metric{label="value", ...}` (or `{__name__="metric", ...}`).

    Label values use PromQL string syntax (double, single or back quotes). A label with an empty
    value is dropped, since Prometheus treats it as absent.
    """
    parser = _SelectorParser(text)
    return parser.parse()


class _SelectorParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> SeriesNotationError:
        return SeriesNotationError(f"bad series {self.text!r} at column {self.pos + 1}: {message}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def take(self, pattern: re.Pattern[str]) -> str | None:
        match = pattern.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group()

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def parse(self) -> tuple[str, dict[str, str]]:
        self.skip_space()
        name = self.take(_METRIC_NAME)
        self.skip_space()
        labels: dict[str, str] = {}
        if self.peek() == "{":
            self.pos += 1
            labels = self.parse_labels()
        self.skip_space()
        if self.pos != len(self.text):
            raise self.fail(f'unexpected {self.text[self.pos :]!r}; a series reads `metric{{label="value", ...}}`')
        if "__name__" in labels:
            if name is not None:
                raise self.fail("the metric name is given twice, before `{` and as `__name__`")
            name = labels.pop("__name__")
            if _METRIC_NAME.fullmatch(name) is None:
                raise self.fail(f"`__name__` value {name!r} is not a valid metric name")
        if name is None:
            raise self.fail('a series needs a metric name, as in `metric{label="value"}`')
        return name, {key: value for key, value in labels.items() if value != ""}

    def parse_labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        while True:
            self.skip_space()
            if self.peek() == "}":
                self.pos += 1
                return labels
            label = self.take(_LABEL_NAME)
            if label is None:
                raise self.fail("expected a label name or `}`")
            if label in labels:
                raise self.fail(f"label {label!r} is given twice")
            self.skip_space()
            if self.peek() != "=" or self.text.startswith("=~", self.pos):
                found = self.text[self.pos : self.pos + 2] or "the end"
                raise self.fail(f"expected `=` after label {label!r}, found {found!r} (only `=` is allowed)")
            self.pos += 1
            self.skip_space()
            start = self.pos
            quoted = self.take(_STRING)
            if quoted is None:
                raise self.fail(f"expected a quoted value for label {label!r}")
            try:
                labels[label] = _unquote(quoted)
            except ValueError as error:
                self.pos = start
                raise self.fail(f"label {label!r}: {error}") from None
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                raise self.fail("expected `,` or `}` after a label value")


def _unquote(quoted: str) -> str:
    """A PromQL string literal's value; ValueError says what is wrong with it."""
    body = quoted[1:-1]
    if quoted[0] == "`":
        return body
    quote = quoted[0]
    out = bytearray()
    last = 0
    for match in _ESCAPE.finditer(body):
        out += body[last : match.start()].encode()
        last = match.end()
        escape = match.group()[1:]
        if escape in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[escape].encode()
        elif escape == quote:
            out += quote.encode()
        elif escape[0] in "01234567" and len(escape) == 3:
            code = int(escape, 8)
            if code > 255:
                raise ValueError(f"octal escape \\{escape} is above \\377")
            out.append(code)
        elif escape[0] == "x" and len(escape) == 3:
            out.append(int(escape[1:], 16))
        elif escape[0] in "uU" and len(escape) > 1:
            code = int(escape[1:], 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"escape \\{escape} is not a valid Unicode code point")
            out += chr(code).encode()
        else:
            raise ValueError(f"unknown escape sequence \\{escape[:1]}")
    out += body[last:].encode()
    try:
        return out.decode()
    except UnicodeDecodeError as error:
        raise ValueError(f"value is not valid UTF-8 after unescaping: {error.reason}") from None
