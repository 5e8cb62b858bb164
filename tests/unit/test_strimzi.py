"""Placing a PVC in Strimzi's storage specs (agent.core.strimzi): from its labels, owners and name, never guessed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.core.strimzi import NotGrowable, OwnedVolume, owned_volume, storage_patch, volume_size


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str


@dataclass(frozen=True)
class Claim:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    owner_references: tuple[Owner, ...] = ()
    namespace: str = "kafka"


POOL_LABELS = {"strimzi.io/cluster": "my-cluster", "strimzi.io/pool-name": "brokers"}


def volume(*, pool: str | None = "brokers", volume_id: int | None = 0, node_id: int = 10) -> OwnedVolume:
    return OwnedVolume(namespace="kafka", cluster="my-cluster", pool=pool, volume_id=volume_id, node_id=node_id)


@pytest.mark.parametrize(
    ("claim", "placed"),
    [
        (Claim("data-kafka-0", {"app": "kafka"}), None),
        (Claim("data-0-my-cluster-brokers-10", POOL_LABELS), volume()),
        (
            Claim("data-3-my-cluster-brokers-12", POOL_LABELS, (Owner("Kafka", "my-cluster"),)),
            volume(volume_id=3, node_id=12),
        ),
        (Claim("data-my-cluster-brokers-10", POOL_LABELS), volume(volume_id=None)),
        (
            Claim("data-my-cluster-kafka-2", {"strimzi.io/cluster": "my-cluster"}),
            volume(pool=None, volume_id=None, node_id=2),
        ),
        (
            Claim("data-0-my-cluster-brokers-10", POOL_LABELS, (Owner("StrimziPodSet", "my-cluster-brokers"),)),
            volume(),
        ),
    ],
)
def test_a_claim_is_placed_by_its_labels_owners_and_strimzis_naming(claim: Claim, placed: OwnedVolume | None) -> None:
    assert owned_volume(claim) == placed


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        (Claim("data-0-x", {}, (Owner("Kafka", "my-cluster"),)), "has no strimzi.io/cluster label"),
        (Claim("data-0-my-cluster-brokers-10", POOL_LABELS, (Owner("Kafka", "other"),)), "owner is ambiguous"),
        (Claim("data-0-my-cluster-brokers-10", POOL_LABELS, (Owner("KafkaNodePool", "controllers"),)), "ambiguous"),
        (Claim("data-0-my-cluster-controllers-10", POOL_LABELS), "whose name is not Strimzi's"),
        (Claim("data-0-my-cluster-brokers-x", POOL_LABELS), "whose name is not Strimzi's"),
    ],
)
def test_a_strimzi_claim_that_cannot_be_placed_says_why(claim: Claim, reason: str) -> None:
    placed = owned_volume(claim)
    assert isinstance(placed, NotGrowable)
    assert reason in placed.reason


JBOD: dict[str, Any] = {
    "type": "jbod",
    "volumes": [
        {"id": 0, "type": "persistent-claim", "size": "400Gi", "kraftMetadata": "shared"},
        {"id": 1, "type": "persistent-claim", "size": "1Ti", "class": "fast"},
    ],
}


def test_a_jbod_volume_is_sized_and_patched_alone_keeping_the_others() -> None:
    sized = volume_size(volume(volume_id=1), JBOD, resource="KafkaNodePool kafka/brokers")
    assert not isinstance(sized, NotGrowable) and sized.size_bytes == 1024**4

    patch = storage_patch(volume(volume_id=0), JBOD, new_bytes=800 * 1024**3, resource_version="42")

    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "spec": {
            "storage": {
                "type": "jbod",
                "volumes": [
                    {"id": 0, "type": "persistent-claim", "size": "800Gi", "kraftMetadata": "shared"},
                    {"id": 1, "type": "persistent-claim", "size": "1Ti", "class": "fast"},
                ],
            }
        },
    }


@pytest.mark.parametrize(
    ("placed", "storage", "reason"),
    [
        (volume(volume_id=None), JBOD, "JBOD storage but the claim's name carries no volume id"),
        (volume(volume_id=2), JBOD, "JBOD volume id 2 is not found"),
        (volume(volume_id=0), {"type": "persistent-claim", "size": "1Ti"}, "carries volume id 0"),
        (volume(volume_id=None), {"type": "ephemeral"}, "is type: ephemeral"),
        (volume(volume_id=None), {"type": "persistent-claim", "size": "lots"}, "has no size we can read"),
    ],
)
def test_what_cannot_be_grown_safely_is_refused(placed: OwnedVolume, storage: dict[str, Any], reason: str) -> None:
    sized = volume_size(placed, storage, resource="KafkaNodePool kafka/brokers")
    assert isinstance(sized, NotGrowable)
    assert reason in sized.reason
