"""ElectLeaders structs (API key 43) per Kafka's message specs: each version encodes and decodes back,
the flexible one (v2) with compact strings/arrays and tagged fields, and the version is negotiated."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from aiokafka.errors import IncompatibleBrokerVersion

from agent.adapters.kafka.elect import (
    IMPLEMENTED_VERSIONS,
    STRUCTS,
    UNCLEAN,
    ElectLeadersRequest,
    ElectLeadersResponseV0,
    ElectLeadersResponseV1,
    ElectLeadersResponseV2,
    parse_answer,
)
from agent.core.elections import ELECTION_NOT_NEEDED, NO_RESULT, PREFERRED_LEADER_NOT_AVAILABLE

ASKED = [("orders", 2), ("orders", 0), ("audit", 1)]


def built(version: int) -> Any:
    request = ElectLeadersRequest(partitions=ASKED, timeout_ms=5000, version=version)
    return request.prepare({43: (0, 2)})


def test_every_version_of_the_specs_is_implemented() -> None:
    assert IMPLEMENTED_VERSIONS == (0, 1, 2)


@pytest.mark.parametrize("version", IMPLEMENTED_VERSIONS)
def test_each_request_version_round_trips(version: int) -> None:
    sent = built(version)
    assert version == sent.API_VERSION
    decoded = type(sent).decode(sent.encode()).to_object()
    topics = [(t["topic"], t["partitions"]) for t in decoded["topic_partitions"]]
    assert topics == [("audit", [1]), ("orders", [0, 2])]
    assert decoded["timeout_ms"] == 5000
    if version >= 1:
        assert decoded["election_type"] == 0
    else:
        assert "election_type" not in decoded


def test_v0_and_v1_bytes_follow_the_classic_encoding() -> None:
    # v1: int8 election type, int32 array length, int16 string length, int32 partition count
    wire = built(1).encode()
    assert wire[:1] == b"\x00"
    assert struct.unpack(">i", wire[1:5]) == (2,)
    assert struct.unpack(">h", wire[5:7]) == (5,)
    assert wire[7:12] == b"audit"
    assert built(0).encode() == wire[1:]


def test_v2_bytes_are_compact_with_tagged_fields() -> None:
    wire = built(2).encode()
    # election type; compact array of 2 topics = varint 3; compact string "audit" = varint 6
    assert wire[:3] == b"\x00\x03\x06"
    assert wire[3:8] == b"audit"
    # compact array of 1 partition (varint 2), partition 1, empty tagged fields of the topic
    assert wire[8:9] == b"\x02" and struct.unpack(">i", wire[9:13]) == (1,) and wire[13:14] == b"\x00"
    # ... timeout and the request's own empty tagged fields at the end
    assert struct.unpack(">i", wire[-5:-1]) == (5000,) and wire[-1:] == b"\x00"
    assert STRUCTS[2].FLEXIBLE_VERSION and not STRUCTS[1].FLEXIBLE_VERSION


RESULTS = [
    ("orders", [(0, 0, None), (2, ELECTION_NOT_NEEDED, "Leader election not needed")]),
    ("audit", [(1, PREFERRED_LEADER_NOT_AVAILABLE, "The preferred leader was not available.")]),
]


def response(version: int) -> Any:
    if version == 0:
        return ElectLeadersResponseV0(0, RESULTS)
    if version == 1:
        return ElectLeadersResponseV1(0, 0, RESULTS)
    flexible = [(topic, [(*row, {}) for row in rows], {}) for topic, rows in RESULTS]
    return ElectLeadersResponseV2(0, 0, flexible, {})


@pytest.mark.parametrize("version", IMPLEMENTED_VERSIONS)
def test_each_response_version_round_trips_to_per_partition_results(version: int) -> None:
    wire = response(version).encode()
    decoded = STRUCTS[version].RESPONSE_TYPE.decode(wire).to_object()
    answer = parse_answer(decoded, asked=[*ASKED, ("orders", 7)])
    assert answer.error_code == 0
    by_name = {r.name: r for r in answer.partitions}
    assert [r.name for r in answer.partitions] == ["orders-2", "orders-0", "audit-1", "orders-7"]
    assert by_name["orders-0"].done and by_name["orders-2"].done
    assert not by_name["audit-1"].done
    assert (
        by_name["audit-1"].describe()
        == "audit-1: PREFERRED_LEADER_NOT_AVAILABLE (The preferred leader was not available.)"
    )
    assert by_name["orders-7"].error_code == NO_RESULT and not by_name["orders-7"].done


def test_the_top_level_error_of_v1_is_kept() -> None:
    decoded = ElectLeadersResponseV1.decode(ElectLeadersResponseV1(0, 31, []).encode()).to_object()
    assert parse_answer(decoded, asked=[("t", 0)]).error_code == 31


@pytest.mark.parametrize(
    ("offered", "expected"),
    [((0, 2), 2), ((0, 1), 1), ((0, 0), 0), ((1, 5), 2)],
)
def test_the_highest_common_version_is_chosen(offered: tuple[int, int], expected: int) -> None:
    request = ElectLeadersRequest(partitions=ASKED, timeout_ms=1000)
    assert expected == request.prepare({43: offered}).API_VERSION
    assert request.chosen_version == expected and request.broker_versions == offered


def test_versions_the_broker_does_not_offer_are_refused_clearly() -> None:
    with pytest.raises(IncompatibleBrokerVersion, match="v2 forced, the broker accepts v0-v1"):
        ElectLeadersRequest(partitions=ASKED, timeout_ms=1000, version=2).prepare({43: (0, 1)})
    with pytest.raises(IncompatibleBrokerVersion, match="does not offer ElectLeaders"):
        ElectLeadersRequest(partitions=ASKED, timeout_ms=1000).prepare({})
    with pytest.raises(IncompatibleBrokerVersion, match="this agent speaks v0-v2"):
        ElectLeadersRequest(partitions=ASKED, timeout_ms=1000).prepare({43: (3, 4)})
    with pytest.raises(IncompatibleBrokerVersion, match="only elects preferred"):
        ElectLeadersRequest(partitions=ASKED, timeout_ms=1000, election_type=UNCLEAN).prepare({43: (0, 0)})
    with pytest.raises(ValueError, match="v3 is not implemented"):
        ElectLeadersRequest(partitions=ASKED, timeout_ms=1000, version=3)
    with pytest.raises(ValueError, match="at least one partition"):
        ElectLeadersRequest(partitions=[], timeout_ms=1000)
