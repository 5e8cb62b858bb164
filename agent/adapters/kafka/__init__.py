"""Kafka, through aiokafka: the cluster view for the guardrails (`admin`) and preferred-leader elections
(`elect`, the ElectLeaders wire format). The public names of `admin` are re-exported here."""

from agent.adapters.kafka.admin import (
    KafkaAdmin,
    KafkaAdminError,
    KafkaResponseError,
    KafkaSettings,
    KafkaUnavailableError,
)

__all__ = ["KafkaAdmin", "KafkaAdminError", "KafkaResponseError", "KafkaSettings", "KafkaUnavailableError"]
