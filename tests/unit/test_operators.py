"""Condition operators: value counts, value validation and the verdict on one sample."""

from __future__ import annotations

import math

import pytest

from agent.core.operators import (
    Operator,
    ValueCount,
    condition_test,
    holds,
    partition,
    validate_values,
    value_count,
)
from agent.core.quantity import parse_quantity

NAN = math.nan
INF = math.inf
GIB = 1024**3


def test_operator_values_are_the_vendor_strings() -> None:
    assert [operator.value for operator in Operator] == [
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
        "Gt",
        "GtEq",
        "Lt",
        "LtEq",
        "InRange",
        "NotInRange",
    ]
    assert Operator("GtEq") is Operator.GT_EQ


@pytest.mark.parametrize(
    ("operator", "minimum", "maximum"),
    [
        (Operator.IN, 1, None),
        (Operator.NOT_IN, 1, None),
        (Operator.EXISTS, 0, 0),
        (Operator.DOES_NOT_EXIST, 0, 0),
        (Operator.GT, 1, 1),
        (Operator.GT_EQ, 1, 1),
        (Operator.LT, 1, 1),
        (Operator.LT_EQ, 1, 1),
        (Operator.IN_RANGE, 2, 2),
        (Operator.NOT_IN_RANGE, 2, 2),
    ],
)
def test_value_count(operator: Operator, minimum: int, maximum: int | None) -> None:
    assert value_count(operator) == ValueCount(minimum=minimum, maximum=maximum)


@pytest.mark.parametrize(
    ("operator", "values"),
    [
        (Operator.IN, ["1"]),
        (Operator.IN, ["1", "2", "3"]),
        (Operator.NOT_IN, ["0"]),
        (Operator.EXISTS, []),
        (Operator.DOES_NOT_EXIST, []),
        (Operator.GT, ["80"]),
        (Operator.GT, ["1Ti"]),
        (Operator.GT_EQ, ["0.5"]),
        (Operator.LT, ["-1"]),
        (Operator.LT_EQ, ["1e3"]),
        (Operator.IN_RANGE, ["10", "20"]),
        (Operator.IN_RANGE, ["5", "5"]),
        (Operator.NOT_IN_RANGE, ["100Gi", "1Ti"]),
    ],
)
def test_validate_values_accepts(operator: Operator, values: list[str]) -> None:
    assert validate_values(operator, values=values) == []


@pytest.mark.parametrize(
    ("operator", "values", "problems"),
    [
        (Operator.GT, ["1", "2"], ["Gt takes exactly 1 value, got 2"]),
        (Operator.GT, [], ["Gt takes exactly 1 value, got 0"]),
        (Operator.GT_EQ, [], ["GtEq takes exactly 1 value, got 0"]),
        (Operator.LT, ["1", "2"], ["Lt takes exactly 1 value, got 2"]),
        (Operator.LT_EQ, ["1", "2", "3"], ["LtEq takes exactly 1 value, got 3"]),
        (Operator.IN, [], ["In takes at least 1 value, got 0"]),
        (Operator.NOT_IN, [], ["NotIn takes at least 1 value, got 0"]),
        (Operator.EXISTS, ["1"], ["Exists takes no values, got 1"]),
        (Operator.DOES_NOT_EXIST, ["a", "b"], ["DoesNotExist takes no values, got 2"]),
        (Operator.IN_RANGE, ["1"], ["InRange takes exactly 2 values, got 1"]),
        (Operator.NOT_IN_RANGE, ["1", "2", "3"], ["NotInRange takes exactly 2 values, got 3"]),
        (Operator.GT, ["abc"], ["value 'abc' is not a number"]),
        (Operator.GT, ["1KI"], ["value '1KI' is not a number"]),
        (Operator.GT, [""], ["value '' is not a number"]),
        (Operator.LT, ["NaN"], ["value 'NaN' is not a number"]),
        (Operator.IN, ["1", "x", "y"], ["value 'x' is not a number", "value 'y' is not a number"]),
        (
            Operator.GT,
            ["abc", "def"],
            ["Gt takes exactly 1 value, got 2", "value 'abc' is not a number", "value 'def' is not a number"],
        ),
        (Operator.IN_RANGE, ["20", "10"], ["InRange needs low <= high, got low '20' > high '10'"]),
        (Operator.NOT_IN_RANGE, ["1Ti", "1Gi"], ["NotInRange needs low <= high, got low '1Ti' > high '1Gi'"]),
        (Operator.IN_RANGE, ["x", "10"], ["value 'x' is not a number"]),
        (Operator.GT, "80", ["Gt values must be a list of strings, got the single string '80'"]),
    ],
)
def test_validate_values_reports_every_problem(operator: Operator, values: list[str], problems: list[str]) -> None:
    assert validate_values(operator, values=values) == problems


@pytest.mark.parametrize(
    ("operator", "value", "values", "expected"),
    [
        # the reference rule: usage percentage Gt "80"
        (Operator.GT, 80.5, ["80"], True),
        (Operator.GT, 80.0, ["80"], False),
        (Operator.GT, 79.9, ["80"], False),
        (Operator.GT_EQ, 80.0, ["80"], True),
        (Operator.GT_EQ, 79.999, ["80"], False),
        (Operator.LT, 79.9, ["80"], True),
        (Operator.LT, 80.0, ["80"], False),
        (Operator.LT_EQ, 80.0, ["80"], True),
        (Operator.LT_EQ, 80.001, ["80"], False),
        (Operator.GT, 0.1, ["0.1"], False),
        (Operator.GT_EQ, 0.1, ["0.1"], True),
        (Operator.GT, -1.0, ["-2"], True),
        (Operator.GT, 0, ["0"], False),
        (Operator.LT, float(2 * GIB), ["1Ti"], True),
        (Operator.GT, float(2**41), ["1Ti"], True),
        (Operator.GT_EQ, float(2**40), ["1Ti"], True),
        (Operator.LT, 1e300, ["1e1000"], True),
        (Operator.IN, 3.0, ["1", "2", "3"], True),
        (Operator.IN, 4.0, ["1", "2", "3"], False),
        (Operator.IN, 0.1, ["0.1"], True),
        (Operator.IN, 1024.0, ["1Ki"], True),
        (Operator.NOT_IN, 4.0, ["1", "2", "3"], True),
        (Operator.NOT_IN, 2.0, ["1", "2", "3"], False),
        (Operator.IN_RANGE, 10.0, ["10", "20"], True),
        (Operator.IN_RANGE, 15.0, ["10", "20"], True),
        (Operator.IN_RANGE, 20.0, ["10", "20"], True),
        (Operator.IN_RANGE, 9.99, ["10", "20"], False),
        (Operator.IN_RANGE, 20.01, ["10", "20"], False),
        (Operator.IN_RANGE, 5.0, ["5", "5"], True),
        (Operator.NOT_IN_RANGE, 10.0, ["10", "20"], False),
        (Operator.NOT_IN_RANGE, 20.0, ["10", "20"], False),
        (Operator.NOT_IN_RANGE, 9.99, ["10", "20"], True),
        (Operator.NOT_IN_RANGE, 20.01, ["10", "20"], True),
        (Operator.EXISTS, 0.0, [], True),
        (Operator.EXISTS, -3.5, [], True),
        (Operator.EXISTS, None, [], False),
        (Operator.EXISTS, NAN, [], False),
        (Operator.EXISTS, INF, [], False),
        (Operator.EXISTS, -INF, [], False),
        (Operator.DOES_NOT_EXIST, None, [], True),
        (Operator.DOES_NOT_EXIST, 0.0, [], False),
        (Operator.DOES_NOT_EXIST, NAN, [], False),
        (Operator.DOES_NOT_EXIST, INF, [], False),
    ],
)
def test_holds(operator: Operator, value: float | None, values: list[str], expected: bool) -> None:
    assert holds(operator, value=value, values=values) is expected
    assert condition_test(operator, tuple(values))(value) is expected  # the engine's compiled form


_VALUED_OPERATORS = [
    (Operator.IN, ["1"]),
    (Operator.NOT_IN, ["1"]),
    (Operator.GT, ["80"]),
    (Operator.GT_EQ, ["80"]),
    (Operator.LT, ["80"]),
    (Operator.LT_EQ, ["80"]),
    (Operator.IN_RANGE, ["10", "20"]),
    (Operator.NOT_IN_RANGE, ["10", "20"]),
]


@pytest.mark.parametrize(("operator", "values"), _VALUED_OPERATORS)
@pytest.mark.parametrize("value", [None, NAN, INF, -INF], ids=["no-sample", "nan", "inf", "-inf"])
def test_no_data_is_never_a_verdict(operator: Operator, values: list[str], value: float | None) -> None:
    assert holds(operator, value=value, values=values) is None
    assert condition_test(operator, tuple(values))(value) is None


@pytest.mark.parametrize(
    ("operator", "values", "message"),
    [
        (Operator.GT, ["1", "2"], "Gt takes exactly 1 value, got 2"),
        (Operator.GT, ["abc"], "value 'abc' is not a number"),
        (Operator.EXISTS, ["1"], "Exists takes no values, got 1"),
        (Operator.IN_RANGE, ["20", "10"], "InRange needs low <= high"),
    ],
)
def test_holds_rejects_values_the_loader_would_reject(operator: Operator, values: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        holds(operator, value=1.0, values=values)


PARTITION_VALUES = (-math.inf, -1e300, -80.0, 0.0, 0.1, 79.99999999999999, 80.0, 80.00000000000001, 1.5e9, math.inf)


@pytest.mark.parametrize(
    ("operator", "values"),
    [
        (Operator.GT, ("80",)),
        (Operator.GT_EQ, ("80",)),
        (Operator.LT, ("0.1",)),
        (Operator.LT_EQ, ("0.1",)),
        (Operator.GT, ("1e400",)),  # a threshold past the largest float
        (Operator.LT, ("-1e400",)),
        (Operator.IN_RANGE, ("0", "80")),
        (Operator.IN_RANGE, ("0.1", "1e400")),
        (Operator.NOT_IN_RANGE, ("-80", "0.1")),
        (Operator.NOT_IN_RANGE, ("-1e400", "80")),
        (Operator.NOT_IN, ("80",)),
        (Operator.IN, ("0.1", "80", "1.5e9")),
        (Operator.NOT_IN, ("0", "79.99999999999999")),
        (Operator.EXISTS, ()),
        (Operator.DOES_NOT_EXIST, ()),
    ],
)
def test_partition_gives_every_member_the_answer_condition_test_gives(
    operator: Operator, values: tuple[str, ...]
) -> None:
    samples = {f"o{index}": value for index, value in enumerate((*PARTITION_VALUES, math.nan))}
    members = {*samples, "without-a-sample"}
    answers = partition(operator, values, samples, members)
    test = condition_test(operator, values)
    for key in members:
        expected = test(samples.get(key))
        found = True if key in answers.holding else None if key in answers.unknown else False
        assert found is expected, (key, samples.get(key))


@pytest.mark.parametrize(
    "threshold",
    ["80", "0.1", "1Ti", "0.000000000931322574615478515625", "9.313225746154785e-10", "1e-320", "-2.5", "1e22", "1e23"],
)
def test_a_sample_at_the_thresholds_nearest_float_is_compared_by_its_shortest_decimal(threshold: str) -> None:
    """A tie of floats is decided on the exact decimals: the sample's shortest one against the threshold's."""
    exact = parse_quantity(threshold)
    sample = float(exact)
    shortest = parse_quantity(repr(sample))
    for operator, expected in [
        (Operator.GT, shortest > exact),
        (Operator.GT_EQ, shortest >= exact),
        (Operator.LT, shortest < exact),
        (Operator.LT_EQ, shortest <= exact),
        (Operator.IN, shortest == exact),
    ]:
        assert holds(operator, value=sample, values=[threshold]) is expected, operator
        assert condition_test(operator, (threshold,))(sample) is expected, operator
        assert ("o" in partition(operator, (threshold,), {"o": sample}, {"o"}).holding) is expected, operator
