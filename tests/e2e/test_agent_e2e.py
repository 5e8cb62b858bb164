"""The agent at work against the sandbox, with the shipped rules unchanged.

One sandbox and one live agent for the module (resize, node failure, pool expansion and broker restart
rules); the tests run in order and form one story, the other scenarios filling the reference rule's two
5-minute cooldowns, which are waited out as the rule says:
- the reference table, step by step;
- a failed node's broker moves; a flapping node and a partitioned node are left alone;
- storage pools, served by the storage twin (a simulation of the storage layer) through its
  OpenStorage-SDK-shaped API: state is per object, so three pools at different starting points, each on
  its own node, cross 70% together and each takes one step of the pool rule:
  - pool A, 4 x 3Ti (12Ti): +50% fits in maxdrives 8, so two drives are added (18Ti, add-disk);
  - pool B, 9 x 2Ti (18Ti, already past maxdrives): +50% wants 27Ti, so `auto` resizes the 9 drives,
    and the growth is capped at maxsize 20Ti (to the whole GiB per drive that fits);
  - pool C, 10 x 2Ti (20Ti, at maxsize): declined at maxsize, nothing sent to the storage layer;
- a restart in the middle of a resize does not resize twice;
- a stopped Prometheus leads to no action and shows in the rule's health;
- a broker restart asked for by the under-replicated rule waits for approval, then runs and verifies;
- the run backtested: `kafka-autopilot backtest` over this module's own Prometheus history replays the
  reference table's three decisions in the same order, each within one step of the live one, and
  plots it; a consumer of `--events-topic` gets each of its decisions as a CloudEvent;
  `kafka-autopilot explain` says why the volume at maxsize is left alone;
- dry-run makes the same decisions (a resize, a reschedule, a pool expansion) and mutates nothing but
  the agent's own objects; the storage layer gets no resize call.
Latencies measured here are printed for the closing notes (pytest -s shows them).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    GI,
    PODS,
    POOL_LABELS,
    POOL_RULE,
    PVCS,
    REPO,
    RULES,
    STATE_OBJECTS,
    TI,
    AgentProcess,
    PoolCase,
    action_count,
    agent_mutations,
    answer,
    audit_log_entries,
    broker_moves_off_failed_node,
    capacity,
    events_about,
    events_for,
    expanded,
    fill,
    finished_at,
    node_of,
    patch_times,
    pods_on,
    records,
    requested,
    resize_calls_for,
    set_usage,
    state_of,
    twin_pool,
    verified_resizes,
)
from helpers import distinct_colours, eventually
from metrics_text import metric_total

from agent.adapters.kafka import KafkaSettings
from agent.adapters.kafka.producer import read_topic
from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi, node_condition
from sandbox.scenarios import create_topic, schedulable_within

pytestmark = pytest.mark.sandbox

RULE_FILES = [RULES / "kafka-resize.yaml", RULES / "kafka-node-failure.yaml", RULES / "kafka-pool-expand.yaml"]
# The live agent also runs the broker-restart rule; the dry-run agent at the end runs RULE_FILES only.
LIVE_RULE_FILES = [*RULE_FILES, RULES / "kafka-under-replicated.yaml"]
RESTART_RULE = "kafka-under-replicated"
RESTART_TOPIC = "restart-e2e"
EVENTS_TOPIC = "kafka-autopilot-decisions"
BACKTEST_STEP = 10
APPROVALS = f"/apis/kafka-autopilot.io/v1alpha1/namespaces/{workload.NAMESPACE}/actionapprovals"
COOLDOWN = 300


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> KubeApi:
    return sandbox.kube.api()


@pytest.fixture(scope="module")
def agent(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    # The decisions topic, made as an operator would, before the agent publishes to it. Its
    # min.insync.replicas is 1, like the broker-restart case's topic: with the brokers' default of 2, the
    # restart's guard (rightly) holds that case, since the topic would drop below it.
    ids = sandbox.kafka.broker_ids
    create_topic(
        sandbox, EVENTS_TOPIC, {n: [ids[n % 4], ids[(n + 1) % 4], ids[(n + 2) % 4]] for n in range(4)},
        configs={"min.insync.replicas": "1"},
    )  # fmt: skip
    with AgentProcess(
        sandbox=sandbox,
        rules=LIVE_RULE_FILES,
        extra_args=["--events-topic", EVENTS_TOPIC],
        audit_path=tmp_path_factory.mktemp("agent") / "audit.jsonl",
    ) as process:
        yield process


def seconds_since(moment: float, timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() - moment


def wait_for_cooldown(api: KubeApi, rule: str, key: str) -> None:
    eventually(
        lambda: state_of(api, rule, key) != "ActiveActionsTaken", timeout=COOLDOWN + 60, what="the cooldown", interval=2
    )


# --- the reference table, step 1 ------------------------------------------------------------------


def test_step_1_resizes_400gi_to_800gi(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    claim = workload.pvc_name(0)
    # Prometheus has just started: let its history hold the claim at 400Gi for two backtest steps, so the
    # backtest at the end sees where the table starts (a resize takes seconds, less than a step).
    time.sleep(2 * BACKTEST_STEP)
    crossed = set_usage(sandbox, claim, 330)
    eventually(lambda: requested(api, claim) == "800Gi", timeout=60, what="the PVC request at 800Gi")
    eventually(lambda: capacity(api, claim) == "800Gi", timeout=60, what="capacity 800Gi")
    eventually(
        lambda: state_of(api, "kafka-resize", f"kafka/{claim}") == "ActiveActionsTaken", timeout=30, what="state Taken"
    )
    verified_once = eventually(lambda: verified_resizes(agent, claim), timeout=30, what="the resize verified")
    (patched,) = patch_times(sandbox, claim)
    print(f"\nLATENCY threshold-crossing sample -> PVC patch: {seconds_since(crossed, patched):.2f}s")
    assert [(r["before"], r["after"]) for r in verified_once] == [("400Gi", "800Gi")]
    eventually(
        lambda: any(e["reason"] == "ActionVerified" for e in events_for(api, claim)),
        timeout=30,
        what="the ActionVerified Event",
    )
    assert metric_total(agent.metrics(), "kafka_autopilot_actions_total", outcome="verified") > 0


# --- node failure ---------------------------------------------------------------------------------


def test_a_failed_nodes_broker_is_running_elsewhere(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    node = node_of(api, 1)
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    volume = api.get(f"{PVCS}/{workload.pvc_name(1)}")["spec"]["volumeName"]
    neighbour = next(n for n in sandbox.status()["neighbours"] if n["node"] == node)
    bystanders = {key: uid for key, uid in pods_on(api, node).items() if key != f"kafka/{workload.pod_name(1)}"}
    assert len(bystanders) >= 2, bystanders  # the neighbour and a DaemonSet pod at least
    try:
        moved, latency = broker_moves_off_failed_node(sandbox, api, broker=1, node=node, timeout=180)
        print(f"\nLATENCY node NotReady -> broker pod Running elsewhere: {latency:.1f}s")
        assert moved["spec"]["nodeName"] != node
        assert api.get(f"/api/v1/nodes/{node}")["spec"].get("unschedulable") is True
        eventually(lambda: sandbox.kafka.broker_running(1), timeout=60, what="broker 1 following its pod")
        eventually(lambda: state_of(api, "kafka-node-failure", node) == "ActiveActionsTaken", timeout=120, what="Taken")
        eventually(
            lambda: any(e["reason"] == "ActionVerified" for e in events_for(api, node)),
            timeout=30,
            what="the ActionVerified Event",
        )
        deleted = [
            entry["objectRef"].get("name")
            for entry in agent_mutations(audit_log_entries(sandbox), since=since)
            if entry["objectRef"].get("resource") == "volumeattachments" and entry["verb"] == "delete"
        ]
        assert deleted, "the agent deleted the failed node's VolumeAttachment"
        attachments = api.get("/apis/storage.k8s.io/v1/volumeattachments")["items"]
        assert [
            (a["spec"]["nodeName"], a.get("status", {}).get("attached"))
            for a in attachments
            if a["spec"]["source"].get("persistentVolumeName") == volume
        ] == [(moved["spec"]["nodeName"], True)], "the volume is attached to the new node only"
        assert {key: uid for key, uid in pods_on(api, node).items() if key in bystanders} == bystanders
        if neighbour["volume_attachment"]:
            assert api.get(f"/apis/storage.k8s.io/v1/volumeattachments/{neighbour['volume_attachment']}")
    finally:
        sandbox.fault("recover-node", node)
    took = schedulable_within(api, node, seconds=60, what=f"{node} back and uncordoned by the agent")
    print(f"LATENCY node recovered -> schedulable again (the agent's own cordon undone): {took:.1f}s")


def test_a_node_that_flaps_back_within_the_grace_is_left_alone(sandbox: Sandbox, api: KubeApi) -> None:
    node = node_of(api, 2)
    uid = api.get(f"{PODS}/{workload.pod_name(2)}")["metadata"]["uid"]
    sandbox.fault("fail-node", node)
    time.sleep(25)
    sandbox.fault("recover-node", node)
    eventually(lambda: node_condition(api.get(f"/api/v1/nodes/{node}")) == "True", timeout=60, what="Ready again")
    time.sleep(20)
    assert api.get(f"{PODS}/{workload.pod_name(2)}")["metadata"]["uid"] == uid
    assert not api.get(f"/api/v1/nodes/{node}")["spec"].get("unschedulable")
    assert state_of(api, "kafka-node-failure", node) in (None, "Normal", "Initializing")


def test_a_partitioned_node_whose_broker_serves_gets_no_force_delete(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    node = node_of(api, 3)
    uid = api.get(f"{PODS}/{workload.pod_name(3)}")["metadata"]["uid"]
    sandbox.fault("partition-node", node)
    try:
        held = eventually(
            lambda: records(agent, "action-held", node),
            timeout=150,
            what="the executor holding back",
        )
        assert "Kafka still sees" in held[0]["reason"]
        assert api.get(f"{PODS}/{workload.pod_name(3)}")["metadata"]["uid"] == uid
        assert sandbox.kafka.broker_running(3)
    finally:
        sandbox.fault("recover-node", node)
    took = schedulable_within(api, node, seconds=60, what=f"{node} schedulable after the partition")
    print(f"\nLATENCY partition recovered -> schedulable: {took:.1f}s")


# --- storage pools, while the first resize cools down ------------------------------------------------


@pytest.fixture(scope="module")
def nodes(api: KubeApi) -> list[str]:
    return sorted(node["metadata"]["name"] for node in api.get("/api/v1/nodes")["items"])


@pytest.fixture(scope="module")
def pools(nodes: list[str]) -> dict[str, PoolCase]:
    return {
        "A": PoolCase(node=nodes[0], name="adds-drives", drives=4, drive_size=3 * TI),
        "B": PoolCase(node=nodes[1], name="resizes-drives", drives=9, drive_size=2 * TI),
        "C": PoolCase(node=nodes[2], name="at-maxsize", drives=10, drive_size=2 * TI),
    }


def seen_normal(agent: AgentProcess, api: KubeApi, rule: str, key: str, *, dry_run: bool = False) -> bool:
    """The agent evaluated the object (its last evaluation clear) and holds it Normal: a quiet pair has no
    AutopilotRuleObject at all, one that was in an episode has its object in Normal."""
    evaluated = [r for r in records(agent, "evaluation", key) if r["rule"] == rule]
    return (
        bool(evaluated)
        and evaluated[-1]["verdict"] == "clear"
        and state_of(api, rule, key, dry_run=dry_run) in (None, "Normal")
    )


@pytest.fixture(scope="module")
def crossed(sandbox: Sandbox, api: KubeApi, pools: dict[str, PoolCase], agent: AgentProcess) -> dict[str, float]:
    """The three pools, seen as Normal, then filled past 70% together; the moment each crossed."""
    for pool in pools.values():
        sandbox.twin_client().define_pool(
            node=pool.node,
            pool=pool.name,
            drives=pool.drives,
            drive_size=pool.drive_size,
            used=pool.drives * pool.drive_size // 2,
            labels=POOL_LABELS,
        )
    eventually(
        lambda: all(seen_normal(agent, api, POOL_RULE, pool.key) for pool in pools.values()),
        timeout=90,
        what="the three pools seen as Normal",
        interval=1,
    )
    return {letter: fill(sandbox, pool.node, pool.name, 0.75) for letter, pool in pools.items()}


def test_pool_a_is_expanded_by_adding_drives(
    sandbox: Sandbox, api: KubeApi, pools: dict[str, PoolCase], crossed: dict[str, float], agent: AgentProcess
) -> None:
    pool = pools["A"]
    grown = expanded(sandbox, pool, letter="A", past=12 * TI)
    print(f"\nLATENCY pool A threshold crossing -> expanded (rule for: 30s): {finished_at(grown) - crossed['A']:.1f}s")
    assert (grown["total_size"], grown["drive_count"], grown["drive_size"]) == (18 * TI, 6, 3 * TI)
    eventually(
        lambda: state_of(api, POOL_RULE, pool.key) == "ActiveActionsTaken", timeout=60, what="A ActiveActionsTaken"
    )
    verified = eventually(lambda: records(agent, "action-verified", pool.key), timeout=30, what="A verified record")
    assert [(r["before"], r["after"]) for r in verified] == [("12Ti", "18Ti by add-disk")]
    assert any("adding 2 drive(s)" in m and "RESIZE_TYPE_ADD_DISK" in m for m in verified[0]["mutations"])
    eventually(
        lambda: any(e["reason"] == "ActionVerified" for e in events_about(api, pool.node)),
        timeout=30,
        what="the ActionVerified Event",
    )
    assert action_count(agent, "verified") >= 1
    calls = resize_calls_for(sandbox, pool)
    assert [c["query"] for c in calls] == [{"size": str(18 * 1024), "operation_type": "RESIZE_TYPE_ADD_DISK"}]


def test_pool_b_past_maxdrives_is_resized_and_capped_at_maxsize(
    sandbox: Sandbox, api: KubeApi, pools: dict[str, PoolCase], crossed: dict[str, float], agent: AgentProcess
) -> None:
    pool = pools["B"]
    capped = expanded(sandbox, pool, letter="B", past=18 * TI)
    print(f"\nLATENCY pool B threshold crossing -> expanded (rule for: 30s): {finished_at(capped) - crossed['B']:.1f}s")
    # 18Ti + 50% = 27Ti; 9 drives already pass maxdrives 8, so auto resizes them, as far as 20Ti lets:
    # each drive grows by floor((20Ti - 18Ti) / 9) to a whole GiB = 227Gi, to 2275Gi; 9 x 2275Gi = 20475Gi.
    assert capped["drive_count"] == 9
    assert capped["drive_size"] == 2275 * GI
    assert 20 * TI - 9 * GI < capped["total_size"] <= 20 * TI
    eventually(
        lambda: state_of(api, POOL_RULE, pool.key) == "ActiveActionsTaken", timeout=60, what="B ActiveActionsTaken"
    )
    verified = eventually(lambda: records(agent, "action-verified", pool.key), timeout=30, what="B verified record")
    assert len(verified) == 1
    assert verified[0]["before"] == "18Ti" and verified[0]["after"].endswith("by resize-disk")
    assert "capped at maxsize" in verified[0]["reason"]
    eventually(
        lambda: any(e["reason"] == "ActionVerified" for e in events_about(api, pool.node)),
        timeout=30,
        what="the ActionVerified Event",
    )
    eventually(lambda: action_count(agent, "verified") == 2, timeout=30, what="verified counter at 2 (A and B)")
    calls = resize_calls_for(sandbox, pool)
    assert [c["query"] for c in calls] == [{"size": str(20475), "operation_type": "RESIZE_TYPE_RESIZE_DISK"}]
    # Each pool has its own cooldown: B grew while A, expanded moments before, was still cooling down.
    grown_a = twin_pool(sandbox, pools["A"].node, pools["A"].name)
    assert abs(finished_at(capped) - finished_at(grown_a)) < COOLDOWN


def test_pool_c_at_maxsize_is_declined(
    sandbox: Sandbox, api: KubeApi, pools: dict[str, PoolCase], crossed: dict[str, float], agent: AgentProcess
) -> None:
    pool = pools["C"]
    eventually(
        lambda: state_of(api, POOL_RULE, pool.key) == "ActionsDeclined",
        timeout=180,
        what="C ActionsDeclined",
        interval=1,
    )
    declined = records(agent, "action-declined", pool.key)
    assert declined and declined[-1]["reason"].startswith("AtMaxSize"), declined
    eventually(
        lambda: any(e["reason"] == "ActionDeclined" and e["type"] == "Warning" for e in events_about(api, pool.node)),
        timeout=30,
        what="the ActionDeclined Warning",
    )
    assert action_count(agent, "declined-at-maxsize") >= 1
    found = twin_pool(sandbox, pool.node, pool.name)
    assert (found["total_size"], found["drive_count"], found["last_operation"]) == (20 * TI, 10, None)
    assert resize_calls_for(sandbox, pool) == []


# --- the reference table, step 2, and a restart mid-action -------------------------------------------


def test_step_2_resizes_800gi_to_1ti_capped(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    claim = workload.pvc_name(0)
    set_usage(sandbox, claim, 650)
    wait_for_cooldown(api, "kafka-resize", f"kafka/{claim}")
    eventually(lambda: capacity(api, claim) == "1Ti", timeout=90, what="capacity 1Ti")
    verified = eventually(
        lambda: len(found := verified_resizes(agent, claim)) >= 2 and found,
        timeout=30,
        what="the second resize verified",
    )
    assert [(r["before"], r["after"]) for r in verified] == [("400Gi", "800Gi"), ("800Gi", "1Ti (capped at maxsize)")]


def test_a_restart_mid_action_resizes_exactly_once(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    claim = workload.pvc_name(2)
    set_usage(sandbox, claim, 330)
    eventually(lambda: requested(api, claim) == "800Gi", timeout=60, what="the patch", interval=0.1)
    agent.kill()
    killed_at = capacity(api, claim)
    agent.start()
    eventually(lambda: capacity(api, claim) == "800Gi", timeout=60, what="capacity 800Gi")
    eventually(
        lambda: state_of(api, "kafka-resize", f"kafka/{claim}") == "ActiveActionsTaken", timeout=60, what="Taken"
    )
    time.sleep(10)
    print(f"\nrestart: capacity when killed {killed_at}")
    assert len(patch_times(sandbox, claim)) == 1
    assert requested(api, claim) == "800Gi"


# --- missing metrics ----------------------------------------------------------------------------------


def test_no_action_without_metrics_and_the_rule_health_says_so(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    claim = workload.pvc_name(3)
    sandbox.fault("stop-prometheus")
    try:
        set_usage(sandbox, claim, 390)
        time.sleep(12)
        assert requested(api, claim) == "400Gi"
        errors = [r for r in agent.records() if r["event"] == "cycle-error" and r["rule"] == "kafka-resize"]
        assert errors and "prometheus" in errors[-1]["reason"].lower()
        assert metric_total(agent.metrics(), "kafka_autopilot_query_errors_total", rule="kafka-resize") > 0
        assert 'kafka_autopilot_rule_healthy{rule="kafka-resize"} 0' in agent.metrics()
        assert "prometheus" in agent.rule_health()["kafka-resize"].lower()
    finally:
        sandbox.fault("start-prometheus")
        restarted = time.monotonic()
        set_usage(sandbox, claim, 100)
    eventually(lambda: agent.rule_health()["kafka-resize"] == "ok", timeout=60, what="the rule healthy again")
    print(f"\nFAULT Prometheus stopped, then started: started -> rule healthy: {time.monotonic() - restarted:.1f}s")
    assert requested(api, claim) == "400Gi", "no action on the gap"


# --- a guarded broker restart, with approval -------------------------------------------------------------


def pending_restarts(api: KubeApi) -> list[dict[str, Any]]:
    items = [
        item
        for item in api.get(APPROVALS)["items"]
        if item["spec"].get("rule") == RESTART_RULE and item.get("status", {}).get("phase") == "Pending"
    ]
    return sorted(items, key=lambda item: item["metadata"]["creationTimestamp"])


def test_a_broker_restart_waits_for_approval_then_restarts_and_verifies(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    """The shipped kafka-under-replicated rule, live. A stopped broker leaves the partitions it follows
    under-replicated on their leaders for the rule's 2 minutes; the restart of one leader is asked for,
    approved with the real CLI, then done as a graceful delete of its pod, and verified (pod back Running,
    the broker back in every ISR it belongs to). The restart's guard keeps every partition at
    min.insync.replicas while the broker is down: with the sandbox's 2 and a broker already stopped, it
    holds (unit-tested); here the topic's own min.insync.replicas is 1, so it lets the restart through."""
    ids = sandbox.kafka.broker_ids
    create_topic(
        sandbox,
        RESTART_TOPIC,
        {n: [ids[n % 4], ids[(n + 1) % 4], ids[(n + 2) % 4]] for n in range(8)},
        configs={"min.insync.replicas": "1"},
    )
    stopped = ids[-1]
    sandbox.fault("stop-broker", str(stopped))
    try:
        (approval, *_) = eventually(
            lambda: pending_restarts(api), timeout=240, what="a broker restart waiting for approval", interval=2
        )
        key = approval["spec"]["objectKey"]
        namespace, pod = key.split("/")
        assert namespace == workload.NAMESPACE
        (broker,) = [b for b in sandbox.kafka.broker_ids if workload.pod_name(b) == pod]
        assert broker != stopped
        preview = approval["status"]["preview"]
        assert preview["action"] == "kafka-autopilot.io.action.broker/restart", preview
        uid = api.get(f"{PODS}/{pod}")["metadata"]["uid"]
        approved = answer(sandbox, "approve", approval["metadata"]["name"], "--reason", "e2e", "--by", "e2e")
        assert approved.returncode == 0, approved.stderr
        answered_at = time.monotonic()
        verified = eventually(
            lambda: records(agent, "action-verified", key),
            timeout=240,
            what=f"the restart of broker {broker} verified",
        )
        print(f"\nLATENCY approve -> broker {broker} restarted and back in sync: {time.monotonic() - answered_at:.1f}s")
        print(f"RESTART verified: {verified[0]['reason']}")
        assert api.get(f"{PODS}/{pod}")["metadata"]["uid"] != uid
        assert sandbox.kafka.broker_running(broker)
        planned = records(agent, "action-planned", key)
        assert len(planned) == 1, planned
        assert state_of(api, RESTART_RULE, key) == "ActiveActionsTaken"
    finally:
        sandbox.fault("start-broker", str(stopped))
    eventually(lambda: sandbox.kafka.broker_running(stopped), timeout=60, what=f"broker {stopped} running")
    sandbox.kafka.wait_for_brokers([stopped])


# --- the reference table, step 3 -------------------------------------------------------------------------


def test_step_3_is_declined_at_maxsize(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    claim = workload.pvc_name(0)
    set_usage(sandbox, claim, 820)
    wait_for_cooldown(api, "kafka-resize", f"kafka/{claim}")
    eventually(
        lambda: state_of(api, "kafka-resize", f"kafka/{claim}") == "ActionsDeclined", timeout=60, what="declined"
    )
    assert capacity(api, claim) == "1Ti"
    assert len(patch_times(sandbox, claim)) == 2
    declined = records(agent, "action-declined", f"kafka/{claim}")
    assert declined and declined[0]["reason"].startswith("AtMaxSize")
    eventually(
        lambda: any(e["reason"] == "ActionDeclined" and e["type"] == "Warning" for e in events_for(api, claim)),
        timeout=30,
        what="the ActionDeclined Warning",
    )
    assert metric_total(agent.metrics(), "kafka_autopilot_actions_total", outcome="declined-at-maxsize") > 0


# --- the reference table, backtested --------------------------------------------------------------------


def decisions(records: list[dict[str, Any]], *, key: str, acted: str) -> list[tuple[float, str]]:
    """(time, what) of each action on `key` and of each decline (a repeated decline once), in order."""
    found: list[tuple[float, str]] = []
    for record in records:
        if record["object"] != key:
            continue
        at = datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
        if record["event"] == acted:
            found.append((at, f"{record['before']} -> {record['after']}"))
        elif record["event"] == "action-declined" and (not found or found[-1][1] != record["code"]):
            found.append((at, record["code"]))
    return found


def test_a_backtest_of_this_run_reproduces_the_reference_table(
    sandbox: Sandbox, agent: AgentProcess, tmp_path: Path
) -> None:
    key = f"kafka/{workload.pvc_name(0)}"
    time.sleep(2 * BACKTEST_STEP)  # the replayed decline may come up to a step after the live one
    live_records = agent.records()
    start = int(min(seconds_since(0, r["time"]) for r in live_records)) - 60
    until = int(time.time())
    status = sandbox.status()
    plot = tmp_path / "backtest.png"
    began = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable, "-m", "agent.cli", "backtest",
            "--rules", str(RULES / "kafka-resize.yaml"),
            "--prometheus", status["prometheus_url"],
            "--kubeconfig", status["kubeconfig"],
            "--from", datetime.fromtimestamp(start, UTC).isoformat(),
            "--to", datetime.fromtimestamp(until, UTC).isoformat(),
            "--step", f"{BACKTEST_STEP}s",
            "--json", "--plot", str(plot),
        ],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )  # fmt: skip
    print(f"\nbacktest of {until - start}s at {BACKTEST_STEP}s: {time.monotonic() - began:.1f}s")
    assert completed.returncode == 0, completed.stderr
    # A replayed resize is done when history shows the new size, as the live one was when verified.
    live = decisions(
        [r for r in live_records if seconds_since(0, r["time"]) <= until], key=key, acted="action-verified"
    )
    replayed = decisions(json.loads(completed.stdout)["records"], key=key, acted="action-applied")
    assert [what for _, what in live] == ["400Gi -> 800Gi", "800Gi -> 1Ti (capped at maxsize)", "AtMaxSize"]
    assert [what for _, what in replayed] == [what for _, what in live]
    gaps = [abs(then - now) for (then, _), (now, _) in zip(live, replayed, strict=True)]
    print(f"backtest vs live, seconds apart: {[round(gap, 1) for gap in gaps]}")
    assert max(gaps) <= BACKTEST_STEP, gaps
    assert plot.stat().st_size > 5000
    assert distinct_colours(plot) > 1


def test_each_decision_of_the_reference_table_is_a_cloudevent_on_the_events_topic(
    sandbox: Sandbox, agent: AgentProcess
) -> None:
    """The live agent runs with `--events-topic`: a consumer of that topic gets each of the table's
    decisions as a CloudEvents 1.0 message keyed by the PVC, carrying the same audit record."""
    key = f"kafka/{workload.pvc_name(0)}"
    wanted = [r for r in agent.records() if r["object"] == key and r["event"] in ("action-verified", "action-declined")]
    assert len(wanted) >= 3, wanted
    settings = KafkaSettings(bootstrap_servers=sandbox.kafka.bootstrap_servers)

    def published() -> list[dict[str, Any]] | None:
        received = asyncio.run(read_topic(settings, EVENTS_TOPIC))
        events = [json.loads(value) for subject, value in received if subject == key.encode()]
        return events if all(any(event["data"] == record for event in events) for record in wanted) else None

    events: list[dict[str, Any]] = eventually(published, timeout=60, what="the table's decisions on the topic")
    print(f"\nEVENTS {len(events)} CloudEvents about {key}, types {sorted({e['type'] for e in events})}")
    assert all(e["specversion"] == "1.0" and e["subject"] == key and e["dryrun"] is False for e in events)
    assert {"io.kafka-autopilot.action.verified", "io.kafka-autopilot.action.declined"} <= {e["type"] for e in events}
    assert len({e["id"] for e in events}) == len(events)


def test_explain_says_why_the_volume_at_maxsize_is_left_alone(sandbox: Sandbox) -> None:
    status = sandbox.status()
    completed = subprocess.run(
        [
            sys.executable, "-m", "agent.cli", "explain", f"pvc/{workload.NAMESPACE}/{workload.pvc_name(0)}",
            "--rules", str(RULES / "kafka-resize.yaml"),
            "--kubeconfig", status["kubeconfig"],
            "--prometheus", status["prometheus_url"],
            "--json",
        ],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    (explained,) = json.loads(completed.stdout)
    assert explained["state"] == "ActionsDeclined"
    assert explained["reason"].startswith("AtMaxSize")
    assert (explained["last_action"]["after"], explained["last_action"]["outcome"]) == (
        "1Ti (capped at maxsize)",
        "verified",
    )
    (condition,) = explained["conditions"]
    assert condition["holds"] is True
    assert condition["value"] > 80


# --- dry-run ------------------------------------------------------------------------------------------------


def test_dry_run_decides_the_same_and_changes_nothing(
    sandbox: Sandbox, api: KubeApi, nodes: list[str], agent: AgentProcess, tmp_path: Path
) -> None:
    agent.stop()
    for item in api.get(STATE_OBJECTS)["items"]:
        api.delete(f"{STATE_OBJECTS}/{item['metadata']['name']}")
    pool_node = nodes[3]
    pool_key = f"{pool_node}/dry"
    twin = sandbox.twin_client()
    twin.define_pool(node=pool_node, pool="dry", drives=4, drive_size=TI, used=TI, labels=POOL_LABELS)
    pool_calls_before = len(twin.state()["resize_calls"])
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    dry = AgentProcess(sandbox=sandbox, rules=RULE_FILES, audit_path=tmp_path / "dry.jsonl", dry_run=True)
    dry.start()
    try:
        claim = workload.pvc_name(1)
        set_usage(sandbox, claim, 330)
        planned = eventually(
            lambda: records(dry, "action-dry-run", f"kafka/{claim}"),
            timeout=60,
            what="a dry-run resize record",
        )
        assert (planned[0]["before"], planned[0]["after"]) == ("400Gi", "800Gi")
        eventually(
            lambda: seen_normal(dry, api, POOL_RULE, pool_key, dry_run=True),
            timeout=90,
            what="the dry pool Normal",
            interval=1,
        )
        fill(sandbox, pool_node, "dry", 0.75)
        node = node_of(api, 0)
        sandbox.fault("fail-node", node)
        try:
            eventually(
                lambda: records(dry, "action-dry-run", node),
                timeout=180,
                what="a dry-run reschedule record",
            )
        finally:
            sandbox.fault("recover-node", node)
        assert requested(api, claim) == "400Gi"
        assert node_of(api, 0) == node
        assert not api.get(f"/api/v1/nodes/{node}")["spec"].get("unschedulable")
        time.sleep(2)
        touched = {
            entry["objectRef"].get("resource") for entry in agent_mutations(audit_log_entries(sandbox), since=since)
        }
        assert touched <= {"autopilotruleobjects", "events", "customresourcedefinitions"}, touched
        pool_planned = eventually(
            lambda: records(dry, "action-dry-run", pool_key), timeout=120, what="a dry-run pool expansion", interval=1
        )
        assert (pool_planned[0]["before"], pool_planned[0]["after"]) == ("4Ti", "6Ti by add-disk")
        assert any("expand storage pool" in m for m in pool_planned[0]["mutations"])
        dry_pool = twin_pool(sandbox, pool_node, "dry")
        assert (dry_pool["total_size"], dry_pool["drive_count"]) == (4 * TI, 4)
        assert len(twin.state()["resize_calls"]) == pool_calls_before
        assert metric_total(dry.metrics(), "kafka_autopilot_actions_total", outcome="dry-run") > 0
        # a quiet claim has no state to leave Initializing: its first transition is the one out of Normal
        live_path = ["Triggered", "ActiveActionsPending", "ActiveActionsInProgress", "ActiveActionsTaken"]
        dry_path = [r["to"] for r in dry.records() if r["event"] == "transition" and r["object"] == f"kafka/{claim}"]
        assert dry_path[: len(live_path)] == live_path
    finally:
        dry.stop()
