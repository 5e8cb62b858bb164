"""The state store against a real kube-apiserver: "never act twice for one cause" holds across
replicas and restarts because the API server, not the agent's memory, decides whose write wins.

Only the control plane runs (no Kafka, no Prometheus). Each test uses rule names of its own, so the
tests share one control plane and one CRD installation without depending on each other's order.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient

from agent.actions.registry import CATALOG
from agent.adapters.clock import WallClock
from agent.adapters.errors import ActionInFlightError, StateConflictError
from agent.adapters.kubernetes import KubeClient
from agent.adapters.kubernetes.clusterrules import (
    cluster_rule_file,
    list_cluster_rules,
    read_cluster_rules,
    set_rule_status,
)
from agent.adapters.kubernetes.crds import CRD_NAMES, install_crds
from agent.adapters.kubernetes.statestore import StateStore
from agent.adapters.kubernetes.statuscodec import (
    OBJECT_KIND_LABEL,
    RULE_LABEL,
    ActionHistory,
    LastAction,
    RecentAction,
    StoredStatus,
    object_name,
)
from agent.core.loader import parse_rules
from agent.core.states import ObjectState, RuleState
from sandbox.kube import KubeApi, KubeControlPlane, ensure_binaries

pytestmark = pytest.mark.sandbox

GROUP_PATH = "/apis/kafka-autopilot.io/v1alpha1"
OBJECTS_PATH = f"{GROUP_PATH}/autopilotruleobjects"
RULES_PATH = f"{GROUP_PATH}/autopilotrules"
PVC = "PersistentVolumeClaim"
RESIZE = "openstorage.io.action.volume/resize"
T0 = 1_700_000_000.125


def _kube(api_client: ApiClient) -> KubeClient:
    """The access layer over a test's own ApiClient (closed by the test's `async with`)."""
    return KubeClient(api_client=api_client, clock=WallClock())


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    control_plane = KubeControlPlane(
        work_dir=tmp_path_factory.mktemp("kube"),
        binaries=ensure_binaries(build=False),
        node_count=1,
        ttl_seconds=900,
    )
    control_plane.start()
    try:
        yield control_plane
    finally:
        control_plane.stop()


async def _new_client(kubeconfig: Path) -> ApiClient:
    return await config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="module")
def crds(plane: KubeControlPlane) -> KubeControlPlane:
    async def install() -> None:
        async with await _new_client(plane.kubeconfig_path) as api_client:
            await install_crds(_kube(api_client))
            await install_crds(_kube(api_client))  # again: the replace path, as on every agent start

    asyncio.run(install())
    return plane


@pytest.fixture
async def api_client(crds: KubeControlPlane) -> AsyncIterator[ApiClient]:
    async with await _new_client(crds.kubeconfig_path) as api_client:
        yield api_client


@pytest.fixture
def api(crds: KubeControlPlane) -> KubeApi:
    return crds.api()


def table(plane: KubeControlPlane, path: str) -> dict[str, Any]:
    """GET `path` as a meta.k8s.io Table, which is what `kubectl get` prints."""
    context = ssl.create_default_context(cafile=str(plane.pki_dir / "ca.crt"))
    context.load_cert_chain(certfile=str(plane.pki_dir / "admin.crt"), keyfile=str(plane.pki_dir / "admin.key"))
    connection = http.client.HTTPSConnection("127.0.0.1", plane.state.apiserver_port, context=context, timeout=10)
    try:
        connection.request("GET", path, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        response = connection.getresponse()
        body = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200, body
    decoded: dict[str, Any] = json.loads(body)
    return decoded


def table_rows(plane: KubeControlPlane, path: str) -> list[dict[str, Any]]:
    """Rows of a Table as column name -> cell."""
    found = table(plane, path)
    names = [column["name"] for column in found["columnDefinitions"]]
    return [dict(zip(names, row["cells"], strict=True)) for row in found["rows"]]


def normal(at: float) -> ObjectState:
    return ObjectState(state=RuleState.NORMAL, since=at, reason="first evaluation", entered_at={"Normal": at})


def triggered(at: float) -> ObjectState:
    return ObjectState(
        state=RuleState.TRIGGERED,
        since=at,
        active_at=at,
        reason="conditions hold",
        entered_at={"Normal": T0, "Triggered": at},
    )


def pending(at: float) -> ObjectState:
    return ObjectState(
        state=RuleState.ACTIVE_ACTIONS_PENDING,
        since=at,
        active_at=T0 + 1,
        reason="actions planned",
        entered_at={"Normal": T0, "Triggered": T0 + 1, "ActiveActionsPending": at},
    )


# --- CRDs -------------------------------------------------------------------------------------------


def test_crds_are_established_with_status_subresource_and_printer_columns(api: KubeApi) -> None:
    columns = {}
    for name in CRD_NAMES:
        crd = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conditions = {condition["type"]: condition["status"] for condition in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", name
        assert conditions.get("NonStructuralSchema") is None, name
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}, name
        columns[crd["spec"]["names"]["kind"]] = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns["AutopilotRuleObject"][:4] == ["Rule", "Object", "State", "Age"]
    assert {"Valid", "Objects", "Age"} <= set(columns["AutopilotRule"])
    assert {"Approval", "Action", "Age"} <= set(columns["ActionApproval"])


async def test_printer_columns_render_the_stored_state(crds: KubeControlPlane, api_client: ApiClient) -> None:
    await StateStore(kube=_kube(api_client)).save(
        rule="table-rule", object_key="kafka/data-kafka-0", object_kind=PVC, state=triggered(T0 + 5)
    )
    rows = table_rows(crds, f"{OBJECTS_PATH}?labelSelector={RULE_LABEL}%3Dtable-rule")
    assert len(rows) == 1
    assert rows[0]["Rule"] == "table-rule"
    assert rows[0]["Object"] == "kafka/data-kafka-0"
    assert rows[0]["State"] == "Triggered"
    assert rows[0]["Name"] == object_name(rule="table-rule", object_key="kafka/data-kafka-0")


# --- save and load ----------------------------------------------------------------------------------


async def test_save_then_load_from_another_store_round_trips_exactly(api_client: ApiClient, api: KubeApi) -> None:
    rule, key = "roundtrip-rule", "kafka/data-kafka-1"
    state = ObjectState(
        state=RuleState.ACTIVE_ACTIONS_TAKEN,
        since=T0 + 30.000123,
        cooldown_until=T0 + 330.000123,
        approved_at=T0 + 12.5,
        reason="actions verified",
        entered_at={"Normal": T0, "Triggered": T0 + 1.1, "ActiveActionsTaken": T0 + 30.000123},
    )
    last = LastAction(name=RESIZE, before="10Gi", after="15Gi", started_at=T0 + 20.2, finished_at=T0 + 30, outcome="ok")
    writer = StateStore(kube=_kube(api_client))
    await writer.save(rule=rule, object_key=key, object_kind=PVC, state=normal(T0))
    await writer.save(rule=rule, object_key=key, object_kind=PVC, state=state, last_action=last)
    await writer.save(rule=rule, object_key="kafka/data-kafka-2", object_kind=PVC, state=normal(T0 + 1))
    await StateStore(kube=_kube(api_client)).save(
        rule="another-rule", object_key=key, object_kind=PVC, state=normal(T0)
    )

    reader = StateStore(kube=_kube(api_client))
    loaded = await reader.load(rule)
    assert loaded == {key: state, "kafka/data-kafka-2": normal(T0 + 1)}
    assert await reader.status(rule, key) == StoredStatus(
        state=state, last_action=last, recent_actions=(RecentAction(name=RESIZE, started_at=T0 + 20.2),)
    )

    stored = api.get(f"{OBJECTS_PATH}/{object_name(rule=rule, object_key=key)}")
    assert stored["spec"]["objectNamespace"] == "kafka"
    assert stored["spec"]["objectName"] == "data-kafka-1"
    assert stored["metadata"]["labels"][OBJECT_KIND_LABEL] == PVC
    assert stored["status"]["since"] == "2023-11-14T22:13:50.125123Z"


async def test_a_dry_run_agent_replaces_no_crd_and_keeps_its_states_apart(api_client: ApiClient, api: KubeApi) -> None:
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    versions = {name: api.get(f"{crd_path}/{name}")["metadata"]["resourceVersion"] for name in CRD_NAMES}
    await install_crds(_kube(api_client), replace_existing=False)
    assert {name: api.get(f"{crd_path}/{name}")["metadata"]["resourceVersion"] for name in CRD_NAMES} == versions

    rule, key = "dry-run-apart-rule", "kafka/data-kafka-0"
    cooling = ObjectState(state=RuleState.ACTIVE_ACTIONS_TAKEN, since=T0, cooldown_until=T0 + 300)
    last = LastAction(name=RESIZE, started_at=T0, finished_at=T0 + 1, outcome="DryRun")
    await StateStore(kube=_kube(api_client), dry_run=True).save(
        rule=rule, object_key=key, object_kind=PVC, state=cooling, last_action=last
    )
    live = StateStore(kube=_kube(api_client))
    assert await live.load(rule) == {}
    assert not [start for start in (await live.action_history()).starts if start.rule == rule]
    await live.save(rule=rule, object_key=key, object_kind=PVC, state=normal(T0 + 2))
    assert await StateStore(kube=_kube(api_client), dry_run=True).load(rule) == {key: cooling}
    stored = api.get(f"{OBJECTS_PATH}/{object_name(rule=rule, object_key=key, dry_run=True)}")
    assert stored["spec"]["mode"] == "dry-run", "the CRD's schema must keep spec.mode"


async def test_a_rule_without_objects_loads_empty(api_client: ApiClient) -> None:
    assert await StateStore(kube=_kube(api_client)).load("no-such-rule") == {}


# --- two replicas -----------------------------------------------------------------------------------


async def test_two_replicas_saving_from_one_state_exactly_one_wins(api_client: ApiClient) -> None:
    rule, key = "race-rule", "kafka/data-kafka-0"
    await StateStore(kube=_kube(api_client)).save(rule=rule, object_key=key, object_kind=PVC, state=triggered(T0 + 1))
    replica_a, replica_b = StateStore(kube=_kube(api_client)), StateStore(kube=_kube(api_client))
    assert await replica_a.load(rule) == await replica_b.load(rule) == {key: triggered(T0 + 1)}

    # Sequential: B's write is based on a state A has already moved on from.
    await replica_a.save(rule=rule, object_key=key, object_kind=PVC, state=pending(T0 + 60))
    with pytest.raises(StateConflictError, match="another writer"):
        await replica_b.save(rule=rule, object_key=key, object_kind=PVC, state=pending(T0 + 61))
    assert (await StateStore(kube=_kube(api_client)).load(rule))[key] == pending(T0 + 60)

    # Concurrent: both load, both write at once; the API server lets exactly one through.
    for round_ in range(5):
        contenders = [StateStore(kube=_kube(api_client)) for _ in range(2)]
        for store in contenders:
            await store.load(rule)
        wanted = [triggered(T0 + 100 * round_ + index) for index in range(2)]
        outcomes = await asyncio.gather(
            *(
                store.save(rule=rule, object_key=key, object_kind=PVC, state=state)
                for store, state in zip(contenders, wanted, strict=True)
            ),
            return_exceptions=True,
        )
        winners = [state for state, outcome in zip(wanted, outcomes, strict=True) if outcome is None]
        losers = [outcome for outcome in outcomes if outcome is not None]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1 and isinstance(losers[0], StateConflictError), outcomes
        assert (await StateStore(kube=_kube(api_client)).load(rule))[key] == winners[0]


async def test_two_replicas_deciding_to_act_apply_the_action_once(api_client: ApiClient) -> None:
    """The scenario the product promises: both replicas see the same Triggered state and decide to
    resize; each records the action in flight before applying it; only one may apply it."""
    rule = "act-once-rule"
    applied: list[tuple[str, str]] = []

    async def replica(store: StateStore, *, name: str, key: str) -> None:
        try:
            await store.record_in_flight(
                rule=rule,
                object_key=key,
                object_kind=PVC,
                action=RESIZE,
                requested_at=T0 + 60,
                detail={"to": "15Gi", "by": name},
                state=pending(T0 + 60),
            )
        except StateConflictError:
            return  # the other replica owns this cause now
        applied.append((key, name))

    keys = [f"kafka/data-kafka-{index}" for index in range(6)]
    for key in keys:
        await StateStore(kube=_kube(api_client)).save(
            rule=rule, object_key=key, object_kind=PVC, state=triggered(T0 + 1)
        )
    stores = {name: StateStore(kube=_kube(api_client)) for name in ("replica-a", "replica-b")}
    for store in stores.values():
        assert set(await store.load(rule)) == set(keys)
    await asyncio.gather(
        *(replica(store, name=name, key=key) for key in keys for name, store in stores.items()),
    )
    assert sorted(key for key, _ in applied) == keys  # each object acted on exactly once
    for key, name in applied:
        record = await StateStore(kube=_kube(api_client)).in_flight(rule, key)
        assert record is not None and record.detail["by"] == name


async def test_a_metadata_only_change_is_retried_not_reported_as_a_conflict(
    api_client: ApiClient, api: KubeApi
) -> None:
    rule, key = "label-rule", "kafka/data-kafka-0"
    store = StateStore(kube=_kube(api_client))
    await store.save(rule=rule, object_key=key, object_kind=PVC, state=triggered(T0 + 1))
    api.merge_patch(
        f"{OBJECTS_PATH}/{object_name(rule=rule, object_key=key)}",
        {"metadata": {"labels": {"team": "storage"}}},
    )
    await store.save(rule=rule, object_key=key, object_kind=PVC, state=pending(T0 + 60))
    assert (await StateStore(kube=_kube(api_client)).load(rule))[key] == pending(T0 + 60)


async def test_a_store_that_never_read_a_pair_cannot_overwrite_its_state(api_client: ApiClient) -> None:
    rule, key = "blind-rule", "kafka/data-kafka-0"
    await StateStore(kube=_kube(api_client)).save(rule=rule, object_key=key, object_kind=PVC, state=triggered(T0 + 1))
    with pytest.raises(StateConflictError):
        await StateStore(kube=_kube(api_client)).save(rule=rule, object_key=key, object_kind=PVC, state=normal(T0 + 2))
    assert (await StateStore(kube=_kube(api_client)).load(rule))[key] == triggered(T0 + 1)


# --- restarts ---------------------------------------------------------------------------------------


async def test_the_in_flight_record_survives_a_restart_and_blocks_a_second_apply(
    crds: KubeControlPlane, api_client: ApiClient
) -> None:
    rule, key = "restart-rule", "kafka/data-kafka-3"
    before = StateStore(kube=_kube(api_client))
    await before.save(rule=rule, object_key=key, object_kind=PVC, state=triggered(T0 + 1))
    recorded = await before.record_in_flight(
        rule=rule,
        object_key=key,
        object_kind=PVC,
        action=RESIZE,
        requested_at=T0 + 60.5,
        detail={"from": "10Gi", "to": "15Gi"},
        state=pending(T0 + 60.5),
    )
    del before

    # A new process: a new client and a new store, nothing carried over in memory.
    async with await _new_client(crds.kubeconfig_path) as restarted_client:
        after = StateStore(kube=_kube(restarted_client))
        assert await after.in_flight(rule, key) == recorded
        assert (await after.load(rule))[key] == pending(T0 + 60.5)
        with pytest.raises(ActionInFlightError) as caught:
            await after.record_in_flight(
                rule=rule, object_key=key, object_kind=PVC, action=RESIZE, requested_at=T0 + 90
            )
        assert caught.value.in_flight == recorded

        # Verified: clear the record and store the outcome in one write.
        taken = ObjectState(state=RuleState.ACTIVE_ACTIONS_TAKEN, since=T0 + 95, cooldown_until=T0 + 395)
        outcome = LastAction(name=RESIZE, before="10Gi", after="15Gi", started_at=T0 + 60.5, finished_at=T0 + 95)
        await after.clear_in_flight(rule=rule, object_key=key, object_kind=PVC, state=taken, last_action=outcome)
        assert await StateStore(kube=_kube(restarted_client)).status(rule, key) == StoredStatus(
            state=taken, last_action=outcome, recent_actions=(RecentAction(name=RESIZE, started_at=T0 + 60.5),)
        )
        assert await StateStore(kube=_kube(restarted_client)).in_flight(rule, key) is None


async def test_saving_a_state_keeps_the_in_flight_record(api_client: ApiClient) -> None:
    rule, key = "keep-rule", "kafka/data-kafka-0"
    store = StateStore(kube=_kube(api_client))
    record = await store.record_in_flight(
        rule=rule, object_key=key, object_kind=PVC, action=RESIZE, requested_at=T0, state=pending(T0)
    )
    in_progress = ObjectState(state=RuleState.ACTIVE_ACTIONS_IN_PROGRESS, since=T0 + 1, reason="executor started")
    await store.save(rule=rule, object_key=key, object_kind=PVC, state=in_progress)
    assert await StateStore(kube=_kube(api_client)).status(rule, key) == StoredStatus(
        state=in_progress, in_flight=record
    )


async def test_action_history_lists_every_rules_recent_starts_and_in_flight_records(api_client: ApiClient) -> None:
    """What the guardrail policy counts from: one list, all rules, as a restarted agent would read it."""
    store = StateStore(kube=_kube(api_client))
    taken = ObjectState(state=RuleState.ACTIVE_ACTIONS_TAKEN, since=T0 + 9, reason="actions verified")
    for n in range(3):
        last = LastAction(name=RESIZE, started_at=T0 + 100 * n, finished_at=T0 + 100 * n + 9, outcome="verified")
        await store.save(rule="history-a", object_key="kafka/h-0", object_kind=PVC, state=taken, last_action=last)
    await store.record_in_flight(
        rule="history-b", object_key="kafka/h-0", object_kind=PVC, action=RESIZE, requested_at=T0 + 500
    )
    history = await StateStore(kube=_kube(api_client)).action_history()
    assert isinstance(history, ActionHistory)
    mine = sorted((start.rule, start.object, start.at) for start in history.starts if start.rule.startswith("history-"))
    assert mine == [
        ("history-a", "kafka/h-0", T0),
        ("history-a", "kafka/h-0", T0 + 100),
        ("history-a", "kafka/h-0", T0 + 200),
        ("history-b", "kafka/h-0", T0 + 500),
    ]
    assert ("history-b", "kafka/h-0") in history.in_flight
    assert ("history-a", "kafka/h-0") not in history.in_flight


# --- AutopilotRules in the cluster ------------------------------------------------------------------


def rule_manifest(name: str, *, action: str = RESIZE) -> dict[str, Any]:
    return {
        "apiVersion": "kafka-autopilot.io/v1alpha1",
        "kind": "AutopilotRule",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": "kafka"}},
            "pollInterval": "5s",
            "actionsCoolDownPeriod": 600,
            "enforcement": "approvalRequired",
            "conditions": {
                "for": "1m",
                "expressions": [
                    {
                        "key": "100 * (px_volume_usage_bytes / px_volume_capacity_bytes)",
                        "operator": "Gt",
                        "values": ["80"],
                    }
                ],
            },
            "actions": [{"name": action, "params": {"scalepercentage": "50", "maxsize": "1Ti"}}],
            "actionWindow": [{"days": ["Sat", "Sun"], "start": "02:00", "end": "05:00"}],
            "identityLabels": [["namespace", "pvc"]],
        },
    }


async def test_cluster_rules_are_listed_parsed_and_given_a_valid_condition(
    crds: KubeControlPlane, api_client: ApiClient, api: KubeApi
) -> None:
    api.create(RULES_PATH, rule_manifest("cluster-resize"))
    api.create(RULES_PATH, rule_manifest("cluster-broken", action="openstorage.io.action.volume/resise"))

    listed = dict(await list_cluster_rules(_kube(api_client)))
    assert {"cluster-resize", "cluster-broken"} <= set(listed)
    good = parse_rules(listed["cluster-resize"], file=cluster_rule_file("cluster-resize"), catalog=CATALOG)
    assert [str(problem) for problem in good.problems] == []
    (rule,) = good.rules
    assert rule.name == "cluster-resize"
    assert rule.approval_required
    assert rule.poll_interval_seconds == 5
    assert rule.cooldown_seconds == 600
    assert rule.identity_labels == (("namespace", "pvc"),)
    bad = parse_rules(listed["cluster-broken"], file=cluster_rule_file("cluster-broken"), catalog=CATALOG)
    assert bad.rules == ()
    assert "cluster:autopilotrule/cluster-broken:" in str(bad.errors[0])
    assert 'did you mean "openstorage.io.action.volume/resize"' in str(bad.errors[0])

    generations = {found.name: found.generation for found in await read_cluster_rules(_kube(api_client))}
    for name, result in (("cluster-resize", good), ("cluster-broken", bad)):
        await set_rule_status(
            _kube(api_client), name=name, problems=result.problems, generation=generations[name], now=T0, objects=0
        )
    broken = api.get(f"{RULES_PATH}/cluster-broken")["status"]
    (condition,) = broken["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Valid", "False", "InvalidRule")
    assert "resise" in condition["message"]
    assert broken["observedGeneration"] == generations["cluster-broken"]
    resize = api.get(f"{RULES_PATH}/cluster-resize")["status"]
    assert resize["conditions"][0]["status"] == "True"

    rows = {row["Name"]: row for row in table_rows(crds, RULES_PATH)}
    assert rows["cluster-broken"]["Valid"] == "False"
    assert rows["cluster-resize"]["Valid"] == "True"
    assert rows["cluster-resize"]["Enforcement"] == "approvalRequired"
