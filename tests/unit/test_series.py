"""promtool's input-series notation: expanding values and parsing series selectors."""

from __future__ import annotations

import math

import pytest

from agent.core.series import (
    MAX_STEPS,
    STALE,
    SeriesNotationError,
    SeriesValue,
    expand_values,
    parse_series_selector,
    with_timestamps,
)

_ = None  # a missing sample, spelled as in the notation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The examples in promtool's unit-testing documentation.
        ("-2+4x3", [-2.0, 2.0, 6.0, 10.0]),
        (" 1-2x4", [1.0, -1.0, -3.0, -5.0, -7.0]),
        (" 1x4", [1.0, 1.0, 1.0, 1.0, 1.0]),
        (" 1 _x3 stale", [1.0, _, _, _, STALE]),
        ("1+0x6 0 0", [1.0] * 7 + [0.0, 0.0]),
        ("10+10x2 30+20x5", [10.0, 20.0, 30.0, 30.0, 50.0, 70.0, 90.0, 110.0, 130.0]),
        ("10+10x7 10+30x4", [10, 20, 30, 40, 50, 60, 70, 80, 10, 40, 70, 100, 130]),
        # Plain values, signs, floats and exponents.
        ("", []),
        ("   ", []),
        ("0 1 2", [0.0, 1.0, 2.0]),
        ("-1 +2 -0.5 .25 3. 1e3 2.5E-1 1e+2", [-1.0, 2.0, -0.5, 0.25, 3.0, 1000.0, 0.25, 100.0]),
        ("1\t2\n3", [1.0, 2.0, 3.0]),
        ("+Inf -inf", [math.inf, -math.inf]),
        # Repetition and increments.
        ("5x0", [5.0]),
        ("0+10x2", [0.0, 10.0, 20.0]),
        ("100-25x4", [100.0, 75.0, 50.0, 25.0, 0.0]),
        ("-1-1x2", [-1.0, -2.0, -3.0]),
        ("0.5+0.25x2", [0.5, 0.75, 1.0]),
        ("1e3+1e2x1", [1000.0, 1100.0]),
        # Missing samples and staleness markers.
        ("_", [_]),
        ("_x0", []),
        ("_x2 1", [_, _, 1.0]),
        ("1 _ 2", [1.0, _, 2.0]),
        ("stale", [STALE]),
        ("1 stale _ 2", [1.0, STALE, _, 2.0]),
        # A leading zero makes an integer octal, as Go's ParseInt with base 0 does for promtool.
        ("010 -010 09 010.5", [8.0, -8.0, 9.0, 10.5]),
    ],
)
def test_expand_values(text: str, expected: list[SeriesValue]) -> None:
    assert expand_values(text) == expected


def test_increments_accumulate_by_repeated_addition_like_promtool() -> None:
    values = expand_values("0+0.1x3")
    running = 0.0
    expected = []
    for _step in range(4):
        expected.append(running)
        running += 0.1
    assert values == expected
    assert values[3] == 0.30000000000000004


def test_nan_is_a_value_not_a_missing_sample() -> None:
    values = expand_values("NaN nan")
    assert len(values) == 2
    assert all(isinstance(value, float) and math.isnan(value) for value in values)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 foo", "bad value `foo` at column 3"),
        ("1+2", "needs a count"),
        ("1+x3", "bad value `1+x3`"),
        ("1x-3", "bad value `1x-3`"),
        ("1x2.5", "bad value `1x2.5`"),
        ("1 + 2x3", "bad value `+`"),
        ("_+1x2", "cannot increment"),
        ("stalex2", "`stale` cannot be repeated"),
        ("stale+0x2", "`stale` cannot be repeated"),
        ("-stale", "bad value `-stale`"),
        ("0x1f", "bad value `0x1f`"),
        ("1,2", "bad value `1,2`"),
        (f"1x{MAX_STEPS}", "more than"),
        (f"_x{MAX_STEPS * 1000}", "more than"),
        (f"1x{MAX_STEPS // 2} 1x{MAX_STEPS // 2}", "expand to more than"),
    ],
)
def test_expand_values_rejects(text: str, message: str) -> None:
    with pytest.raises(SeriesNotationError) as caught:
        expand_values(text)
    assert message in str(caught.value)


def test_notation_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="expected a number"):
        expand_values("abc")


@pytest.mark.parametrize(
    ("text", "name", "labels"),
    [
        ("up", "up", {}),
        ("up{}", "up", {}),
        (
            'go_goroutines{job="prometheus", instance="localhost:9090"}',
            "go_goroutines",
            {"job": "prometheus", "instance": "localhost:9090"},
        ),
        (
            'series_name{label1="value1", label2="value2",}',
            "series_name",
            {"label1": "value1", "label2": "value2"},
        ),
        ("  job:up:sum { job = 'node' }  ", "job:up:sum", {"job": "node"}),
        ('{__name__="kafka_server_bytes", pod="kafka-0"}', "kafka_server_bytes", {"pod": "kafka-0"}),
        ("x{a=`raw \\n`}", "x", {"a": "raw \\n"}),
        (
            'x{a="tab\\there", b="quote\\"d", c="back\\\\slash"}',
            "x",
            {"a": "tab\there", "b": 'quote"d', "c": "back\\slash"},
        ),
        ("x{a='it\\'s'}", "x", {"a": "it's"}),
        ('x{a="\\u00e9\\x41\\101\\U0001F600"}', "x", {"a": "\u00e9AA\U0001f600"}),
        ('x{a="é"}', "x", {"a": "é"}),
        ('x{a="", b="1"}', "x", {"b": "1"}),
        ('x{by="1", sum="2"}', "x", {"by": "1", "sum": "2"}),
        ('_private{_l="1"}', "_private", {"_l": "1"}),
    ],
)
def test_parse_series_selector(text: str, name: str, labels: dict[str, str]) -> None:
    assert parse_series_selector(text) == (name, labels)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "needs a metric name"),
        ('{job="a"}', "needs a metric name"),
        ('up{job="a"', "expected `,` or `}` after a label value"),
        ('up{job="a" instance="b"}', "expected `,` or `}`"),
        ('up{job!="a"}', "only `=` is allowed"),
        ('up{job=~"a"}', "only `=` is allowed"),
        ("up{job=a}", "expected a quoted value for label 'job'"),
        ('up{job="a", job="b"}', "label 'job' is given twice"),
        ('up{1a="x"}', "expected a label name"),
        ('up{job="a\\qb"}', "unknown escape sequence \\q"),
        ('up{job="\\xff"}', "not valid UTF-8"),
        ('up{job="line\nbreak"}', "expected a quoted value"),
        ('up{__name__="other"}', "metric name is given twice"),
        ('{__name__="not a name"}', "not a valid metric name"),
        ("1up", "unexpected '1up'"),
        ("up 1+1x3", "unexpected '1+1x3'"),
        ('up{job="a"} extra', "unexpected 'extra'"),
    ],
)
def test_parse_series_selector_rejects(text: str, message: str) -> None:
    with pytest.raises(SeriesNotationError) as caught:
        parse_series_selector(text)
    assert message in str(caught.value)
    assert "column" in str(caught.value)


def test_with_timestamps_places_each_step_one_interval_apart() -> None:
    assert with_timestamps(expand_values("1 _ stale 4"), start_seconds=600.0, interval_seconds=60.0) == [
        (600.0, 1.0),
        (660.0, None),
        (720.0, STALE),
        (780.0, 4.0),
    ]


@pytest.mark.parametrize("interval", [0.0, -60.0, math.nan, math.inf])
def test_with_timestamps_rejects_a_bad_interval(interval: float) -> None:
    with pytest.raises(SeriesNotationError, match="interval must be a positive number"):
        with_timestamps([1.0], start_seconds=0.0, interval_seconds=interval)
