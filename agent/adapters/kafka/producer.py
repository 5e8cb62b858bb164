"""An idempotent aiokafka producer, for the decision stream (`kafka-autopilot run --events-topic`).

The agent's only writes to Kafka are these events; the producer is built from the same `KafkaSettings`
as the admin client (TLS, SASL), with `enable_idempotence` (and so `acks=all`), so a retried send never
writes an event twice to its partition. What is sent, and how a send that fails is handled, is
`agent.audit.cloudevents`.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from agent.adapters.kafka.admin import KafkaSettings


def event_producer(settings: KafkaSettings) -> AIOKafkaProducer:
    """A producer not started yet (`await producer.start()` connects)."""
    return AIOKafkaProducer(**settings.client_kwargs(), enable_idempotence=True, acks="all")
