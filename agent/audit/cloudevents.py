"""The decision stream on Kafka: every transition, action and hold as a CloudEvents 1.0 message.

Other systems learn what the agent did from a topic (`kafka-autopilot run --events-topic TOPIC`) instead
of Kubernetes Events (which expire) or the audit file (which stays on one pod). Each audit record of a
transition, an action (planned, verified, failed, dry-run, declined, ...) or a hold becomes one message
in the CloudEvents 1.0 JSON event format (structured mode: the whole envelope is the value,
`application/cloudevents+json`), keyed by the object so one object's events stay in order on one
partition:

| attribute         | value                                                                      |
|-------------------|----------------------------------------------------------------------------|
| specversion       | "1.0"                                                                      |
| id                | a UUID, new for each event                                                 |
| source            | "kafka-autopilot/<namespace>/<identity>" (the agent replica)              |
| type              | io.kafka-autopilot.transition, io.kafka-autopilot.action.<outcome>, e.g. |
|                   | io.kafka-autopilot.action.verified, .action.throttled (a policy hold)      |
| subject           | the object: namespace/name, or name for cluster-scoped objects             |
| time              | the record's time (RFC 3339)                                               |
| datacontenttype   | "application/json"                                                         |
| dryrun            | extension attribute: true when nothing was (or will be) changed           |
| data              | the audit record itself (agent.audit.trail), with its own dry_run          |

No CloudEvents library is used: the official Python SDK adds a dependency for what is a dict and
`json.dumps` here, and its Kafka binding is for confluent-kafka, not aiokafka.

Publishing never blocks an action: `CloudEventSink.offer` only appends to a bounded buffer (in the
event loop's thread, from the audit trail's listener); a task sends from it through an idempotent
producer. While Kafka is unreachable the buffer fills, then new events are dropped and counted; the
producer is restarted with backoff. The producer is behind the small `EventProducer` Protocol
(aiokafka's `AIOKafkaProducer` satisfies it), so this module imports no adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agent.audit.trail import AuditRecord

SPEC_VERSION = "1.0"
TYPE_PREFIX = "io.kafka-autopilot"
CONTENT_TYPE = "application/cloudevents+json"
DEFAULT_CAPACITY = 10_000
PUBLISHED_EVENTS = ("transition",)
"""Besides these, every `action-*` record (actions, declines, holds) is published; evaluations are not."""


def is_published(record: AuditRecord) -> bool:
    event = str(record.get("event", ""))
    return event in PUBLISHED_EVENTS or event.startswith("action-")


def event_type(record: AuditRecord) -> str:
    """`io.kafka-autopilot.transition`, `io.kafka-autopilot.action.verified`, ..."""
    kind, _, outcome = str(record["event"]).partition("-")
    return ".".join(part for part in (TYPE_PREFIX, kind, outcome) if part)


def to_cloudevent(record: AuditRecord, *, source: str, event_id: str | None = None) -> dict[str, Any]:
    return {
        "specversion": SPEC_VERSION,
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": event_type(record),
        "subject": record.get("object") or record.get("rule") or "",
        "time": record["time"],
        "datacontenttype": "application/json",
        "dryrun": bool(record.get("dry_run")),
        "data": record,
    }


class EventProducer(Protocol):
    """What the sink needs of a Kafka producer (aiokafka's AIOKafkaProducer has it)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...


class CloudEventSink:
    """A bounded buffer of CloudEvents and the task that sends it to one topic; see the module docstring."""

    def __init__(
        self,
        *,
        topic: str,
        source: str,
        producer_factory: Callable[[], EventProducer],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        capacity: int = DEFAULT_CAPACITY,
        on_published: Callable[[], None] | None = None,
        on_dropped: Callable[[], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"the event buffer needs room for at least one event, not {capacity}")
        self.topic = topic
        self.source = source
        self.capacity = capacity
        self.dropped = 0
        self.published = 0
        self._factory = producer_factory
        self._sleep = sleep
        self._buffer: deque[tuple[bytes, bytes]] = deque()
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._on_published = on_published
        self._on_dropped = on_dropped
        self._on_error = on_error
        self._max_backoff = max_backoff_seconds

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def offer(self, record: AuditRecord) -> None:
        """Queue the record's event if it is one to publish; drop and count it when the buffer is full."""
        if not is_published(record):
            return
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped()
            return
        event = to_cloudevent(record, source=self.source)
        value = json.dumps(event, default=str, separators=(",", ":")).encode()
        self._buffer.append((str(event["subject"]).encode(), value))
        self._empty.clear()
        self._ready.set()

    async def drained(self) -> None:
        """Return once every buffered event is sent (the caller bounds the wait, e.g. at shutdown)."""
        await self._empty.wait()

    async def run(self) -> None:
        """Send the buffer's events in order, for ever; a failed send is tried again on a fresh producer."""
        producer: EventProducer | None = None
        failures = 0
        try:
            while True:
                if not self._buffer:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                try:
                    if producer is None:
                        producer = self._factory()
                        await producer.start()
                    key, value = self._buffer[0]
                    await producer.send_and_wait(self.topic, value=value, key=key)
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # Kafka unreachable or refusing: keep the event, back off, reconnect
                    failures += 1
                    if self._on_error is not None:
                        self._on_error(f"{type(error).__name__}: {error}")
                    await _stopped(producer)
                    producer = None
                    await self._sleep(min(self._max_backoff, 0.5 * 2 ** min(failures, 10)))
                    continue
                failures = 0
                self._buffer.popleft()
                if not self._buffer:
                    self._empty.set()
                self.published += 1
                if self._on_published is not None:
                    self._on_published()
        finally:
            await _stopped(producer)


async def _stopped(producer: EventProducer | None) -> None:
    if producer is not None:
        with contextlib.suppress(Exception):  # a producer that failed to start may fail to stop; dropped anyway
            await producer.stop()
