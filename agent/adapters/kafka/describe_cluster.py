"""Kafka's DescribeCluster API (key 60) v2 on aiokafka's protocol layer: every broker, fenced ones included.

Why it exists: a pod's broker id is known only from the address its broker advertises (see
`agent.core.broker_identity`), and the broker we most need to identify is the one that is down. The
Metadata response lists registered, unfenced brokers only; DescribeCluster v2 (Kafka 4.0+, KIP-1073)
takes `IncludeFencedBrokers` and answers each broker with `IsFenced`. aiokafka has no class for it.

The structs follow Kafka's message specs (clients/src/main/resources/common/message/
DescribeClusterRequest.json and DescribeClusterResponse.json, validVersions 0-2 in 4.4.0). Every
version is flexible (compact strings and arrays, a tagged-field buffer after each struct, the v2
request header). Only v2 is implemented: v0 and v1 say nothing the Metadata response does not.
`DescribeClusterRequest` raises `IncompatibleBrokerVersion` when the broker does not offer v2; the
admin then falls back to the Metadata brokers (see `endpoints_from`).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from aiokafka.errors import IncompatibleBrokerVersion
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Boolean, CompactArray, CompactString, Int8, Int16, Int32, Schema, TaggedFields

from agent.core.broker_identity import BrokerEndpoint

__all__ = [
    "DESCRIBE_CLUSTER_KEY",
    "FENCED_BROKERS_VERSION",
    "DescribeClusterRequest",
    "endpoints_from",
]

DESCRIBE_CLUSTER_KEY = 60
FENCED_BROKERS_VERSION = 2
_BROKERS_ENDPOINT_TYPE = 1  # 1 = brokers, 2 = controllers


class DescribeClusterResponseV2(Response):  # type: ignore[misc]  # aiokafka is untyped here
    API_KEY = DESCRIBE_CLUSTER_KEY
    API_VERSION = 2
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        ("endpoint_type", Int8),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "brokers",
            CompactArray(
                ("broker_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("is_fenced", Boolean),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_authorized_operations", Int32),
        ("tags", TaggedFields),
    )


class DescribeClusterRequestV2(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped here
    FLEXIBLE_VERSION = True
    API_KEY = DESCRIBE_CLUSTER_KEY
    API_VERSION = 2
    RESPONSE_TYPE = DescribeClusterResponseV2
    SCHEMA = Schema(
        ("include_cluster_authorized_operations", Boolean),
        ("endpoint_type", Int8),
        ("include_fenced_brokers", Boolean),
        ("tags", TaggedFields),
    )


DescribeClusterRequestStruct: TypeAlias = DescribeClusterRequestV2


class DescribeClusterRequest(Request[DescribeClusterRequestStruct]):  # type: ignore[misc]  # aiokafka is untyped
    """DescribeCluster v2 for the brokers, fenced ones included; `IncompatibleBrokerVersion` without v2."""

    API_KEY = DESCRIBE_CLUSTER_KEY

    def prepare(self, versions: dict[int, tuple[int, int]]) -> DescribeClusterRequestStruct:
        offered = versions.get(self.API_KEY)
        if offered is None or not offered[0] <= FENCED_BROKERS_VERSION <= offered[1]:
            shown = "not at all" if offered is None else f"v{offered[0]}-v{offered[1]}"
            raise IncompatibleBrokerVersion(
                f"the broker offers DescribeCluster {shown}, fenced brokers need v{FENCED_BROKERS_VERSION}"
            )
        return self.build(DescribeClusterRequestV2)

    def build(self, request_struct_class: type[DescribeClusterRequestStruct]) -> DescribeClusterRequestStruct:
        return request_struct_class(False, _BROKERS_ENDPOINT_TYPE, True, {})


def endpoints_from(*, described: dict[str, Any] | None, metadata: dict[str, Any]) -> tuple[BrokerEndpoint, ...]:
    """Every broker with its advertised address, by id.

    `described` is a decoded DescribeCluster v2 answer (`Response.to_object()`) without error: every
    broker, `fenced` as Kafka says. None when the broker could not answer it (no v2): then the
    Metadata response's brokers, which are the registered, unfenced ones only (fenced=False), so a
    fenced broker's pod is identified by nobody and whoever asks holds.
    """
    if described is not None:
        return tuple(
            BrokerEndpoint(broker_id=b["broker_id"], host=b["host"], port=b["port"], fenced=bool(b["is_fenced"]))
            for b in sorted(described["brokers"], key=lambda b: b["broker_id"])
        )
    return tuple(
        BrokerEndpoint(broker_id=b["node_id"], host=b["host"], port=b["port"])
        for b in sorted(metadata["brokers"], key=lambda b: b["node_id"])
    )
