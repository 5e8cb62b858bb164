"""The Kubernetes Event queue: emitting never waits on the apiserver, Events keep their order and the time
they were emitted, and a full queue or a refused Event loses only that Event."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from fakes import FakeClock

from agent.adapters.errors import KubeError
from agent.adapters.kubernetes import EventTarget
from agent.adapters.kubernetes.client import EventType
from agent.core.matching import TargetObject
from agent.core.rules import TargetKind
from agent.runtime.events import EventQueue, KubeEvents

CLAIM = EventTarget(kind="PersistentVolumeClaim", name="data-kafka-0", namespace="kafka", uid=None)


class SlowApiserver:
    """Takes each Event only when the test lets it (`answer`); refuses the reasons in `refused`."""

    def __init__(self, *, refused: frozenset[str] = frozenset()) -> None:
        self.written: list[tuple[str, str, float | None]] = []
        self.refused = refused
        self.answer = asyncio.Event()

    async def emit_event(
        self,
        *,
        involved: EventTarget,
        reason: str,
        message: str,
        type_: EventType,
        action: str,
        at: float | None = None,
    ) -> str:
        await self.answer.wait()
        if reason in self.refused:
            raise KubeError("403 Forbidden", server="https://apiserver", verb="POST", resource="events")
        self.written.append((involved.name, reason, at))
        return f"{involved.name}.{len(self.written)}"


async def emit(queue: EventQueue, reason: str) -> None:
    await queue.emit_event(involved=CLAIM, reason=reason, message=f"{reason} happened", type_="Normal", action=reason)


async def written_by(queue: EventQueue) -> None:
    await asyncio.wait_for(queue.drained(), timeout=5)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_emitting_returns_before_the_apiserver_answers_and_the_events_keep_their_order_and_time(
    clock: FakeClock,
) -> None:
    apiserver = SlowApiserver()
    queue = EventQueue(kube=apiserver, clock=clock)
    writer = asyncio.create_task(queue.run())
    try:
        emitted_at = []
        for reason in ("Triggered", "ActiveActionsPending", "ActiveActionsInProgress"):
            emitted_at.append(clock.now())
            await asyncio.wait_for(emit(queue, reason), timeout=1)  # the apiserver has not answered
            clock.advance(1.5)
        await asyncio.sleep(0)
        assert apiserver.written == []
        assert queue.buffered == 3
        apiserver.answer.set()
        await written_by(queue)
        assert apiserver.written == [
            ("data-kafka-0", "Triggered", emitted_at[0]),
            ("data-kafka-0", "ActiveActionsPending", emitted_at[1]),
            ("data-kafka-0", "ActiveActionsInProgress", emitted_at[2]),
        ]
        assert queue.buffered == 0
    finally:
        writer.cancel()


async def test_a_full_queue_drops_and_counts_the_new_events_and_writes_the_waiting_ones(clock: FakeClock) -> None:
    apiserver = SlowApiserver()
    dropped: list[None] = []
    queue = EventQueue(kube=apiserver, clock=clock, capacity=2, on_dropped=lambda: dropped.append(None))
    writer = asyncio.create_task(queue.run())
    try:
        with structlog.testing.capture_logs() as logs:
            for reason in ("first", "second", "third", "fourth"):
                await emit(queue, reason)
            assert queue.dropped == 2
            assert len(dropped) == 2
            apiserver.answer.set()
            await written_by(queue)
            await emit(queue, "fifth")  # room again
            await written_by(queue)
        assert [reason for _, reason, _ in apiserver.written] == ["first", "second", "fifth"]
        warnings = [(log["event"], log.get("dropped")) for log in logs if log["log_level"] == "warning"]
        assert warnings == [  # once per spell of drops, not once per Event
            ("events not recorded from now on: too many waiting", None),
            ("events recorded again", 2),
        ]
    finally:
        writer.cancel()


async def test_an_event_the_apiserver_refuses_is_logged_and_the_next_one_is_written(clock: FakeClock) -> None:
    apiserver = SlowApiserver(refused=frozenset({"Triggered"}))
    apiserver.answer.set()
    queue = EventQueue(kube=apiserver, clock=clock)
    writer = asyncio.create_task(queue.run())
    try:
        with structlog.testing.capture_logs() as logs:
            await emit(queue, "Triggered")
            await emit(queue, "ActiveActionsPending")
            await written_by(queue)
        assert [reason for _, reason, _ in apiserver.written] == ["ActiveActionsPending"]
        (refused,) = [log for log in logs if log["event"] == "event not recorded"]
        assert refused["reason"] == "Triggered"
        assert "403 Forbidden" in refused["error"]
        assert not writer.done()
    finally:
        writer.cancel()


async def test_an_event_on_a_claim_and_on_its_state_object_waits_for_no_apiserver(clock: FakeClock) -> None:
    apiserver = SlowApiserver()
    queue = EventQueue(kube=apiserver, clock=clock)
    writer = asyncio.create_task(queue.run())
    try:
        target = TargetObject(kind=TargetKind.PVC, name="data-kafka-0", namespace="kafka")
        await asyncio.wait_for(
            KubeEvents(kube=queue).emit(
                rule="kafka-resize", target=target, reason="Triggered", message="over 80%", warning=False
            ),
            timeout=1,
        )
        apiserver.answer.set()
        await written_by(queue)
        (on_claim, _), (on_state_object, _) = [(name, reason) for name, reason, _ in apiserver.written]
        assert on_claim == "data-kafka-0"
        assert on_state_object.startswith("kafka-resize")  # its AutopilotRuleObject
    finally:
        writer.cancel()


def test_a_queue_without_room_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="at least one Event"):
        EventQueue(kube=SlowApiserver(), clock=clock, capacity=0)
