"""Exact Kubernetes resource quantities such as "400Gi", "1.5G", "500m" and "1e3".

Rule sizes (maxsize, scalesize) and condition thresholds are written as Kubernetes quantities.
Floats would blur "never past maxsize" at terabyte scale, so a quantity is parsed into an exact
Fraction and a number of bytes is a plain int.

The accepted text follows the grammar of Kubernetes' resource.Quantity:

    quantity  ::= [sign] number [suffix]
    sign      ::= "+" | "-"
    number    ::= digits | digits "." digits | digits "." | "." digits
    suffix    ::= binary | decimal | exponent
    binary    ::= Ki | Mi | Gi | Ti | Pi | Ei          powers of 1024
    decimal   ::= n | u | m | k | M | G | T | P | E    powers of 1000 (m is milli, M is mega)
    exponent  ::= ("e" | "E") [sign] digits           a power of ten: "1e3", "1.5E6", "5e-1"

Suffixes are case-sensitive ("1KI" and "1K" are errors); whitespace is never accepted.

Where Kubernetes rounds, this module stays exact instead:
- no rounding to whole nano units: "0.1n" is exactly 1/10**10;
- no silent cap of binary quantities at 2**63-1: "8Ei" is exactly 2**63;
- exponents beyond +-MAX_EXPONENT are an error rather than a gigantic number.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

__all__ = [
    "GIB",
    "MAX_EXPONENT",
    "QuantityError",
    "format_bytes",
    "parse_bytes",
    "parse_quantity",
    "round_up",
]

GIB = 1024**3

MAX_EXPONENT = 1000
"""Largest decimal exponent accepted ("1e1000"); anything larger is surely a typo."""

_BINARY_SUFFIXES: dict[str, int] = {
    "Ki": 1024**1,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}
_DECIMAL_SUFFIXES: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}

_NUMBER_THEN_SUFFIX = re.compile(
    r"(?P<sign>[+-]?)(?:(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]*))?|\.(?P<only_fraction>[0-9]+))"
    r"(?P<suffix>.*)"
)
_EXPONENT_SUFFIX = re.compile(r"[eE](?P<exponent>[+-]?[0-9]+)")
_SUFFIX_HELP = "Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent such as e3"


class QuantityError(ValueError):
    """A text, number or other value that is not a valid Kubernetes quantity."""

    def __init__(self, text: object, reason: str) -> None:
        super().__init__(f"{text!r} is not a valid quantity: {reason}")
        self.text = text
        self.reason = reason


def parse_quantity(text: str | int | float) -> Fraction:
    """The exact value of a Kubernetes quantity; ints and finite floats (from YAML) are accepted too.

    A float is taken as the shortest decimal that prints it, which is what the YAML author wrote:
    0.1 means 1/10, not the binary double nearest to it.
    """
    if isinstance(text, bool):
        raise QuantityError(text, "a boolean is not a number")
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float):
        if not math.isfinite(text):
            raise QuantityError(text, "only finite numbers are quantities")
        return Fraction(repr(text))
    if not isinstance(text, str):
        raise QuantityError(text, f"expected a string or a number, got {type(text).__name__}")
    return _parse_text(text)


def _parse_text(text: str) -> Fraction:
    if not text:
        raise QuantityError(text, "it is empty")
    if any(character.isspace() for character in text):
        raise QuantityError(text, "it contains whitespace")
    match = _NUMBER_THEN_SUFFIX.fullmatch(text)
    if match is None:
        raise QuantityError(text, "expected a number first, as in '400Gi', '1.5', '.5' or '1e3'")
    whole = match["whole"] or "0"
    fraction_digits = match["fraction"] or match["only_fraction"] or ""
    try:
        mantissa = Fraction(int(whole + fraction_digits), 10 ** len(fraction_digits))
    except ValueError as error:
        raise QuantityError(text, "the number has too many digits") from error
    if match["sign"] == "-":
        mantissa = -mantissa
    return mantissa * _suffix_multiplier(text=text, suffix=match["suffix"])


def _suffix_multiplier(*, text: str, suffix: str) -> Fraction:
    if suffix in _BINARY_SUFFIXES:
        return Fraction(_BINARY_SUFFIXES[suffix])
    if suffix in _DECIMAL_SUFFIXES:
        return _DECIMAL_SUFFIXES[suffix]
    exponent_match = _EXPONENT_SUFFIX.fullmatch(suffix)
    if exponent_match is None:
        raise QuantityError(text, f"unknown suffix {suffix!r} (expected {_SUFFIX_HELP})")
    exponent_text = exponent_match["exponent"]
    magnitude_digits = exponent_text.lstrip("+-").lstrip("0") or "0"
    if len(magnitude_digits) > len(str(MAX_EXPONENT)) or int(magnitude_digits) > MAX_EXPONENT:
        raise QuantityError(text, f"the exponent is beyond +-{MAX_EXPONENT}")
    return Fraction(10) ** int(exponent_text)


def parse_bytes(text: str | int | float) -> int:
    """A quantity of bytes as an int; a fractional byte count rounds up ("1m" is 1 byte)."""
    value = parse_quantity(text)
    if value < 0:
        raise QuantityError(text, "a number of bytes cannot be negative")
    return math.ceil(value)


@functools.lru_cache(maxsize=1024)
def format_bytes(n: int) -> str:
    """The shortest exact form of a byte count: "800Gi", "1Ti", "5G", "1536".

    Binary suffixes are preferred, then decimal ones, then plain digits; the result always
    parses back to n with parse_bytes. Remembered for the last sizes formatted: a cycle plans many
    volumes of a few sizes.
    """
    if n < 0:
        raise ValueError(f"a number of bytes cannot be negative, got {n}")
    if n == 0:
        return "0"
    for suffix, unit in reversed(_BINARY_SUFFIXES.items()):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    for suffix, decimal_unit in reversed(_DECIMAL_SUFFIXES.items()):
        unit = decimal_unit.numerator
        if decimal_unit.denominator == 1 and unit > 1 and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def round_up(n: int, *, granularity: int) -> int:
    """The smallest multiple of granularity that is >= n."""
    if granularity <= 0:
        raise ValueError(f"granularity must be positive, got {granularity}")
    return -(-n // granularity) * granularity
