"""A rule's cycles start every pollInterval, counted from one start to the next, on the fake clock."""

from __future__ import annotations

import asyncio
import io
import itertools

import pytest
from fakes import FakeClock, FakeEvents
from helpers import REFERENCE_RULE
from shell_support import load_rule

from agent.audit.trail import AuditTrail
from agent.core.rules import Rule
from agent.runtime.recorder import Recorder
from agent.runtime.scheduler import Scheduler, Triggers
from agent.runtime.telemetry import Telemetry

RULE = load_rule(REFERENCE_RULE)


async def cycle_starts(*, cycle_seconds: float, until: float) -> list[float]:
    clock = FakeClock()
    starts: list[float] = []

    async def cycle(_rule: Rule) -> str:
        starts.append(clock.monotonic())
        clock.advance(cycle_seconds)
        return "ok"

    async def resume(_rule: Rule) -> None:
        return None

    recorder = Recorder(trail=AuditTrail(stream=io.StringIO()), telemetry=Telemetry(), clock=clock, events=FakeEvents())
    scheduler = Scheduler(
        rules=[RULE],
        cycle=cycle,
        resume=resume,
        clock=clock,
        recorder=recorder,
        telemetry=recorder.telemetry,
        triggers=Triggers([RULE]),
        sweep_seconds=3600.0,
    )
    loop = asyncio.create_task(scheduler.rule_loop(RULE))
    while clock.monotonic() < until:
        await asyncio.sleep(0)
    loop.cancel()
    return starts


@pytest.mark.parametrize("cycle_seconds", [0.0, 0.6, 1.9])
async def test_a_cycle_shorter_than_the_poll_interval_does_not_push_the_next_one_back(cycle_seconds: float) -> None:
    starts = await cycle_starts(cycle_seconds=cycle_seconds, until=20.0)
    assert len(starts) >= 9
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps == pytest.approx([RULE.poll_interval_seconds] * len(gaps)), gaps


async def test_a_cycle_longer_than_the_poll_interval_is_followed_at_once() -> None:
    starts = await cycle_starts(cycle_seconds=3.0, until=20.0)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert RULE.poll_interval_seconds < 3.0
    assert gaps == pytest.approx([3.0] * len(gaps)), gaps
