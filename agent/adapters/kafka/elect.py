"""Kafka's ElectLeaders API (key 43) on aiokafka's protocol layer, which has no admin call for it.

The structs follow Kafka's message specs (clients/src/main/resources/common/message/
ElectLeadersRequest.json and ElectLeadersResponse.json). Kafka 4.x brokers still accept every
version, 0-2: KIP-896 (4.0) removed only versions older than its Kafka 2.1 baseline, and API 43
came later (the 4.4.0 spec lists validVersions 0-2; the sandbox's 4.4.0 brokers offer 0-2):

- v0: the topic partitions and a timeout; the election is always PREFERRED;
- v1: an election type first (0 PREFERRED, 1 UNCLEAN); the answer gains a top-level error code;
- v2: the first flexible version: compact strings and arrays (length + 1 as an unsigned varint)
  and a tagged-field buffer after every struct and at the end, plus the v2 request header
  (aiokafka's `FLEXIBLE_VERSION` switch, as its own AlterPartitionReassignments uses).

`ElectLeadersRequest` picks the highest version both sides know from the broker's ApiVersions
(aiokafka negotiates them per connection), unless a version is forced (tests cover each one).
In KRaft any broker accepts the request and forwards it to the active controller.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka.errors import IncompatibleBrokerVersion
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    CompactArray,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    String,
    TaggedFields,
)

from agent.core.elections import NO_RESULT, PartitionElection

__all__ = [
    "ELECT_LEADERS_KEY",
    "IMPLEMENTED_VERSIONS",
    "PREFERRED",
    "UNCLEAN",
    "ElectLeadersRequest",
    "ElectionAnswer",
    "parse_answer",
]

ELECT_LEADERS_KEY = 43
PREFERRED = 0
UNCLEAN = 1


class ElectLeadersResponseV0(Response):  # type: ignore[misc]  # aiokafka is untyped here
    API_KEY = ELECT_LEADERS_KEY
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "replica_election_results",
            Array(
                ("topic", String("utf-8")),
                (
                    "partition_result",
                    Array(("partition_id", Int32), ("error_code", Int16), ("error_message", String("utf-8"))),
                ),
            ),
        ),
    )


class ElectLeadersResponseV1(Response):  # type: ignore[misc]  # aiokafka is untyped here
    API_KEY = ELECT_LEADERS_KEY
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("replica_election_results", ElectLeadersResponseV0.SCHEMA.fields[1]),
    )


class ElectLeadersResponseV2(Response):  # type: ignore[misc]  # aiokafka is untyped here
    API_KEY = ELECT_LEADERS_KEY
    API_VERSION = 2
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "replica_election_results",
            CompactArray(
                ("topic", CompactString("utf-8")),
                (
                    "partition_result",
                    CompactArray(
                        ("partition_id", Int32),
                        ("error_code", Int16),
                        ("error_message", CompactString("utf-8")),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class ElectLeadersRequestV0(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped here
    API_KEY = ELECT_LEADERS_KEY
    API_VERSION = 0
    RESPONSE_TYPE = ElectLeadersResponseV0
    SCHEMA = Schema(
        ("topic_partitions", Array(("topic", String("utf-8")), ("partitions", Array(Int32)))),
        ("timeout_ms", Int32),
    )


class ElectLeadersRequestV1(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped here
    API_KEY = ELECT_LEADERS_KEY
    API_VERSION = 1
    RESPONSE_TYPE = ElectLeadersResponseV1
    SCHEMA = Schema(
        ("election_type", Int8),
        ("topic_partitions", ElectLeadersRequestV0.SCHEMA.fields[0]),
        ("timeout_ms", Int32),
    )


class ElectLeadersRequestV2(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped here
    FLEXIBLE_VERSION = True
    API_KEY = ELECT_LEADERS_KEY
    API_VERSION = 2
    RESPONSE_TYPE = ElectLeadersResponseV2
    SCHEMA = Schema(
        ("election_type", Int8),
        (
            "topic_partitions",
            CompactArray(
                ("topic", CompactString("utf-8")), ("partitions", CompactArray(Int32)), ("tags", TaggedFields)
            ),
        ),
        ("timeout_ms", Int32),
        ("tags", TaggedFields),
    )


ElectLeadersRequestStruct: TypeAlias = ElectLeadersRequestV0 | ElectLeadersRequestV1 | ElectLeadersRequestV2
STRUCTS: dict[int, type[ElectLeadersRequestStruct]] = {
    0: ElectLeadersRequestV0,
    1: ElectLeadersRequestV1,
    2: ElectLeadersRequestV2,
}
IMPLEMENTED_VERSIONS = tuple(sorted(STRUCTS))


def _by_topic(partitions: Iterable[tuple[str, int]]) -> list[tuple[str, list[int]]]:
    grouped: dict[str, set[int]] = {}
    for topic, partition in partitions:
        grouped.setdefault(topic, set()).add(partition)
    return [(topic, sorted(grouped[topic])) for topic in sorted(grouped)]


class ElectLeadersRequest(Request[ElectLeadersRequestStruct]):  # type: ignore[misc]  # aiokafka is untyped here
    """An election for explicit partitions (never None, which would mean every partition).

    `version` forces one version; otherwise the highest one the broker accepts. After `prepare`,
    `chosen_version` and `broker_versions` say what was sent and what the broker offered.
    """

    API_KEY = ELECT_LEADERS_KEY

    def __init__(
        self,
        *,
        partitions: Sequence[tuple[str, int]],
        timeout_ms: int,
        election_type: int = PREFERRED,
        version: int | None = None,
    ) -> None:
        if not partitions:
            raise ValueError("an ElectLeaders request needs at least one partition")
        if version is not None and version not in STRUCTS:
            raise ValueError(f"ElectLeaders v{version} is not implemented (only v{min(STRUCTS)}-v{max(STRUCTS)})")
        self.topics = _by_topic(partitions)
        self.timeout_ms = timeout_ms
        self.election_type = election_type
        self.version = version
        self.chosen_version: int | None = None
        self.broker_versions: tuple[int, int] | None = None

    def prepare(self, versions: dict[int, tuple[int, int]]) -> ElectLeadersRequestStruct:
        offered = versions.get(self.API_KEY)
        if offered is None:
            raise IncompatibleBrokerVersion("the broker does not offer ElectLeaders (API key 43)")
        self.broker_versions = offered
        low, high = offered
        if self.version is not None:
            if not low <= self.version <= high:
                raise IncompatibleBrokerVersion(
                    f"ElectLeaders v{self.version} forced, the broker accepts v{low}-v{high}"
                )
            return self.build(STRUCTS[self.version])
        usable = [v for v in IMPLEMENTED_VERSIONS if low <= v <= high]
        if not usable:
            raise IncompatibleBrokerVersion(
                f"the broker accepts ElectLeaders v{low}-v{high}, this agent speaks v{min(STRUCTS)}-v{max(STRUCTS)}"
            )
        return self.build(STRUCTS[max(usable)])

    def build(self, request_struct_class: type[ElectLeadersRequestStruct]) -> ElectLeadersRequestStruct:
        self.chosen_version = request_struct_class.API_VERSION
        if request_struct_class is ElectLeadersRequestV0:
            if self.election_type != PREFERRED:
                raise IncompatibleBrokerVersion("ElectLeaders v0 only elects preferred leaders")
            return ElectLeadersRequestV0(self.topics, self.timeout_ms)
        if request_struct_class is ElectLeadersRequestV1:
            return ElectLeadersRequestV1(self.election_type, self.topics, self.timeout_ms)
        flexible: list[tuple[str, list[int], dict[int, bytes]]] = [
            (topic, partitions, {}) for topic, partitions in self.topics
        ]
        return ElectLeadersRequestV2(self.election_type, flexible, self.timeout_ms, {})


@dataclass(frozen=True, kw_only=True)
class ElectionAnswer:
    """One ElectLeaders response: the top-level error code (0 before v1) and each partition's result,
    one per partition asked about (a partition the broker did not mention gets `NO_RESULT`)."""

    error_code: int
    partitions: tuple[PartitionElection, ...]


def parse_answer(response: dict[str, Any], *, asked: Sequence[tuple[str, int]]) -> ElectionAnswer:
    """Turn a decoded response (`Response.to_object()`) into per-partition results, in `asked` order."""
    answered: dict[tuple[str, int], PartitionElection] = {}
    for topic in response["replica_election_results"]:
        for result in topic["partition_result"]:
            key = (topic["topic"], result["partition_id"])
            answered[key] = PartitionElection(
                topic=key[0],
                partition=key[1],
                error_code=result["error_code"],
                error_message=result["error_message"],
            )
    results = tuple(
        answered.get((topic, partition))
        or PartitionElection(topic=topic, partition=partition, error_code=NO_RESULT, error_message=None)
        for topic, partition in dict.fromkeys(asked)
    )
    return ElectionAnswer(error_code=int(response.get("error_code", 0)), partitions=results)
