"""What a preferred-leader election asked of Kafka, and what Kafka answered, partition by partition.

Kafka's ElectLeaders answer carries one error code per partition. Two of them mean the partition is
where it should be: none (elected now) and ELECTION_NOT_NEEDED (its preferred replica already
leads). Every other code (PREFERRED_LEADER_NOT_AVAILABLE when the preferred replica is out of the
ISR, an unknown partition, a denied authorization, ...) is reported for that partition alone, so one
stuck partition does not hide the others' success. Batching is here too, so both are table-tested.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["ELECTION_NOT_NEEDED", "PREFERRED_LEADER_NOT_AVAILABLE", "PartitionElection", "batches", "partition_list"]

NONE = 0
PREFERRED_LEADER_NOT_AVAILABLE = 80
ELIGIBLE_LEADERS_NOT_AVAILABLE = 83
ELECTION_NOT_NEEDED = 84
NO_RESULT = -2
"""Our own code: Kafka's answer did not mention a partition we asked about."""

ERROR_NAMES = {
    NO_RESULT: "NO_RESULT_IN_RESPONSE",
    -1: "UNKNOWN_SERVER_ERROR",
    NONE: "NONE",
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    5: "LEADER_NOT_AVAILABLE",
    7: "REQUEST_TIMED_OUT",
    29: "TOPIC_AUTHORIZATION_FAILED",
    31: "CLUSTER_AUTHORIZATION_FAILED",
    41: "NOT_CONTROLLER",
    42: "INVALID_REQUEST",
    PREFERRED_LEADER_NOT_AVAILABLE: "PREFERRED_LEADER_NOT_AVAILABLE",
    ELIGIBLE_LEADERS_NOT_AVAILABLE: "ELIGIBLE_LEADERS_NOT_AVAILABLE",
    ELECTION_NOT_NEEDED: "ELECTION_NOT_NEEDED",
}


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"error code {code}")


@dataclass(frozen=True, kw_only=True)
class PartitionElection:
    """Kafka's answer for one partition of an ElectLeaders request."""

    topic: str
    partition: int
    error_code: int
    error_message: str | None = None

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def done(self) -> bool:
        """Led by its preferred replica now: elected, or no election was needed."""
        return self.error_code in (NONE, ELECTION_NOT_NEEDED)

    def describe(self) -> str:
        if self.error_code == NONE:
            return f"{self.name}: elected"
        text = f"{self.name}: {error_name(self.error_code)}"
        return f"{text} ({self.error_message})" if self.error_message else text


def batches(items: Sequence[tuple[str, int]], size: int) -> Iterator[tuple[tuple[str, int], ...]]:
    """`items` in order, `size` at a time (the last batch may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def partition_list(partitions: Iterable[tuple[str, int]], *, limit: int = 10) -> str:
    """`t-0, t-3, u-1` (at most `limit` names, then `and N more`)."""
    names = [f"{topic}-{partition}" for topic, partition in partitions]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
