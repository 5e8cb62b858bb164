"""The decision stream as CloudEvents: the envelope, what is published, order and keys, and a topic that is
unreachable (buffer, drop with a counter, never block), on a fake producer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agent.audit.cloudevents import CloudEventSink, event_type, to_cloudevent
from agent.audit.trail import AuditRecord


def record(event: str, obj: str = "kafka/data-kafka-0", *, dry_run: bool = False, **extra: Any) -> AuditRecord:
    return {"time": "2027-01-15T08:00:00.000Z", "event": event, "rule": "kafka-resize", "object": obj,
            "dry_run": dry_run, **extra}  # fmt: skip


class FakeProducer:
    """Sends into `sent` (shared between the producers one sink makes); fails while `failing` says so."""

    def __init__(self, sent: list[tuple[str, bytes | None, bytes | None]], failing: list[bool]) -> None:
        self.sent = sent
        self.failing = failing
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        if self.failing and self.failing[0]:
            raise ConnectionError("no broker answers")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> None:
        self.sent.append((topic, key, value))


class World:
    def __init__(self, *, unreachable: bool = False, capacity: int = 100) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.failing = [unreachable]
        self.producers: list[FakeProducer] = []
        self.pauses: list[float] = []
        self.errors: list[str] = []
        self.sink = CloudEventSink(
            topic="autopilot-decisions",
            source="kafka-autopilot/kafka-autopilot/agent-0",
            producer_factory=self.producer,
            sleep=self.pause,
            capacity=capacity,
            on_error=self.errors.append,
        )

    def producer(self) -> FakeProducer:
        made = FakeProducer(self.sent, self.failing)
        self.producers.append(made)
        return made

    async def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await asyncio.sleep(0)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(value or b"") for _, _, value in self.sent]


async def until(check: Any) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("not reached")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("transition", "io.kafka-autopilot.transition"),
        ("action-verified", "io.kafka-autopilot.action.verified"),
        ("action-dry-run", "io.kafka-autopilot.action.dry-run"),
        ("action-throttled", "io.kafka-autopilot.action.throttled"),
        ("action-declined", "io.kafka-autopilot.action.declined"),
    ],
)
def test_event_types_name_the_record(event: str, expected: str) -> None:
    assert event_type(record(event)) == expected


def test_the_envelope_is_a_structured_cloudevent_1_0() -> None:
    source = record("action-verified", before="400Gi", after="800Gi")
    first = to_cloudevent(source, source="kafka-autopilot/ns/agent-0")
    second = to_cloudevent(source, source="kafka-autopilot/ns/agent-0")
    assert {key: first[key] for key in ("specversion", "source", "type", "subject", "time", "datacontenttype")} == {
        "specversion": "1.0",
        "source": "kafka-autopilot/ns/agent-0",
        "type": "io.kafka-autopilot.action.verified",
        "subject": "kafka/data-kafka-0",
        "time": "2027-01-15T08:00:00.000Z",
        "datacontenttype": "application/json",
    }
    assert first["data"] == source
    assert first["dryrun"] is False
    assert first["id"] != second["id"]


async def test_transitions_actions_and_holds_are_published_in_order_keyed_by_object() -> None:
    world = World()
    task = asyncio.create_task(world.sink.run())
    world.sink.offer(record("evaluation"))
    world.sink.offer(record("transition", **{"from": "Normal", "to": "Triggered"}))
    world.sink.offer(record("action-planned", "kafka/data-kafka-1"))
    world.sink.offer(record("action-throttled", code="RateLimitPerObject"))
    world.sink.offer(record("action-verified"))
    await until(lambda: len(world.sent) == 4)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [event["type"].rsplit(".", 1)[-1] for event in world.events()] == [
        "transition",
        "planned",
        "throttled",
        "verified",
    ]
    assert [key for _, key, _ in world.sent] == [b"kafka/data-kafka-0", b"kafka/data-kafka-1"] + [
        b"kafka/data-kafka-0"
    ] * 2
    assert {topic for topic, _, _ in world.sent} == {"autopilot-decisions"}
    assert world.sink.published == 4
    assert world.producers[0].stopped


async def test_dry_run_records_are_marked() -> None:
    world = World()
    task = asyncio.create_task(world.sink.run())
    world.sink.offer(record("action-dry-run", dry_run=True))
    await until(lambda: world.sent)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    (event,) = world.events()
    assert event["dryrun"] is True
    assert event["data"]["dry_run"] is True


async def test_an_unreachable_topic_buffers_then_drops_with_a_count_and_catches_up_in_order() -> None:
    world = World(unreachable=True, capacity=3)
    task = asyncio.create_task(world.sink.run())
    for index in range(5):
        world.sink.offer(record("action-verified", f"kafka/data-kafka-{index}"))  # returns at once: never blocks
    await until(lambda: len(world.pauses) >= 3)
    assert (world.sink.buffered, world.sink.dropped, world.sent) == (3, 2, [])
    assert world.pauses[:3] == [1.0, 2.0, 4.0]
    assert "ConnectionError: no broker answers" in world.errors[0]
    world.failing[0] = False
    await until(lambda: len(world.sent) == 3)
    await asyncio.wait_for(world.sink.drained(), 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [key for _, key, _ in world.sent] == [b"kafka/data-kafka-0", b"kafka/data-kafka-1", b"kafka/data-kafka-2"]
    assert world.sink.buffered == 0
    assert len(world.producers) > 1


def test_a_buffer_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        World(capacity=0)
