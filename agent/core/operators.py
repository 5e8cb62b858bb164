"""The condition operators of the vendor AutopilotRule format, and their verdict on one sample.

A condition compares one object's sample (its value in the expression's instant vector) with
the rule's `values`. Values are YAML strings read as numbers or Kubernetes quantities, so "80",
"0.5", "1e3" and "1Ti" are all valid thresholds. Comparison is exact: a sample is read as the
shortest decimal that prints it, so 0.1 equals "0.1" and 80.0 is not greater than "80".

    operator      values          holds when                   no sample   NaN / +-inf
    ------------  --------------  ---------------------------  ----------  -----------
    In            1 or more       value equals one of values   None        None
    NotIn         1 or more       value equals none of values  None        None
    Exists        none            a finite sample exists       False       False
    DoesNotExist  none            there is no sample at all    True        False
    Gt            exactly 1       value >  threshold           None        None
    GtEq          exactly 1       value >= threshold           None        None
    Lt            exactly 1       value <  threshold           None        None
    LtEq          exactly 1       value <= threshold           None        None
    InRange       low, high       low <= value <= high         None        None
    NotInRange    low, high       value < low or value > high  None        None

None means "no data": it is never a verdict, so neither the condition nor its negation holds
and nothing is acted on. A NaN or infinite sample exists but carries no value, so neither
Exists nor DoesNotExist holds for it. InRange and NotInRange need low <= high.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import assert_never

from agent.core.quantity import QuantityError, parse_quantity

__all__ = ["Answers", "Operator", "ValueCount", "holds", "partition", "validate_values", "value_count"]


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    GT_EQ = "GtEq"
    LT = "Lt"
    LT_EQ = "LtEq"
    IN_RANGE = "InRange"
    NOT_IN_RANGE = "NotInRange"


@dataclass(frozen=True, kw_only=True)
class ValueCount:
    """How many values an operator takes; maximum None means no upper limit."""

    minimum: int
    maximum: int | None

    def allows(self, count: int) -> bool:
        return count >= self.minimum and (self.maximum is None or count <= self.maximum)

    def describe(self) -> str:
        if self.maximum is None:
            return f"at least {_values(self.minimum)}"
        if self.maximum == 0:
            return "no values"
        return f"exactly {_values(self.maximum)}"


def _values(count: int) -> str:
    return f"{count} value" if count == 1 else f"{count} values"


_NO_VALUES = ValueCount(minimum=0, maximum=0)
_ONE_OR_MORE = ValueCount(minimum=1, maximum=None)
_ONE = ValueCount(minimum=1, maximum=1)
_LOW_AND_HIGH = ValueCount(minimum=2, maximum=2)

_VALUE_COUNTS: dict[Operator, ValueCount] = {
    Operator.IN: _ONE_OR_MORE,
    Operator.NOT_IN: _ONE_OR_MORE,
    Operator.EXISTS: _NO_VALUES,
    Operator.DOES_NOT_EXIST: _NO_VALUES,
    Operator.GT: _ONE,
    Operator.GT_EQ: _ONE,
    Operator.LT: _ONE,
    Operator.LT_EQ: _ONE,
    Operator.IN_RANGE: _LOW_AND_HIGH,
    Operator.NOT_IN_RANGE: _LOW_AND_HIGH,
}

_ONE_THRESHOLD = frozenset({Operator.GT, Operator.GT_EQ, Operator.LT, Operator.LT_EQ})
_RANGE_OPERATORS = frozenset({Operator.IN_RANGE, Operator.NOT_IN_RANGE})
_PRESENCE_OPERATORS = frozenset({Operator.EXISTS, Operator.DOES_NOT_EXIST})


def value_count(operator: Operator) -> ValueCount:
    """How many values the operator takes."""
    return _VALUE_COUNTS[operator]


def validate_values(operator: Operator, *, values: Sequence[str]) -> list[str]:
    """Every problem with the operator's values, in human words; empty when they are fine."""
    if isinstance(values, str):
        return [f"{operator} values must be a list of strings, got the single string {values!r}"]
    problems: list[str] = []
    expected = _VALUE_COUNTS[operator]
    if not expected.allows(len(values)):
        problems.append(f"{operator} takes {expected.describe()}, got {len(values)}")
    if operator in _PRESENCE_OPERATORS:
        return problems
    numbers: list[Fraction] = []
    for value in values:
        try:
            numbers.append(parse_quantity(value))
        except QuantityError:
            problems.append(f"value {value!r} is not a number")
    if operator in _RANGE_OPERATORS and len(values) == 2 and len(numbers) == 2 and numbers[0] > numbers[1]:
        problems.append(f"{operator} needs low <= high, got low {values[0]!r} > high {values[1]!r}")
    return problems


def holds(operator: Operator, *, value: float | None, values: Sequence[str]) -> bool | None:
    """The verdict of the condition for one object's sample; None means "no data".

    value is None when the object has no sample. Values that validate_values rejects raise
    ValueError: the rule loader never lets such a rule through.
    """
    thresholds = _thresholds(operator, tuple(values))
    if operator is Operator.EXISTS:
        return value is not None and math.isfinite(value)
    if operator is Operator.DOES_NOT_EXIST:
        return value is None
    if value is None or not math.isfinite(value):
        return None
    order = [_compare(value, threshold) for threshold in thresholds]
    match operator:
        case Operator.IN:
            return 0 in order
        case Operator.NOT_IN:
            return 0 not in order
        case Operator.GT:
            return order[0] > 0
        case Operator.GT_EQ:
            return order[0] >= 0
        case Operator.LT:
            return order[0] < 0
        case Operator.LT_EQ:
            return order[0] <= 0
        case Operator.IN_RANGE:
            return order[0] >= 0 and order[1] <= 0
        case Operator.NOT_IN_RANGE:
            return not (order[0] >= 0 and order[1] <= 0)
        case _:
            assert_never(operator)


ConditionTest = Callable[[float | None], bool | None]


@functools.lru_cache(maxsize=4096)
def condition_test(operator: Operator, values: tuple[str, ...]) -> ConditionTest:
    """`holds` for one condition, its thresholds parsed once: what the engine calls per object."""
    thresholds = _thresholds(operator, values)
    if operator in (Operator.GT, Operator.GT_EQ, Operator.LT, Operator.LT_EQ):
        threshold = thresholds[0]
        nearest = threshold.nearest
        accepts = {
            Operator.GT: frozenset({1}),
            Operator.GT_EQ: frozenset({0, 1}),
            Operator.LT: frozenset({-1}),
            Operator.LT_EQ: frozenset({-1, 0}),
        }[operator]

        below, above = -1 in accepts, 1 in accepts

        def compare_one(value: float | None) -> bool | None:
            if value is None or not math.isfinite(value):
                return None
            if value < nearest:
                return below
            if value > nearest:
                return above
            return _compare(value, threshold) in accepts

        return compare_one

    def any_other(value: float | None) -> bool | None:
        return holds(operator, value=value, values=values)

    return any_other


@dataclass(frozen=True, kw_only=True)
class Answers:
    """One condition's answer for every object of a set: those it holds for and those it has no data for
    (None); it is false for the rest. Most objects are quiet, so the two sets are small."""

    holding: frozenset[str]
    unknown: frozenset[str]


def partition(
    operator: Operator, values: tuple[str, ...], samples: Mapping[str, float], members: AbstractSet[str]
) -> Answers:
    """The condition's answer for each of `members`, whose values are `samples` (a member without one has
    no sample): `condition_test`'s, with the comparisons to the thresholds' nearest floats made inline (one
    call per cycle and condition, not one per object); only a sample at a threshold's float (a tie the
    exact decimals decide), NaN or an infinity takes the per-value test."""
    test = condition_test(operator, values)
    holding: list[str] = []
    unknown: list[str] = []
    if operator in _ONE_THRESHOLD:
        nearest = _thresholds(operator, values)[0].nearest
        above = operator is Operator.GT or operator is Operator.GT_EQ
        for key, value in samples.items():
            if value > nearest:
                if value == math.inf:
                    unknown.append(key)
                elif above:
                    holding.append(key)
            elif value < nearest:
                if value == -math.inf:
                    unknown.append(key)
                elif not above:
                    holding.append(key)
            else:  # at the threshold (exact decimals decide), or NaN
                answer = test(value)
                if answer:
                    holding.append(key)
                elif answer is None:
                    unknown.append(key)
    elif operator in _RANGE_OPERATORS:
        low, high = (threshold.nearest for threshold in _thresholds(operator, values))
        inside = operator is Operator.IN_RANGE
        isfinite = math.isfinite
        for key, value in samples.items():
            if low < value < high:
                if inside:
                    holding.append(key)
            elif (value < low or value > high) and isfinite(value):
                if not inside:
                    holding.append(key)
            else:  # at a bound, NaN or infinite
                answer = test(value)
                if answer:
                    holding.append(key)
                elif answer is None:
                    unknown.append(key)
    elif operator is Operator.IN or operator is Operator.NOT_IN:
        listed = frozenset(threshold.nearest for threshold in _thresholds(operator, values))
        is_in = operator is Operator.IN
        isfinite = math.isfinite
        for key, value in samples.items():
            if value not in listed and isfinite(value):
                if not is_in:
                    holding.append(key)
            else:  # at a listed value's float, NaN or infinite
                answer = test(value)
                if answer:
                    holding.append(key)
                elif answer is None:
                    unknown.append(key)
    else:
        for key, value in samples.items():
            answer = test(value)
            if answer:
                holding.append(key)
            elif answer is None:
                unknown.append(key)
    absent = test(None)
    without = () if absent is False else members - samples.keys()
    if absent:
        holding.extend(without)
    elif absent is None:
        unknown.extend(without)
    return Answers(holding=frozenset(holding), unknown=frozenset(unknown))


@dataclass(frozen=True)
class _Threshold:
    exact: Fraction
    nearest: float
    at_nearest: int
    """`_compare` of a sample equal to `nearest` (its shortest decimal against `exact`): -1, 0 or 1."""


@functools.lru_cache(maxsize=4096)
def _thresholds(operator: Operator, values: tuple[str, ...]) -> tuple[_Threshold, ...]:
    """A rule's thresholds, validated and parsed once, not once per object and cycle."""
    problems = validate_values(operator, values=values)
    if problems:
        raise ValueError("; ".join(problems))
    if operator in _PRESENCE_OPERATORS:
        return ()
    thresholds = []
    for number in map(parse_quantity, values):
        nearest = _nearest_float(number)
        at_nearest = _sign(parse_quantity(nearest) - number) if math.isfinite(nearest) else 0
        thresholds.append(_Threshold(exact=number, nearest=nearest, at_nearest=at_nearest))
    return tuple(thresholds)


def _sign(difference: Fraction) -> int:
    return (difference > 0) - (difference < 0)


def _nearest_float(number: Fraction) -> float:
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def _compare(value: float, threshold: _Threshold) -> int:
    """-1, 0 or 1 as the sample (read as its shortest decimal) is below, at or above the threshold.

    Comparing floats gives the exact answer whenever they differ: rounding to the nearest float is
    monotonic, and the sample's shortest decimal rounds to the sample while the threshold rounds to
    `nearest`. Only a tie needs the exact decimals, and as the sample is then `nearest`, their answer is
    the threshold's own (`at_nearest`, worked out once).
    """
    if value < threshold.nearest:
        return -1
    if value > threshold.nearest:
        return 1
    return threshold.at_nearest
