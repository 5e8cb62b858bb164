"""The watch-fed caches on fakes: list once then follow, RESYNC replaces the view, deletes, server-side
selectors, not ready (and no cycle) until synced, a permanent watch error named in the rule's health and
tried again until it serves (its view rebuilt from a fresh list), no LIST in a steady cycle, a conflict
re-reading one object, and the state store seeing its own write before the watch delivers it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClock, FakePrometheus, FakeWatches
from helpers import REFERENCE_RULE
from shell_support import InMemoryRuleObjects, load_rule

from agent.adapters.errors import KubeError
from agent.adapters.kubernetes import PvcInfo
from agent.adapters.kubernetes.cache import (
    CacheNotSyncedError,
    ClusterCaches,
    WatchCache,
    not_synced,
    run_caches,
)
from agent.adapters.kubernetes.statestore import StateStore, watched_objects
from agent.core.rules import Rule
from agent.core.states import ObjectState, RuleState
from agent.runtime.inventory import Inventory
from agent.runtime.watches import Gate

RULE = load_rule(REFERENCE_RULE)  # selector app=kafka
POSTGRES_RULE = load_rule(
    REFERENCE_RULE.replace("name: kafka-resize", "name: postgres-resize").replace("app: kafka", "app: postgres")
)
NODE_RULE = load_rule((Path(__file__).resolve().parents[3] / "rules" / "kafka-node-failure.yaml").read_text())


def pvc(name: str, *, labels: dict[str, str] | None = None, size: str = "100Gi") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "kafka", "name": name, "uid": f"uid-{name}", "labels": labels or {}},
        "spec": {"resources": {"requests": {"storage": size}}, "storageClassName": "fast"},
        "status": {"capacity": {"storage": size}, "phase": "Bound"},
    }


def world() -> FakeWatches:
    watches = FakeWatches()
    watches.put("namespaces", {"metadata": {"name": "kafka", "labels": {"team": "data"}}})
    watches.put("pvcs", pvc("data-kafka-0", labels={"app": "kafka"}))
    watches.put("pvcs", pvc("data-kafka-1", labels={"app": "kafka"}))
    watches.put("pvcs", pvc("pg-data-0", labels={"app": "postgres"}))
    return watches


async def until(check: Any, what: str) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def forbidden(resource: str) -> KubeError:
    return KubeError(
        f"kube-apiserver https://fake-watches: GET {resource}: 403 Forbidden: cannot list",
        server="https://fake-watches",
        verb="GET",
        resource=resource,
        status=403,
    )


@contextlib.asynccontextmanager
async def running(*caches: WatchCache[Any]) -> AsyncIterator[None]:
    task = asyncio.create_task(run_caches(caches))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_all(caches: ClusterCaches, **run: Any) -> AsyncIterator[None]:
    """`caches.run(**run)` while the block runs."""
    task = asyncio.create_task(caches.run(**run))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_cache_lists_once_then_follows_changes_and_deletes() -> None:
    watches = world()
    cache: WatchCache[PvcInfo] = WatchCache(source=watches, kind="pvcs", decode=PvcInfo.from_raw)
    with pytest.raises(CacheNotSyncedError, match="pvcs not synced"):
        cache.records()
    async with running(cache):
        await cache.wait_synced()
        assert sorted(claim.name for claim in cache.records()) == ["data-kafka-0", "data-kafka-1", "pg-data-0"]

        watches.put("pvcs", pvc("data-kafka-0", labels={"app": "kafka"}, size="200Gi"))
        watches.delete("pvcs", "pg-data-0", namespace="kafka")
        await until(lambda: cache.get("kafka/pg-data-0") is None, "the delete reaches the cache")
        grown = cache.get("kafka/data-kafka-0")
        assert grown is not None and grown.requested_bytes == 200 * 2**30
    assert watches.lists == ["pvcs"]


async def test_a_resync_after_410_replaces_the_whole_view() -> None:
    watches = world()
    cache: WatchCache[PvcInfo] = WatchCache(source=watches, kind="pvcs", decode=PvcInfo.from_raw)
    seen: list[str] = []
    cache.subscribe(lambda change: seen.append(change.type))
    async with running(cache):
        await cache.wait_synced()
        # Changes the watch missed while its resourceVersion expired: one claim gone, one new.
        del watches.objects["pvcs"]["kafka/data-kafka-1"]
        watches.objects["pvcs"]["kafka/data-kafka-2"] = pvc("data-kafka-2", labels={"app": "kafka"})
        watches.expire("pvcs")
        await until(lambda: "RESYNC" in seen, "the RESYNC")
        assert sorted(claim.name for claim in cache.records()) == ["data-kafka-0", "data-kafka-2", "pg-data-0"]
    assert watches.lists == ["pvcs", "pvcs"]


async def test_pvc_and_pod_watches_are_narrowed_by_the_rules_selectors() -> None:
    watches = world()
    caches = ClusterCaches(source=watches, rules=[RULE])
    async with running(*caches.caches()):
        for cache in caches.caches():
            await cache.wait_synced()
        claims = await caches.list_pvcs(label_selector="app=kafka")
    assert ("pvcs", "app=kafka", None) in watches.watched
    assert not [w for w in watches.watched if w[0] == "pvcs" and w[1] != "app=kafka"]
    assert sorted(claim.name for claim in claims) == ["data-kafka-0", "data-kafka-1"]
    with pytest.raises(CacheNotSyncedError, match="no watch of pvcs with label selector 'app=postgres'"):
        await caches.list_pvcs(label_selector="app=postgres")


async def test_rules_do_not_evaluate_and_the_agent_is_not_ready_until_the_caches_synced() -> None:
    watches = world()
    caches = ClusterCaches(source=watches, rules=[RULE])
    cycles: list[str] = []

    async def cycle(rule: Rule) -> str:
        cycles.append(rule.name)
        return "ok"

    async def resume(rule: Rule) -> None:
        return None

    gate = Gate(caches=caches, cycle=cycle, resume=resume)
    assert "caches not synced: namespaces" in str(not_synced(caches.caches()))
    assert "pvcs (app=kafka)" in str(not_synced(caches.caches()))
    health = await gate.gated_cycle(RULE)
    assert health.startswith("cache of namespaces not synced yet") and cycles == []
    async with running(*caches.caches()):
        await gate.gated_resume(RULE)  # waits for the rule's caches
        assert await gate.gated_cycle(RULE) == "ok"
        for cache in caches.caches():
            await cache.wait_synced()
        assert not_synced(caches.caches()) is None
    assert cycles == [RULE.name]


async def test_a_watch_refused_for_good_makes_the_rules_that_need_it_unhealthy() -> None:
    watches = world()
    watches.refuse("pvcs", forbidden("persistentvolumeclaims"))
    caches = ClusterCaches(source=watches, rules=[RULE])
    ran: list[str] = []

    async def cycle(rule: Rule) -> str:
        ran.append("cycle")
        return "ok"

    async def resume(rule: Rule) -> None:
        ran.append("resume")

    gate = Gate(caches=caches, cycle=cycle, resume=resume)
    async with running(*caches.caches()):
        await until(lambda: caches.pvcs["app=kafka"].failure is not None, "the refusal")
        await gate.gated_resume(RULE)
        problem = await gate.gated_cycle(RULE)
        readiness = not_synced(caches.caches())
        with pytest.raises(KubeError, match="403 Forbidden"):
            await caches.list_pvcs(label_selector="app=kafka")
    assert ran == [], "a rule ran on a cache that failed"
    assert problem is not None and "watch of pvcs (app=kafka) failed" in problem
    assert "https://fake-watches: GET persistentvolumeclaims: 403 Forbidden" in problem
    assert readiness is not None and "403 Forbidden" in readiness


async def test_a_watch_refused_for_good_is_tried_again_with_growing_pauses_and_serves_once_allowed() -> None:
    watches = world()
    watches.refuse("pvcs", forbidden("persistentvolumeclaims"))
    caches = ClusterCaches(source=watches, rules=[RULE])
    claims_cache = caches.pvcs["app=kafka"]
    changes: list[str] = []
    claims_cache.subscribe(lambda change: changes.append(change.type))
    async with running(*caches.caches()):
        await until(lambda: len(watches.clock.sleeps) >= 8, "eight tries")
        refused = caches.problem_for(RULE)
        watches.grant("pvcs")
        await until(lambda: caches.problem_for(RULE) is None, "the claims served again")
        claims = await caches.list_pvcs(label_selector="app=kafka")
    assert refused is not None and "403 Forbidden" in refused
    doubling_to_two_minutes = (5, 10, 20, 40, 80, 120, 120, 120)
    for pause, least in zip(watches.clock.sleeps, doubling_to_two_minutes, strict=False):
        assert least <= pause <= least + 1, f"paused {watches.clock.sleeps}"  # up to 1 s of jitter
    assert sorted(claim.name for claim in claims) == ["data-kafka-0", "data-kafka-1"]
    assert changes[0] == "FAILED" and changes[-1] == "SYNCED"


async def test_a_watch_cut_off_for_good_rebuilds_its_view_from_a_fresh_list_once_allowed_again() -> None:
    watches = world()
    caches = ClusterCaches(source=watches, rules=[RULE])
    async with running(*caches.caches()):
        await until(lambda: caches.problem_for(RULE) is None, "the first list")
        watches.cut("pvcs", forbidden("persistentvolumeclaims"))
        await until(lambda: caches.problem_for(RULE) is not None, "the cut")
        watches.delete("pvcs", "data-kafka-1", namespace="kafka")  # no watch sees it
        with pytest.raises(KubeError, match="403 Forbidden"):
            await caches.list_pvcs(label_selector="app=kafka")
        watches.grant("pvcs")
        await until(lambda: caches.problem_for(RULE) is None, "the claims served again")
        claims = await caches.list_pvcs(label_selector="app=kafka")
    assert [claim.name for claim in claims] == ["data-kafka-0"], "the claim deleted meanwhile is gone"


class CountingRuleObjects(InMemoryRuleObjects):
    """The AutopilotRuleObject API, counting the reads the state store sends it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def get_custom_object(self, *, group: str, version: str, plural: str, name: str) -> dict[str, Any]:
        self.reads.append(f"GET {name}")
        return await super().get_custom_object(group=group, version=version, plural=plural, name=name)

    async def list_custom_objects(self, *, label_selector: str | None = None, **rest: Any) -> dict[str, Any]:
        self.reads.append("LIST")
        return await super().list_custom_objects(label_selector=label_selector, **rest)


async def test_a_steady_cycle_sends_no_list() -> None:
    watches = world()
    api = CountingRuleObjects()
    caches = ClusterCaches(source=watches, rules=[RULE])
    objects = watched_objects(watches, dry_run=False)
    store = StateStore(kube=api, watched=objects)  # type: ignore[arg-type]
    inventory = Inventory(cluster=caches, prometheus=FakePrometheus())
    async with running(objects, *caches.caches()):
        for cache in [objects, *caches.caches()]:
            await cache.wait_synced()
        listed = list(watches.lists)
        for _ in range(3):  # three steady cycles' reads
            targets = await inventory.objects(RULE)
            await store.load(RULE.name)
            await store.action_history()
    assert sorted(target.name for target in targets) == ["data-kafka-0", "data-kafka-1"]
    assert watches.lists == listed, "a steady cycle listed again"
    assert api.reads == [], "a steady cycle read the state objects from the apiserver"


async def test_the_store_sees_its_own_write_before_the_watch_delivers_it() -> None:
    watches = FakeWatches()
    api = CountingRuleObjects()
    objects = watched_objects(watches, dry_run=False)
    store = StateStore(kube=api, watched=objects)  # type: ignore[arg-type]
    triggered = ObjectState(state=RuleState.TRIGGERED, since=100.0)
    async with running(objects):
        await objects.wait_synced()
        await store.save(
            rule=RULE.name, object_key="kafka/data-kafka-0", object_kind="PersistentVolumeClaim", state=triggered
        )
        # The watch has not delivered anything yet: the store answers with what it wrote.
        assert (await store.load(RULE.name))["kafka/data-kafka-0"].state is RuleState.TRIGGERED
        (name,) = api.objects
        first_version = api.objects[name]["metadata"]["resourceVersion"]

        # The watch delivers the object as created (before the status write): older than the write.
        created = {**api.objects[name], "status": {}, "metadata": {**api.objects[name]["metadata"]}}
        created["metadata"]["resourceVersion"] = str(int(first_version) - 1)
        watches.put("autopilotruleobjects", created)
        await until(lambda: objects.get(name) is not None, "the stale copy reaches the cache")
        assert (await store.load(RULE.name))["kafka/data-kafka-0"].state is RuleState.TRIGGERED

        # Another writer's later version (one this store never saw) wins over the store's own.
        normal = {**api.objects[name], "metadata": {**api.objects[name]["metadata"], "resourceVersion": "99"}}
        normal["status"] = {}
        watches.put("autopilotruleobjects", normal)
        await until(lambda: objects.get(name)["metadata"]["resourceVersion"] == "99", "the other write")  # type: ignore[index]
        assert "kafka/data-kafka-0" not in await store.load(RULE.name)
    assert "LIST" not in api.reads


async def test_a_conflict_re_reads_that_one_object() -> None:
    watches = FakeWatches()
    api = CountingRuleObjects()
    objects = watched_objects(watches, dry_run=False)
    store = StateStore(kube=api, watched=objects)  # type: ignore[arg-type]
    key = "kafka/data-kafka-0"
    async with running(objects):
        await objects.wait_synced()
        await store.save(
            rule=RULE.name,
            object_key=key,
            object_kind="PersistentVolumeClaim",
            state=ObjectState(state=RuleState.TRIGGERED, since=1.0),
        )
        (name,) = api.objects
        api._stamp(api.objects[name])  # someone relabels it: a new resourceVersion, the same status
        api.reads.clear()
        await store.save(
            rule=RULE.name,
            object_key=key,
            object_kind="PersistentVolumeClaim",
            state=ObjectState(state=RuleState.NORMAL, since=2.0),
        )
    assert api.reads == [f"GET {name}"]
    assert api.status_writes[-1]["state"] == RuleState.NORMAL.value


async def test_nodes_and_their_leases_are_watched_only_once_a_node_rule_needs_them() -> None:
    watches = world()
    watches.put("nodes", {"metadata": {"name": "worker-1", "labels": {}}, "spec": {}, "status": {}})
    caches = ClusterCaches(source=watches, rules=[RULE])
    assert caches.nodes not in caches.caches() and caches.leases not in caches.caches()
    added: list[str] = []
    caches.on_added(lambda cache: added.append(cache.name))
    async with running_all(caches):
        await until(lambda: watches.lists.count("pvcs") == 1, "the PVC rule's caches started")
        assert "nodes" not in watches.lists and "leases" not in watches.lists

        assert caches.needed_by(NODE_RULE) == [caches.nodes, caches.leases]  # a node rule arrives
        await until(lambda: "nodes" in watches.lists and "leases" in watches.lists, "the node caches started")
        await caches.nodes.wait_synced()
        assert [node.name for node in await caches.list_nodes()] == ["worker-1"]
        assert caches.nodes in caches.caches() and added == [caches.nodes.name, caches.leases.name]
        caches.needed_by(NODE_RULE)
        assert watches.lists.count("nodes") == 1, "started once"
    at_start = ClusterCaches(source=world(), rules=[RULE, NODE_RULE])
    assert at_start.nodes in at_start.caches() and at_start.leases in at_start.caches()


async def test_a_selector_no_rule_needs_for_two_passes_stops_its_watch_and_is_listed_afresh_when_needed_again() -> None:
    watches = world()
    caches = ClusterCaches(source=watches, rules=[RULE, POSTGRES_RULE])
    async with running_all(caches):
        await until(lambda: all(cache.synced for cache in caches.caches()), "every cache listed")
        postgres_claims = caches.pvcs["app=postgres"]
        assert caches.release_unused([RULE, POSTGRES_RULE]) == []
        assert caches.release_unused([RULE]) == [], "kept one pass: a replaced rule's last cycle may read it"
        assert caches.release_unused([RULE]) == ["pvcs (app=postgres)"]
        assert "app=postgres" not in caches.pvcs and postgres_claims not in caches.caches()
        assert not_synced(caches.caches()) is None, "readiness no longer waits for it"
        watches.put("pvcs", pvc("pg-data-1", labels={"app": "postgres"}))
        watches.put("pvcs", pvc("data-kafka-2", labels={"app": "kafka"}))
        await until(lambda: caches.pvcs["app=kafka"].get("kafka/data-kafka-2") is not None, "the kafka claim seen")
        assert postgres_claims.get("kafka/pg-data-1") is None, "its watch stopped"

        again = caches.needed_by(POSTGRES_RULE)[1]  # the rule comes back
        assert again is not postgres_claims
        await until(lambda: again.synced, "the selector listed afresh")
        assert sorted(claim.name for claim in again.records()) == ["pg-data-0", "pg-data-1"]
        assert watches.lists.count("pvcs") == 3, "app=kafka, app=postgres, and app=postgres again"
        assert caches.release_unused([RULE, POSTGRES_RULE]) == [], "needed again: the count starts over"
        assert caches.release_unused([RULE]) == []
        assert caches.release_unused([]) == ["pvcs (app=postgres)"], "unneeded at the previous pass too"
        assert caches.release_unused([]) == ["pvcs (app=kafka)"]
        assert caches.caches() == [caches.namespaces, caches.storage_classes], "always kept"
        assert caches.namespaces.synced and caches.storage_classes.synced


async def test_node_caches_no_rule_needs_stop_and_a_later_node_rule_gets_fresh_ones() -> None:
    watches = world()
    watches.put("nodes", {"metadata": {"name": "worker-1", "labels": {}}, "spec": {}, "status": {}})
    caches = ClusterCaches(source=watches, rules=[RULE, NODE_RULE])
    async with running_all(caches):
        await until(lambda: all(cache.synced for cache in caches.caches()), "every cache listed")
        old_nodes = caches.nodes
        caches.release_unused([RULE])
        assert sorted(caches.release_unused([RULE])) == ["leases in kube-node-lease", "nodes"]
        assert caches.nodes not in caches.caches() and caches.leases not in caches.caches()
        fresh_nodes, fresh_leases = caches.needed_by(NODE_RULE)
        assert fresh_nodes is not old_nodes and not fresh_nodes.synced
        await until(lambda: fresh_nodes.synced and fresh_leases.synced, "the node caches listed afresh")
        assert [node.name for node in await caches.list_nodes()] == ["worker-1"]
        assert watches.lists.count("nodes") == 2


async def test_the_caches_release_what_the_rules_run_now_do_not_need_on_their_own_timer() -> None:
    clock = FakeClock()
    watches = world()
    watches.clock = clock
    caches = ClusterCaches(source=watches, rules=[RULE, POSTGRES_RULE])
    rules_now = [RULE, POSTGRES_RULE]
    async with running_all(caches, rules=lambda: rules_now, every=60.0):
        await until(lambda: all(cache.synced for cache in caches.caches()), "every cache listed")
        rules_now = [RULE]
        await until(lambda: "app=postgres" not in caches.pvcs, "the unused selector released")
    assert clock.sleeps[:2] == [60.0, 60.0]
