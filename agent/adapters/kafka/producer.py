"""The decision stream's two ends on Kafka: an idempotent producer (`kafka-autopilot run --events-topic`)
and a reader of a whole topic (`kafka-autopilot report --events-topic`).

The agent's only writes to Kafka are these events; the producer is built from the same `KafkaSettings`
as the admin client (TLS, SASL), with `enable_idempotence` (and so `acks=all`), so a retried send never
writes an event twice to its partition. What is sent, and how a send that fails is handled, is
`agent.audit.cloudevents`. `read_topic` reads every message there is, from the start, without a
consumer group (it commits nothing), and stops at the end offsets it found once assigned; when it
cannot connect over TLS, its error says what the TLS session ended with (`tls_probe`).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from agent.adapters.kafka.admin import KafkaSettings
from agent.adapters.kafka.tls_probe import tls_failure


def event_producer(settings: KafkaSettings) -> AIOKafkaProducer:
    """A producer not started yet (`await producer.start()` connects)."""
    return AIOKafkaProducer(**settings.client_kwargs(), enable_idempotence=True, acks="all")


async def read_topic(
    settings: KafkaSettings, topic: str, *, timeout_seconds: float = 60.0
) -> list[tuple[bytes, bytes]]:
    """(key, value) of every message of `topic` up to its end when asked, partition by partition in order."""
    kwargs = settings.client_kwargs()
    consumer = AIOKafkaConsumer(**kwargs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        await consumer.start()
    except KafkaError as error:
        why = None
        if settings.uses_tls:
            why = await tls_failure(
                settings.bootstrap_servers,
                kwargs["ssl_context"],
                client_certificate=settings.ssl_certfile is not None,
                timeout_seconds=settings.request_timeout_ms / 1000,
            )
        if why is None:
            raise
        raise KafkaConnectionError(f"{error}; {why}") from error
    try:
        async with asyncio.timeout(timeout_seconds):
            if topic not in await consumer.topics():
                return []
            consumer.subscribe([topic])  # without a group: every partition, from the earliest offset
            found: list[tuple[bytes, bytes]] = []

            async def fetch() -> None:
                batches = await consumer.getmany(timeout_ms=500)
                found.extend((m.key or b"", m.value or b"") for messages in batches.values() for m in messages)

            while not consumer.assignment():
                await fetch()
            ends = await consumer.end_offsets(list(consumer.assignment()))
            while [partition for partition, end in ends.items() if await consumer.position(partition) < end]:
                await fetch()
            return found
    finally:
        await consumer.stop()
