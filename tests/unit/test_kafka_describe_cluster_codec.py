"""DescribeCluster v2 (API key 60) per Kafka's message spec: the request's bytes, a response decoded to
every broker with its fencing, the version negotiation, and the Metadata-only fallback."""

from __future__ import annotations

import pytest
from aiokafka.errors import IncompatibleBrokerVersion

from agent.adapters.kafka import KafkaAdmin, KafkaResponseError, KafkaSettings
from agent.adapters.kafka.describe_cluster import (
    DESCRIBE_CLUSTER_KEY,
    DescribeClusterRequest,
    DescribeClusterRequestV2,
    DescribeClusterResponseV2,
    endpoints_from,
)
from agent.core.broker_identity import BrokerEndpoint


def test_v2_request_bytes_ask_for_brokers_fenced_ones_included() -> None:
    sent = DescribeClusterRequest().prepare({DESCRIBE_CLUSTER_KEY: (0, 2)})

    assert isinstance(sent, DescribeClusterRequestV2)
    assert sent.FLEXIBLE_VERSION
    # IncludeClusterAuthorizedOperations false, EndpointType 1 (brokers), IncludeFencedBrokers true, no tags.
    assert sent.encode() == b"\x00\x01\x01\x00"


@pytest.mark.parametrize(
    ("versions", "shown"),
    [({DESCRIBE_CLUSTER_KEY: (0, 1)}, "v0-v1"), ({}, "not at all"), ({DESCRIBE_CLUSTER_KEY: (3, 4)}, "v3-v4")],
)
def test_without_v2_the_request_is_refused(versions: dict[int, tuple[int, int]], shown: str) -> None:
    with pytest.raises(IncompatibleBrokerVersion, match=f"DescribeCluster {shown}, fenced brokers need v2"):
        DescribeClusterRequest().prepare(versions)


def wire_response() -> bytes:
    brokers: list[tuple[int, str, int, str | None, bool, dict[int, bytes]]] = [
        (2, "10.0.0.9", 9092, None, False, {}),
        (0, "kafka-0.kafka-headless.kafka.svc", 9092, "zone-a", True, {}),
    ]
    encoded: bytes = DescribeClusterResponseV2(0, 0, None, 1, "cluster-id", 2, brokers, -(2**31), {}).encode()
    return encoded


def test_a_response_decodes_to_every_broker_fenced_ones_marked() -> None:
    decoded = DescribeClusterResponseV2.decode(wire_response()).to_object()

    assert decoded["error_code"] == 0
    assert decoded["error_message"] is None
    assert endpoints_from(described=decoded, metadata={"brokers": []}) == (
        BrokerEndpoint(broker_id=0, host="kafka-0.kafka-headless.kafka.svc", port=9092, fenced=True),
        BrokerEndpoint(broker_id=2, host="10.0.0.9", port=9092, fenced=False),
    )


def test_without_describe_cluster_the_metadata_brokers_are_the_endpoints_unfenced() -> None:
    metadata = {
        "brokers": [
            {"node_id": 3, "host": "10.0.0.3", "port": 9092, "rack": None},
            {"node_id": 1, "host": "10.0.0.1", "port": 9093, "rack": None},
        ]
    }

    assert endpoints_from(described=None, metadata=metadata) == (
        BrokerEndpoint(broker_id=1, host="10.0.0.1", port=9093),
        BrokerEndpoint(broker_id=3, host="10.0.0.3", port=9092),
    )


class OldBroker:
    """A client whose broker offers DescribeCluster v0-v1 only (Kafka 3.x): the request cannot be built."""

    async def send(self, node: int, request: DescribeClusterRequest) -> DescribeClusterResponseV2:
        request.prepare({DESCRIBE_CLUSTER_KEY: (0, 1)})  # raises
        raise AssertionError("DescribeCluster v2 was built for a broker without it")


class AnsweringBroker:
    def __init__(self, response: DescribeClusterResponseV2) -> None:
        self.response = response

    async def send(self, node: int, request: DescribeClusterRequest) -> DescribeClusterResponseV2:
        request.prepare({DESCRIBE_CLUSTER_KEY: (0, 2)})
        return self.response


METADATA = {"brokers": [{"node_id": 2, "host": "10.0.0.9", "port": 9092, "rack": None}]}


@pytest.mark.parametrize(
    ("client", "fenced_listed"),
    [
        (OldBroker(), False),
        (AnsweringBroker(DescribeClusterResponseV2.decode(wire_response())), True),
        (AnsweringBroker(DescribeClusterResponseV2(0, 31, "denied", 1, "c", 2, [], 0, {})), False),
    ],
    ids=["no v2: Metadata brokers", "v2: fenced ones too", "not authorized: Metadata brokers"],
)
async def test_the_admin_falls_back_to_the_metadata_brokers(client: object, fenced_listed: bool) -> None:
    admin = KafkaAdmin(settings=KafkaSettings(bootstrap_servers="127.0.0.1:1"))

    endpoints = await admin._endpoints_from(client, node=2, metadata=METADATA)

    assert any(e.fenced for e in endpoints) is fenced_listed
    assert BrokerEndpoint(broker_id=2, host="10.0.0.9", port=9092) in endpoints


async def test_another_describe_cluster_error_is_raised_not_hidden() -> None:
    admin = KafkaAdmin(settings=KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    client = AnsweringBroker(DescribeClusterResponseV2(0, 7, "slow", 1, "c", 2, [], 0, {}))

    with pytest.raises(KafkaResponseError, match="DescribeCluster on broker 2: RequestTimedOutError slow"):
        await admin._endpoints_from(client, node=2, metadata=METADATA)
