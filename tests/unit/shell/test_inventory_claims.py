"""The inventory's claim objects: built once per cached record, reused while the record is the same."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from fakes import FakeClock, FakeCluster, FakePrometheus, FakePvc
from helpers import REFERENCE_RULE
from shell_support import load_rule

from agent.adapters.kubernetes import PvcInfo
from agent.runtime.inventory import Inventory

RULE = load_rule(REFERENCE_RULE)
OTHER = load_rule(REFERENCE_RULE.replace("name: kafka-resize", "name: other").replace("app: kafka", "tier: hot"))


class CachedClaims:
    """A watch cache's reads: the same record objects from one call to the next, until one is replaced."""

    def __init__(self, records: Sequence[PvcInfo]) -> None:
        self.records = list(records)

    async def list_pvcs(self, *, label_selector: str | None = None) -> list[PvcInfo]:
        key, _, value = (label_selector or "").partition("=")
        return [record for record in self.records if not key or record.labels.get(key) == value]

    async def namespace_labels(self) -> Mapping[str, Mapping[str, str]]:
        return {"kafka": {}}

    async def list_nodes(self) -> list[object]:
        return []

    async def node_lease_renew_times(self) -> Mapping[str, float]:
        return {}

    async def list_pods(self, *, namespace: str | None = None, label_selector: str | None = None) -> list[object]:
        return []


async def cached_records() -> list[PvcInfo]:
    cluster = FakeCluster(clock=FakeClock())
    for index in range(4):
        labels = {"app": "kafka", "tier": "hot"} if index < 2 else {"app": "kafka"}
        cluster.add_pvc(FakePvc(namespace="kafka", name=f"data-{index}", requested_bytes=1, labels=labels))
    return await cluster.list_pvcs()


async def test_a_claim_whose_record_is_the_same_keeps_its_object_and_a_changed_one_gets_a_new_one() -> None:
    cache = CachedClaims(await cached_records())
    inventory = Inventory(cluster=cache, prometheus=FakePrometheus())
    first = await inventory.objects(RULE)
    others = await inventory.objects(OTHER)  # another selector does not push the first one's objects out
    cache.records[0] = replace(cache.records[0], capacity_bytes=2)

    again = await inventory.objects(RULE)

    assert [target.key for target in first] == [f"kafka/data-{index}" for index in range(4)]
    assert [target.key for target in others] == ["kafka/data-0", "kafka/data-1"]
    assert again[0] is not first[0] and again[0].capacity_bytes == 2
    assert all(now is before for now, before in zip(again[1:], first[1:], strict=True))
