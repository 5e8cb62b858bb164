"""Planning the way the engine does, for the executor tests: a rule parsed by the real loader from
YAML, and the PlannedAction from the real `plan_actions`, so the tests do not depend on where plan
details live."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from agent.actions.registry import CATALOG
from agent.core.engine import DeclinedAction, PlannedAction, plan_actions
from agent.core.loader import parse_rules
from agent.core.matching import TargetObject
from agent.core.rules import Rule

WALL_BUDGET_SECONDS = 0.5
"""What one executor run on the fakes may take in wall time, whatever its virtual time."""


def load_rule(text: str) -> Rule:
    result = parse_rules(text, file="rule.yaml", catalog=CATALOG)
    assert [str(problem) for problem in result.problems] == []
    (rule,) = result.rules
    return rule


def plan(rule: Rule, target: TargetObject, *, now: float) -> PlannedAction:
    planned = plan_actions(rule=rule, target=target, now=now)
    assert not isinstance(planned, DeclinedAction), planned
    (action,) = planned
    return action


def params(rule: Rule) -> object:
    (action,) = rule.actions
    return action.params


@dataclass
class Wall:
    seconds: float = 0.0


@contextmanager
def wall_time() -> Iterator[Wall]:
    """Measures the wall time of the block (the tests assert it stays tiny while virtual time runs)."""
    took = Wall()
    started = time.perf_counter()
    try:
        yield took
    finally:
        took.seconds = time.perf_counter() - started
