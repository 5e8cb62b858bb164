"""The sandbox in each deployment shape, then the agent in the shapes users run besides the default
StatefulSet: Strimzi node pools (broker ids 10-13, our stand-in of Strimzi's CRDs with the operator twin)
and the Bitnami chart (`broker.minId: 100`: pod kafka-broker-0 is broker 100). The default shape runs the
agent's scenarios in test_agent_e2e and test_rebalance_e2e.

One sandbox per shape (module-scoped, indirect parametrization): three bring-ups in all, the sandbox's own
checks and the agent's scenarios sharing them. The sandbox checks run first in each shape, before any
agent starts: its status names the shape, its brokers and neighbours; Kafka's own metadata lists the
shape's broker ids at the pods' IPs (what lets the agent learn a pod's broker id from Kafka instead of
from its name); the shape's controller brings a deleted broker pod back.

Then one live agent per shape (strimzi, bitnami), with the shape's shipped rules (`rules_dir` of the
sandbox status) unchanged. In order, per shape:
- a failed node: its broker runs elsewhere; the neighbour's pod and VolumeAttachment and the DaemonSet
  pod on that node are untouched; once the node is back, the agent's cordon is gone within 60 s;
- a partitioned node whose broker still serves: no force-delete, the node never stays unschedulable;
- a node that flaps back within the grace: left alone, no action recorded;
- a broker restarted: its preferred leadership restored;
- in strimzi, the live agent stepping aside: a dry-run agent records the KafkaNodePool patch a full
  volume calls for, and nothing changes;
- a volume over the threshold: resized in bitnami; in strimzi, grown through its KafkaNodePool (the
  operator owns those PVCs): one broker's full volume grows the pool 400Gi -> 800Gi, a second broker's
  800Gi -> 1Ti (capped), a third is declined at maxsize; every PVC of the pool follows (the operator
  twin), and the apiserver's audit log shows the agent patching the pool twice and no PVC;
- in bitnami, a storage pool past 70%: expanded by the shipped pool rule;
- two broker nodes failing at once, with a topic at min.insync.replicas 2 on both: the min-ISR guard,
  counting every failing node, holds the reschedule and nothing is force-deleted.
Latencies are printed for the closing notes (pytest -s shows them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient
from e2e_support import (
    AGENTS_OWN_RESOURCES,
    PODS,
    PVCS,
    AgentProcess,
    agent_mutations,
    audit_log_entries,
    broker_moves_off_failed_node,
    capacity,
    pods_on,
    records,
    requested,
)
from helpers import eventually

from agent.adapters.clock import WallClock
from agent.adapters.prometheus import PrometheusClient
from agent.core.quantity import parse_bytes
from sandbox import neighbours, shapes, workload
from sandbox.environment import REPO, Sandbox
from sandbox.kafka import run_sync
from sandbox.kube import KubeApi, KubeApiError
from sandbox.scenarios import (
    away_from_preferred,
    create_topic,
    imbalance,
    restart_broker,
    schedulable_within,
    view,
    wait_for_visible_imbalance,
)

pytestmark = pytest.mark.sandbox

SHAPES = pytest.mark.parametrize("shaped_sandbox", shapes.SHAPE_NAMES, indirect=True, scope="module")
SHAPED = pytest.mark.parametrize("shaped_sandbox", ["strimzi", "bitnami"], indirect=True, scope="module")
BITNAMI = pytest.mark.parametrize("shaped_sandbox", ["bitnami"], indirect=True, scope="module")
RULE_NAMES = ("kafka-node-failure.yaml", "kafka-leader-rebalance.yaml", "kafka-resize.yaml", "kafka-pool-expand.yaml")
POOL = (
    f"/apis/{shapes.STRIMZI_GROUP}/{shapes.STRIMZI_VERSION}/namespaces/{workload.NAMESPACE}"
    f"/kafkanodepools/{shapes.STRIMZI_POOL}"
)
TOPIC = "shapes-e2e"
GI = 1024**3
TI = 1024**4


@pytest.fixture(scope="module")
def api(shaped_sandbox: Sandbox) -> KubeApi:
    return shaped_sandbox.kube.api()


@pytest.fixture(scope="module")
def agent(shaped_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    rules_dir = Path(shaped_sandbox.status()["rules_dir"])
    with AgentProcess(
        sandbox=shaped_sandbox,
        rules=[rules_dir / name for name in RULE_NAMES],
        audit_path=tmp_path_factory.mktemp("agent") / "audit.jsonl",
    ) as process:
        yield process


def brokers(sandbox: Sandbox) -> list[dict[str, Any]]:
    return sorted(sandbox.status()["brokers"], key=lambda broker: broker["broker_id"])


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def uid_of(api: KubeApi, namespace: str, name: str) -> str:
    return str(api.get(pod_path(namespace, name))["metadata"]["uid"])


async def _metadata_brokers(bootstrap: str) -> dict[int, str]:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return {int(b.nodeId): str(b.host) for b in client.cluster.brokers()}
    finally:
        await client.close()


def kafka_hosts(sandbox: Sandbox) -> dict[int, str]:
    return run_sync(_metadata_brokers(sandbox.kafka.bootstrap_servers))


def pod_ips(api: KubeApi, shape: shapes.Shape) -> dict[str, str]:
    pods = api.get(f"{PODS}?labelSelector={shape.label_selector}")["items"]
    return {p["metadata"]["name"]: p["status"].get("podIP", "") for p in pods if p["status"].get("phase") == "Running"}


def strimzi_absent(sandbox: Sandbox, api: KubeApi) -> bool:
    """Outside the strimzi shape: no operator twin runs and no node pool exists."""
    try:
        api.get(POOL)
    except KubeApiError as error:
        return error.status == 404 and "operator-twin" not in sandbox.status()["processes"]
    return False


# --- the sandbox in each shape, before any agent ---------------------------------------------------


@SHAPES
def test_status_json_names_the_shape_its_brokers_neighbours_and_rules(shaped_sandbox: Sandbox) -> None:
    status = json.loads(json.dumps(shaped_sandbox.status()))
    shape = shaped_sandbox.definition
    assert status["up"] is True
    assert status["shape"] == shape.name
    assert status["rules_dir"] == str(REPO / shape.rules_dir)
    assert sorted(b["broker_id"] for b in status["brokers"]) == list(shape.broker_ids)
    for broker in status["brokers"]:
        assert broker["pod"] == shape.pod_name(broker["broker_id"])
        assert broker["namespace"] == workload.NAMESPACE
        assert broker["pvcs"] == [shape.pvc_name(broker["broker_id"])]
        assert broker["node"] in shaped_sandbox.kube.node_names
    broker_nodes = {b["node"] for b in status["brokers"]}
    assert len(broker_nodes) == 4
    assert {n["node"] for n in status["neighbours"]} == broker_nodes
    for neighbour in status["neighbours"]:
        assert neighbour["namespace"] == neighbours.NAMESPACE
        assert neighbour["pvc"] == f"data-{neighbour['pod']}"
        assert "volume_attachment" in neighbour


@SHAPES
def test_kafka_metadata_lists_the_shapes_broker_ids_at_their_pod_ips(shaped_sandbox: Sandbox, api: KubeApi) -> None:
    shape = shaped_sandbox.definition
    ips = pod_ips(api, shape)
    hosts = kafka_hosts(shaped_sandbox)
    assert sorted(hosts) == list(shape.broker_ids)
    assert {b: hosts[b] for b in shape.broker_ids} == {b: ips[shape.pod_name(b)] for b in shape.broker_ids}
    assert all(host.startswith("127.") and host != "127.0.0.1" for host in hosts.values())


@SHAPES
def test_every_broker_node_has_a_neighbour_with_a_volume_and_a_daemonset_pod(
    shaped_sandbox: Sandbox, api: KubeApi
) -> None:
    broker_nodes = {b["node"] for b in shaped_sandbox.status()["brokers"]}
    pods = api.get(f"/api/v1/namespaces/{neighbours.NAMESPACE}/pods")["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]

    def nodes_of(app: str) -> set[str]:
        return {p["spec"]["nodeName"] for p in running if p["metadata"]["labels"].get("app") == app}

    assert broker_nodes <= nodes_of(neighbours.STATEFULSET)
    assert broker_nodes <= nodes_of(neighbours.DAEMONSET)
    claims = api.get(f"/api/v1/namespaces/{neighbours.NAMESPACE}/persistentvolumeclaims")["items"]
    assert len([c for c in claims if c["status"].get("phase") == "Bound"]) == 4
    assert {c["spec"]["storageClassName"] for c in claims} == {workload.STORAGE_CLASS}


@SHAPES
def test_stop_broker_takes_the_shapes_broker_id(shaped_sandbox: Sandbox) -> None:
    broker = shaped_sandbox.definition.broker_ids[-1]
    assert "stopped" in shaped_sandbox.fault("stop-broker", str(broker))
    assert not shaped_sandbox.kafka.broker_running(broker)
    shaped_sandbox.fault("start-broker", str(broker))
    eventually(lambda: shaped_sandbox.kafka.broker_running(broker), timeout=30, what=f"broker {broker} running")
    shaped_sandbox.kafka.wait_for_brokers([broker])
    with pytest.raises(ValueError):
        shaped_sandbox.fault("stop-broker", "7")


@SHAPES
def test_strimzi_pods_and_claims_are_named_labelled_and_owned_as_strimzi_does(
    shaped_sandbox: Sandbox, api: KubeApi
) -> None:
    if shaped_sandbox.definition.name != "strimzi":
        assert strimzi_absent(shaped_sandbox, api)
        return
    pool = api.get(POOL)
    assert pool["status"]["nodeIds"] == list(shapes.STRIMZI_NODE_IDS)
    kafka_uid = api.get(POOL.replace(f"kafkanodepools/{shapes.STRIMZI_POOL}", "kafkas/my-cluster"))["metadata"]["uid"]
    for node_id in shapes.STRIMZI_NODE_IDS:
        pod = api.get(f"{PODS}/my-cluster-brokers-{node_id}")
        labels = pod["metadata"]["labels"]
        assert labels["strimzi.io/cluster"] == "my-cluster"
        assert labels["strimzi.io/pool-name"] == "brokers"
        assert labels["strimzi.io/broker-role"] == "true"
        assert labels["strimzi.io/kind"] == "Kafka"
        assert labels["strimzi.io/name"] == "my-cluster-kafka"
        assert [o["kind"] for o in pod["metadata"]["ownerReferences"]] == ["StrimziPodSet"]
        claim = api.get(f"{PVCS}/data-0-my-cluster-brokers-{node_id}")
        assert claim["metadata"]["annotations"]["strimzi.io/delete-claim"] == "true"
        assert [(o["kind"], o["uid"]) for o in claim["metadata"]["ownerReferences"]] == [("Kafka", kafka_uid)]


@SHAPES
def test_a_deleted_broker_pod_comes_back_and_its_broker_advertises_the_new_pod_ip(
    shaped_sandbox: Sandbox, api: KubeApi
) -> None:
    """The shape's own controller (StatefulSet, or the operator twin as StrimziPodSet) recreates the pod."""
    shape = shaped_sandbox.definition
    broker = shape.broker_ids[0]
    name = shape.pod_name(broker)
    old_uid = api.get(f"{PODS}/{name}")["metadata"]["uid"]
    api.delete(f"{PODS}/{name}")

    def back() -> dict[str, Any] | None:
        found = api.get(f"{PODS}?fieldSelector=metadata.name={name}")["items"]
        fresh = [p for p in found if p["metadata"]["uid"] != old_uid and p["status"].get("phase") == "Running"]
        return fresh[0] if fresh and fresh[0]["status"].get("podIP") else None

    pod: dict[str, Any] = eventually(back, timeout=90, what=f"pod {name} recreated and Running")
    new_ip = pod["status"]["podIP"]
    eventually(
        lambda: kafka_hosts(shaped_sandbox).get(broker) == new_ip, timeout=120, what=f"broker {broker} at {new_ip}"
    )


# --- the agent in strimzi and bitnami -------------------------------------------------------------


@SHAPED
def test_a_failed_nodes_broker_runs_elsewhere_and_nothing_else_there_is_touched(
    shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    sandbox = shaped_sandbox
    broker = brokers(sandbox)[1]
    node = broker["node"]
    neighbour = next(n for n in sandbox.status()["neighbours"] if n["node"] == node)
    bystanders = {
        key: uid for key, uid in pods_on(api, node).items() if key != f"{broker['namespace']}/{broker['pod']}"
    }
    assert f"{neighbour['namespace']}/{neighbour['pod']}" in bystanders
    assert len(bystanders) >= 2, bystanders  # the neighbour and a DaemonSet pod at least
    try:
        moved, latency = broker_moves_off_failed_node(
            sandbox,
            api,
            broker=broker["broker_id"],
            node=node,
            timeout=240,
            pod=broker["pod"],
            namespace=broker["namespace"],
        )
        print(
            f"\nLATENCY {sandbox.shape}: node NotReady -> broker {broker['broker_id']} Running elsewhere:"
            f" {latency:.1f}s"
        )
        assert moved["spec"]["nodeName"] != node
        eventually(
            lambda: sandbox.kafka.broker_running(broker["broker_id"]),
            timeout=90,
            what=f"broker {broker['broker_id']} following its pod",
        )
        verified = eventually(
            lambda: records(agent, "action-verified", node),
            timeout=120,
            what="the reschedule verified",
        )
        assert f"broker {broker['broker_id']} registered" in verified[0]["reason"], verified[0]
        assert {key: uid for key, uid in pods_on(api, node).items() if key in bystanders} == bystanders
        if neighbour["volume_attachment"]:
            assert api.get(f"/apis/storage.k8s.io/v1/volumeattachments/{neighbour['volume_attachment']}")
    finally:
        sandbox.fault("recover-node", node)
    took = schedulable_within(api, node, seconds=60, what=f"{node} back and uncordoned by the agent")
    print(f"LATENCY {sandbox.shape}: node recovered -> schedulable again: {took:.1f}s")
    released = [r for r in agent.records() if r["object"] == node and r.get("after") == "the agent's own marks undone"]
    assert released and released[-1]["event"] == "action-verified", released


@SHAPED
def test_a_partitioned_node_whose_broker_still_serves_is_left_running(
    shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    sandbox = shaped_sandbox
    broker = brokers(sandbox)[2]
    node = broker["node"]
    uid = uid_of(api, broker["namespace"], broker["pod"])
    sandbox.fault("partition-node", node)
    try:
        held = eventually(
            lambda: records(agent, "action-held", node),
            timeout=150,
            what="the reschedule held back",
        )
        assert "Kafka still sees" in held[0]["reason"], held[0]
        assert uid_of(api, broker["namespace"], broker["pod"]) == uid
        assert sandbox.kafka.broker_running(broker["broker_id"])
    finally:
        sandbox.fault("recover-node", node)
    took = schedulable_within(api, node, seconds=60, what=f"{node} schedulable after the partition")
    print(f"\nLATENCY {sandbox.shape}: partition recovered -> schedulable: {took:.1f}s")


@SHAPED
def test_a_node_that_flaps_back_within_the_grace_is_left_alone(
    shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    sandbox = shaped_sandbox
    broker = brokers(sandbox)[3]
    node = broker["node"]
    uid = uid_of(api, broker["namespace"], broker["pod"])
    sandbox.fault("fail-node", node)
    time.sleep(25)
    sandbox.fault("recover-node", node)
    schedulable_within(api, node, seconds=60, what=f"{node} Ready again")
    time.sleep(20)
    assert uid_of(api, broker["namespace"], broker["pod"]) == uid
    assert not api.get(f"/api/v1/nodes/{node}")["spec"].get("unschedulable")
    assert not [r for r in agent.records() if r["object"] == node and r["event"].startswith("action-")]


@SHAPED
def test_a_restarted_broker_gets_its_preferred_leadership_back(shaped_sandbox: Sandbox, agent: AgentProcess) -> None:
    sandbox = shaped_sandbox
    ids = [broker["broker_id"] for broker in brokers(sandbox)]
    assignment = {n: [ids[n % 4], ids[(n + 1) % 4], ids[(n + 2) % 4]] for n in range(8)}
    prometheus = PrometheusClient(url=sandbox.prometheus_url, clock=WallClock())
    create_topic(sandbox, TOPIC, assignment)
    eventually(
        lambda: not away_from_preferred(view(sandbox)), timeout=90, what=f"{TOPIC} led by its preferred replicas"
    )
    restarted = ids[0]
    restart_broker(sandbox, restarted)
    wait_for_visible_imbalance(sandbox, prometheus, restarted, topic=TOPIC)
    visible_at = time.monotonic()
    eventually(lambda: not away_from_preferred(view(sandbox)), timeout=150, what="balanced", interval=0.2)
    print(f"\nLATENCY {sandbox.shape}: imbalance visible -> balanced: {time.monotonic() - visible_at:.1f}s")
    eventually(lambda: imbalance(prometheus) == 0, timeout=60, what="the controller's imbalance back at 0")


STRIMZI = pytest.mark.parametrize("shaped_sandbox", ["strimzi"], indirect=True, scope="module")


@STRIMZI
def test_in_dry_run_the_pool_growth_is_recorded_and_nothing_changes(
    shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess, tmp_path: Path
) -> None:
    """The live agent steps aside; a dry-run agent with the shipped resize rule records the KafkaNodePool
    patch a full Strimzi volume calls for, and makes none."""
    sandbox = shaped_sandbox
    rules_dir = Path(sandbox.status()["rules_dir"])
    claim = sandbox.definition.pvc_name(shapes.STRIMZI_NODE_IDS[3])
    key = f"{workload.NAMESPACE}/{claim}"
    twin = sandbox.twin_client()
    agent.stop()
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    try:
        with AgentProcess(
            sandbox=sandbox, rules=[rules_dir / "kafka-resize.yaml"], audit_path=tmp_path / "dry.jsonl", dry_run=True
        ) as dry:
            twin.set_used(namespace=workload.NAMESPACE, pvc=claim, used_bytes=int(400 * 0.82) * GI)
            planned = eventually(
                lambda: records(dry, "action-dry-run", key),
                timeout=60,
                what="the dry-run pool growth",
            )
            print(f"\nDRY-RUN strimzi: {planned[0]['after']}")
            assert "grows pool `brokers` volume 0 for 4 brokers" in planned[0]["after"], planned[0]
            recorded = [r["after"] for r in dry.records() if r["event"] == "mutation-recorded"]
            assert any("KafkaNodePool" in str(after) for after in recorded), recorded
            time.sleep(2)
            assert pool_size(api) == "400Gi"
            assert {requested(api, sandbox.definition.pvc_name(b)) for b in shapes.STRIMZI_NODE_IDS} == {"400Gi"}
            written = [
                (entry["objectRef"].get("resource"), entry["verb"])
                for entry in agent_mutations(audit_log_entries(sandbox), since=since)
                if entry["objectRef"].get("resource") not in AGENTS_OWN_RESOURCES
            ]
            assert written == [], written
    finally:
        twin.set_used(namespace=workload.NAMESPACE, pvc=claim, used_bytes=40 * GI)
        # Until Prometheus has scraped the emptied volume, a fresh live agent would still read it 82% full
        # and grow the pool the next test starts from.
        prometheus = PrometheusClient(url=sandbox.prometheus_url, clock=WallClock())
        usage = f'px_volume_usage_bytes{{namespace="{workload.NAMESPACE}",pvc="{claim}"}}'
        eventually(
            lambda: [s.value for s in prometheus.instant_query(usage)] == [40 * GI],
            timeout=60,
            what=f"Prometheus reading {claim} at 40Gi used",
        )
        agent.start()


@SHAPED
def test_a_full_volume_is_resized_itself_or_through_its_owner(
    shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    sandbox = shaped_sandbox
    if sandbox.shape == "strimzi":
        the_pool_grows_400gi_800gi_1ti_then_is_at_maxsize(sandbox, api, agent)
        return
    broker = brokers(sandbox)[0]
    (claim,) = broker["pvcs"]
    path = f"/api/v1/namespaces/{broker['namespace']}/persistentvolumeclaims/{claim}"
    gib = parse_bytes(api.get(path)["status"]["capacity"]["storage"]) // GI
    sandbox.twin_client().set_used(namespace=broker["namespace"], pvc=claim, used_bytes=int(gib * 0.82) * GI)
    doubled = f"{2 * gib}Gi"
    eventually(
        lambda: api.get(path)["status"]["capacity"]["storage"] == doubled, timeout=120, what=f"{claim} at {doubled}"
    )


def pool_size(api: KubeApi) -> str:
    return str(api.get(POOL)["spec"]["storage"]["volumes"][0]["size"])


def fill_and_see_the_pool_grow(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess, *, claim: str, full_gib: int, grown: str, since: str
) -> None:
    """Fill `claim` (of `full_gib`) to 82%: the agent patches the pool's volume to `grown` (the latency is
    printed), every PVC of the pool follows, and the resize is verified, its record saying what grew."""
    claims = [sandbox.definition.pvc_name(b) for b in shapes.STRIMZI_NODE_IDS]
    crossed = time.time()
    sandbox.twin_client().set_used(namespace=workload.NAMESPACE, pvc=claim, used_bytes=int(full_gib * 0.82) * GI)
    eventually(lambda: pool_size(api) == grown, timeout=120, what=f"KafkaNodePool volume 0 at {grown}")
    patches = [
        entry
        for entry in agent_mutations(audit_log_entries(sandbox), since=since)
        if entry["objectRef"].get("resource") == "kafkanodepools"
    ]
    patched_at = datetime.fromisoformat(patches[-1]["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
    print(f"\nLATENCY strimzi: {claim} past 80% -> KafkaNodePool patched to {grown}: {patched_at - crossed:.1f}s")
    eventually(
        lambda: {requested(api, c) for c in claims} == {grown} and {capacity(api, c) for c in claims} == {grown},
        timeout=120,
        what=f"every PVC of the pool at {grown}",
    )
    key = f"{workload.NAMESPACE}/{claim}"
    verified = eventually(
        lambda: records(agent, "action-verified", key),
        timeout=30,
        what=f"the resize of {claim} verified",
    )
    assert "grows pool `brokers` volume 0 for 4 brokers" in verified[0]["after"], verified[0]


def the_pool_grows_400gi_800gi_1ti_then_is_at_maxsize(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    """The shipped resize rule on Strimzi's PVCs: a full broker volume grows the KafkaNodePool (each time a
    new broker's volume, its own object: no cooldown to wait), the operator twin grows every PVC of the
    pool, and the agent patches the pool only, never a PVC."""
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    claims = [sandbox.definition.pvc_name(b) for b in shapes.STRIMZI_NODE_IDS]
    assert pool_size(api) == "400Gi"
    fill_and_see_the_pool_grow(sandbox, api, agent, claim=claims[0], full_gib=400, grown="800Gi", since=since)
    fill_and_see_the_pool_grow(sandbox, api, agent, claim=claims[1], full_gib=800, grown="1Ti", since=since)
    sandbox.twin_client().set_used(namespace=workload.NAMESPACE, pvc=claims[2], used_bytes=int(1024 * 0.82) * GI)
    key = f"{workload.NAMESPACE}/{claims[2]}"
    declined = eventually(
        lambda: records(agent, "action-declined", key),
        timeout=60,
        what="the third resize declined at maxsize",
    )
    assert declined[0]["reason"] == "AtMaxSize: at maxsize 1Ti (current 1Ti)", declined[0]
    assert pool_size(api) == "1Ti"
    written = [
        (entry["objectRef"].get("resource"), entry["verb"])
        for entry in agent_mutations(audit_log_entries(sandbox), since=since)
        if entry["objectRef"].get("resource") not in AGENTS_OWN_RESOURCES
    ]
    assert written == [("kafkanodepools", "patch"), ("kafkanodepools", "patch")], written


@BITNAMI
def test_a_storage_pool_past_70_percent_is_expanded(shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    """The shipped pool rule on a pool the sandbox starts with (4 x 1Ti, 40% used): +50% fits in
    maxdrives 8, so two drives are added."""
    sandbox = shaped_sandbox
    twin = sandbox.twin_client()
    node = brokers(sandbox)[3]["node"]
    (pool,) = [p for p in twin.pools() if p["node"] == node]
    assert (pool["total_size"], pool["drive_count"]) == (4 * TI, 4), pool
    crossed = time.time()
    twin.set_pool_used(node=node, pool=pool["name"], used_bytes=int(pool["total_size"] * 0.75))

    def grown() -> dict[str, Any] | None:
        (found,) = [p for p in twin.pools() if p["node"] == node and p["name"] == pool["name"]]
        done = found["total_size"] > pool["total_size"] and found["last_operation"]["status"] == "OPERATION_SUCCESSFUL"
        return found if done else None

    expanded: dict[str, Any] = eventually(grown, timeout=150, what=f"pool {node}/{pool['name']} expanded", interval=1)
    print(f"\nLATENCY {sandbox.shape}: pool past 70% -> expanded (rule for: 30s): {time.time() - crossed:.1f}s")
    assert (expanded["total_size"], expanded["drive_count"]) == (6 * TI, 6), expanded
    key = f"{node}/{pool['name']}"
    verified = eventually(
        lambda: records(agent, "action-verified", key),
        timeout=30,
        what="the expansion verified",
    )
    assert [(r["before"], r["after"]) for r in verified] == [("4Ti", "6Ti by add-disk")], verified


@SHAPED
def test_two_nodes_failing_at_once_are_held_by_the_min_isr_guard(
    shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    sandbox = shaped_sandbox
    current = brokers(sandbox)
    first, second = current[1], current[2]
    assert first["node"] != second["node"]
    ids = [broker["broker_id"] for broker in current]
    create_topic(
        sandbox,
        "guarded",
        {0: [ids[0], first["broker_id"], second["broker_id"]]},
        configs={"min.insync.replicas": "2"},
    )
    uids = {b["pod"]: uid_of(api, b["namespace"], b["pod"]) for b in (first, second)}
    for broker in (first, second):
        sandbox.fault("fail-node", broker["node"])
    try:
        held = eventually(
            lambda: [
                r
                for r in agent.records()
                if r["event"] == "action-held"
                and r["object"] in (first["node"], second["node"])
                and "below min.insync.replicas" in r["reason"]
            ],
            timeout=180,
            what="the reschedule held by the min-ISR guard",
        )
        print(f"\nMIN-ISR GUARD {sandbox.shape}: {held[0]['reason']}")
        assert "guarded-0" in held[0]["reason"], held[0]
        assert {b["pod"]: uid_of(api, b["namespace"], b["pod"]) for b in (first, second)} == uids
    finally:
        for broker in (first, second):
            sandbox.fault("recover-node", broker["node"])
    for broker in (first, second):
        schedulable_within(api, broker["node"], seconds=60, what=f"{broker['node']} schedulable again")
