"""Kubernetes quantities: exact parsing, bytes rounding, canonical formatting."""

from __future__ import annotations

from fractions import Fraction

import pytest

from agent.core.quantity import (
    GIB,
    MAX_EXPONENT,
    QuantityError,
    format_bytes,
    parse_bytes,
    parse_quantity,
    round_up,
)

KI = 1024
MI = 1024**2
TI = 1024**4
EI = 1024**6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Fraction(0)),
        ("-0", Fraction(0)),
        ("1", Fraction(1)),
        ("+1", Fraction(1)),
        ("-1", Fraction(-1)),
        ("007", Fraction(7)),
        ("1.5", Fraction(3, 2)),
        (".5", Fraction(1, 2)),
        ("5.", Fraction(5)),
        ("-.25", Fraction(-1, 4)),
        ("0.1", Fraction(1, 10)),
        ("1Ki", Fraction(KI)),
        ("0.5Ki", Fraction(512)),
        ("1Mi", Fraction(MI)),
        ("1.5Gi", Fraction(3 * GIB, 2)),
        ("400Gi", Fraction(400 * GIB)),
        ("1Ti", Fraction(TI)),
        ("1Pi", Fraction(1024**5)),
        ("8Ei", Fraction(8 * EI)),
        ("-1Gi", Fraction(-GIB)),
        ("1n", Fraction(1, 10**9)),
        ("0.1n", Fraction(1, 10**10)),
        ("1u", Fraction(1, 10**6)),
        ("1m", Fraction(1, 1000)),
        ("500m", Fraction(1, 2)),
        ("1k", Fraction(1000)),
        ("1M", Fraction(10**6)),
        ("1G", Fraction(10**9)),
        ("400G", Fraction(400 * 10**9)),
        ("1T", Fraction(10**12)),
        ("1P", Fraction(10**15)),
        ("1E", Fraction(10**18)),
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("1.5E6", Fraction(1_500_000)),
        ("1e+3", Fraction(1000)),
        ("5e-1", Fraction(1, 2)),
        ("1e0", Fraction(1)),
        ("1e-05", Fraction(1, 10**5)),
        (f"1e{MAX_EXPONENT}", Fraction(10**MAX_EXPONENT)),
        ("18446744073709551616", Fraction(2**64)),
        (80, Fraction(80)),
        (-3, Fraction(-3)),
        (0.5, Fraction(1, 2)),
        (0.1, Fraction(1, 10)),
        (1e16, Fraction(10**16)),
    ],
)
def test_parse_quantity_is_exact(text: str | int | float, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        " 1Gi",
        "1Gi ",
        "1 Gi",
        "1\tGi",
        "1Gi\n",
        "Gi",
        "Ki",
        "m",
        ".",
        "+",
        "-",
        "+-1",
        "--1",
        "1KI",
        "1ki",
        "1K",
        "1gi",
        "1Gib",
        "1GB",
        "1Gi1",
        "1.2.3",
        "1,5",
        "abc",
        "0x10",
        "1e",
        "1e1.5",
        "1e+",
        "1ee3",
        "1Mi3",
        f"1e{MAX_EXPONENT + 1}",
        f"1e-{MAX_EXPONENT + 1}",
        "1e99999999999999999999",
        "nan",
        "NaN",
        "inf",
        "-Infinity",
        "\u0661",  # ARABIC-INDIC DIGIT ONE is a digit to Python, not to Kubernetes
        "1" * 5000,
        True,
        False,
        float("nan"),
        float("inf"),
        float("-inf"),
        None,
        [1],
    ],
)
def test_parse_quantity_rejects(text: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("1KI", ["'1KI'", "unknown suffix 'KI'"]),
        ("", ["''", "empty"]),
        ("1 Gi", ["'1 Gi'", "whitespace"]),
        ("Gi", ["'Gi'", "number first"]),
        (True, ["True", "boolean"]),
        (f"1e{MAX_EXPONENT + 1}", ["exponent"]),
    ],
)
def test_quantity_error_names_the_bad_text(text: object, words: list[str]) -> None:
    with pytest.raises(QuantityError) as caught:
        parse_quantity(text)  # type: ignore[arg-type]
    for word in words:
        assert word in str(caught.value)
    assert caught.value.text == text


def test_quantity_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a valid quantity"):
        parse_quantity("garbage")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1", 1),
        ("0.5Ki", 512),
        ("1m", 1),
        ("1n", 1),
        ("1.5", 2),
        ("1.0", 1),
        ("1e3", 1000),
        ("1.5Gi", 1536 * MI),
        ("400Gi", 400 * GIB),
        ("1Ti", TI),
        ("400G", 400_000_000_000),
        ("8Ei", 2**63),
        (".5Ki", 512),
        (1024, 1024),
        (2.5, 3),
    ],
)
def test_parse_bytes_rounds_fractions_up(text: str | int | float, expected: int) -> None:
    parsed = parse_bytes(text)
    assert parsed == expected
    assert isinstance(parsed, int)


@pytest.mark.parametrize("text", ["-1", "-1Gi", "-1m", -5, "1KI", "", "garbage"])
def test_parse_bytes_rejects(text: str | int) -> None:
    with pytest.raises(QuantityError):
        parse_bytes(text)


def test_parse_bytes_explains_negative() -> None:
    with pytest.raises(QuantityError, match="negative"):
        parse_bytes("-1Gi")


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0"),
        (1, "1"),
        (999, "999"),
        (1000, "1k"),
        (1023, "1023"),
        (1024, "1Ki"),
        (1536, "1536"),
        (2048, "2Ki"),
        (1536 * MI, "1536Mi"),
        (GIB, "1Gi"),
        (400 * GIB, "400Gi"),
        (858993459200, "800Gi"),
        (1099511627776, "1Ti"),
        (1024 * TI, "1Pi"),
        (8 * EI, "8Ei"),
        (2048 * EI, "2048Ei"),
        (5 * 10**9, "5G"),
        (3 * 10**9, "3G"),
        (7 * 10**6, "7M"),
        (10**18, "976562500000000Ki"),
        (400 * 10**9, "390625000Ki"),
        (1500, "1500"),
        (10**6 + 1, "1000001"),
    ],
)
def test_format_bytes_is_canonical(n: int, expected: str) -> None:
    assert format_bytes(n) == expected


@pytest.mark.parametrize(
    "n",
    [0, 1, 7, 999, 1000, 1023, 1024, 1536, 10**9, 400 * GIB, 858993459200, TI, 2**63, 2**63 - 1, 12345678901],
)
def test_format_bytes_round_trips(n: int) -> None:
    assert parse_bytes(format_bytes(n)) == n


def test_format_bytes_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_bytes(-1)


def test_gib() -> None:
    assert GIB == 1_073_741_824
    assert parse_bytes("1Gi") == GIB


@pytest.mark.parametrize(
    ("n", "granularity", "expected"),
    [
        (0, GIB, 0),
        (1, GIB, GIB),
        (GIB, GIB, GIB),
        (GIB + 1, GIB, 2 * GIB),
        (800 * GIB, GIB, 800 * GIB),
        (10, 3, 12),
        (-5, 3, -3),
        (7, 1, 7),
    ],
)
def test_round_up(n: int, granularity: int, expected: int) -> None:
    assert round_up(n, granularity=granularity) == expected


@pytest.mark.parametrize("granularity", [0, -1])
def test_round_up_rejects_non_positive_granularity(granularity: int) -> None:
    with pytest.raises(ValueError, match="granularity"):
        round_up(10, granularity=granularity)
