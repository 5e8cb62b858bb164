"""When a rule's loop runs, on the fake clock: cycles start every pollInterval, counted from one start
to the next; in-flight actions with no task are swept (resumed) every sweep period; and a loop stopped
while it waits to retry its resume ends at once."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Awaitable, Callable

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


def scheduler_of(
    clock: FakeClock,
    *,
    cycle: Callable[[Rule], Awaitable[str]],
    resume: Callable[[Rule], Awaitable[None]],
    sweep_seconds: float = 3600.0,
) -> Scheduler:
    """A scheduler of RULE on the fake clock, its cycle and resume given."""
    recorder = Recorder(trail=AuditTrail(stream=io.StringIO()), telemetry=Telemetry(), clock=clock, events=FakeEvents())
    return Scheduler(
        rules=[RULE],
        cycle=cycle,
        resume=resume,
        clock=clock,
        recorder=recorder,
        telemetry=recorder.telemetry,
        triggers=Triggers([RULE]),
        sweep_seconds=sweep_seconds,
    )


async def run_loop(
    clock: FakeClock,
    *,
    cycle: Callable[[Rule], Awaitable[str]],
    resume: Callable[[Rule], Awaitable[None]],
    sweep_seconds: float,
    until: float,
) -> None:
    """RULE's loop until `until` on the fake clock."""
    scheduler = scheduler_of(clock, cycle=cycle, resume=resume, sweep_seconds=sweep_seconds)
    loop = asyncio.create_task(scheduler.rule_loop(RULE))
    while clock.monotonic() < until:
        await asyncio.sleep(0)
    loop.cancel()


async def nothing_to_resume(_rule: Rule) -> None:
    return None


async def cycle_starts(*, cycle_seconds: float, until: float) -> list[float]:
    clock = FakeClock()
    starts: list[float] = []

    async def cycle(_rule: Rule) -> str:
        starts.append(clock.monotonic())
        clock.advance(cycle_seconds)
        return "ok"

    await run_loop(clock, cycle=cycle, resume=nothing_to_resume, sweep_seconds=3600.0, until=until)
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


async def test_the_scheduler_sweeps_in_flight_actions_on_the_clock() -> None:
    clock = FakeClock()
    resumes: list[float] = []

    async def resume(_rule: Rule) -> None:
        resumes.append(clock.monotonic())

    async def cycle(_rule: Rule) -> str:
        return "ok"

    await run_loop(clock, cycle=cycle, resume=resume, sweep_seconds=30.0, until=100.0)
    # the start-up resume, then one sweep every 30 s of virtual time
    assert len(resumes) >= 4
    assert all(later - earlier >= 30.0 for earlier, later in itertools.pairwise(resumes))


async def test_a_loop_stopped_while_it_waits_to_retry_its_resume_ends_at_once() -> None:
    clock = FakeClock()
    attempts: list[float] = []

    async def unreadable(_rule: Rule) -> None:
        attempts.append(clock.monotonic())
        raise RuntimeError("the state CRD is not served yet")

    async def cycle(_rule: Rule) -> str:
        return "ok"

    scheduler = scheduler_of(clock, cycle=cycle, resume=unreadable)
    stopping = asyncio.Event()
    loop = asyncio.create_task(scheduler.rule_loop(RULE, stopping=stopping))
    await asyncio.sleep(0)
    assert attempts == [0.0] and "cannot read its durable state yet" in scheduler.health[RULE.name]
    stopping.set()
    await asyncio.wait_for(loop, timeout=1.0)
    assert attempts == [0.0], "no retry after the stop"
    assert clock.monotonic() == 0.0, "the stopped loop did not wait out its retry"
