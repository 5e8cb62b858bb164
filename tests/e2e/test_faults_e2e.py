"""Faults in the agent's world, live: each external system fails alone, and the agent recovers.

One sandbox for the module; each case starts the agents it needs and prints its recovery figure
(pytest -s shows them). In order:
- Kafka unreachable from the start (`--kafka` at a closed port): the agent stays up and ready, the
  resize rule acts, the rules that need Kafka (leader rebalance, node reschedule) are unhealthy with a
  reason naming Kafka; and without `--audit`, every line on stdout is an audit JSON record;
- a dry-run agent, then a live agent on the same rule: the dry-run's states never hold the live agent
  back, and the live agent resizes;
- the apiserver stopped right after the agent's PVC patch and started 10 s later: the action resumes
  and is verified, with exactly one patch;
- a steady agent (PVC, broker and node rules) sends no LIST: it reads watch-fed caches (the
  apiserver's audit log).
The rest of the fault suite runs where its setting already is, without a bring-up of its own:
- a Prometheus stop and start (no action on the gap, healthy after): test_agent_e2e;
- a 429 storm from the apiserver's priority and fairness: test_chart_rbac_e2e, where the agent runs as
  a ServiceAccount (the sandbox's admin is exempt from priority and fairness);
- two replicas with skewed clocks, one leader: test_ha_e2e.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from e2e_support import (
    RULES,
    AgentProcess,
    audit_log_entries,
    capacity,
    patch_times,
    records,
    requested,
    set_usage,
    state_of,
    verified_resizes,
)
from helpers import eventually

from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi
from sandbox.process import free_port

pytestmark = pytest.mark.sandbox

RESIZE = RULES / "kafka-resize.yaml"
REBALANCE = RULES / "kafka-leader-rebalance.yaml"
NODE_FAILURE = RULES / "kafka-node-failure.yaml"
NEED_KAFKA = ("kafka-leader-rebalance", "kafka-node-failure")


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> KubeApi:
    return sandbox.kube.api()


@pytest.fixture(scope="module")
def agents_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents")


@pytest.fixture(scope="module")
def live(sandbox: Sandbox, agents_dir: Path) -> Iterator[AgentProcess]:
    """The live agent of the second and third cases, started by the second."""
    agent = AgentProcess(sandbox=sandbox, rules=[RESIZE], audit_path=agents_dir / "live.jsonl")
    try:
        yield agent
    finally:
        agent.stop()


def test_with_kafka_unreachable_from_the_start_the_resize_rule_still_acts(
    sandbox: Sandbox, api: KubeApi, agents_dir: Path
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    agent = AgentProcess(
        sandbox=sandbox,
        rules=[RESIZE, REBALANCE, NODE_FAILURE],
        audit_path=agents_dir / "no-kafka.jsonl",
        extra_args=["--kafka", closed],
        audit_to_stdout=True,
    )
    started = time.monotonic()
    with agent:
        print(f"\nFAULT Kafka at a closed port {closed}: agent ready in {time.monotonic() - started:.1f}s")
        claim = workload.pvc_name(0)
        crossed = time.monotonic()
        set_usage(sandbox, claim, 330)
        eventually(lambda: capacity(api, claim) == "800Gi", timeout=90, what=f"{claim} resized to 800Gi")
        print(f"FAULT Kafka at a closed port: threshold crossing -> resized: {time.monotonic() - crossed:.1f}s")
        eventually(lambda: verified_resizes(agent, claim), timeout=30, what="the resize verified")
        health = eventually(
            lambda: all((found := agent.rule_health()).get(name, "ok") != "ok" for name in NEED_KAFKA) and found,
            timeout=60,
            what="the rules that need Kafka unhealthy",
        )
        print(f"FAULT Kafka at a closed port: rule health {health}")
        assert all(health[name].startswith("Kafka unreachable") for name in NEED_KAFKA), health
        assert health["kafka-resize"] == "ok", health
        assert agent.process is not None and agent.process.poll() is None
    lines = [line for line in agent.audit_path.read_text().splitlines() if line.strip()]
    assert lines, "the audit trail went to stdout"
    for line in lines:
        record = json.loads(line)  # every stdout line is one JSON record, logs go to stderr
        assert "event" in record and "time" in record, line


def test_a_dry_run_agent_then_a_live_one_the_live_one_acts(
    sandbox: Sandbox, api: KubeApi, agents_dir: Path, live: AgentProcess
) -> None:
    claim = workload.pvc_name(1)
    key = f"{workload.NAMESPACE}/{claim}"
    with AgentProcess(sandbox=sandbox, rules=[RESIZE], audit_path=agents_dir / "dry.jsonl", dry_run=True) as dry:
        set_usage(sandbox, claim, 330)
        eventually(
            lambda: records(dry, "action-dry-run", key),
            timeout=60,
            what="the dry-run resize",
        )
        eventually(
            lambda: state_of(api, "kafka-resize", key, dry_run=True) == "ActiveActionsTaken",
            timeout=30,
            what="the dry-run state Taken",
        )
    assert requested(api, claim) == "400Gi"
    started = time.monotonic()
    live.start()
    eventually(lambda: capacity(api, claim) == "800Gi", timeout=90, what=f"{claim} resized by the live agent")
    print(f"\nFAULT dry-run then live: live agent start -> resized: {time.monotonic() - started:.1f}s")
    eventually(
        lambda: state_of(api, "kafka-resize", key) == "ActiveActionsTaken", timeout=60, what="the live state Taken"
    )
    assert len(patch_times(sandbox, claim)) == 1


def test_the_apiserver_stopped_mid_action_resumes_with_exactly_one_patch(
    sandbox: Sandbox, api: KubeApi, live: AgentProcess
) -> None:
    claim = workload.pvc_name(2)
    set_usage(sandbox, claim, 330)
    eventually(lambda: requested(api, claim) == "800Gi", timeout=60, what="the agent's patch", interval=0.05)
    sandbox.fault("stop-apiserver")
    try:
        time.sleep(10)
    finally:
        sandbox.fault("start-apiserver")
    back = time.monotonic()
    verified = eventually(lambda: verified_resizes(live, claim), timeout=120, what="the resize verified")
    print(f"\nFAULT apiserver stopped 10 s mid-action: apiserver back -> verified: {time.monotonic() - back:.1f}s")
    assert [(r["before"], r["after"]) for r in verified] == [("400Gi", "800Gi")]
    assert capacity(api, claim) == "800Gi"
    assert len(patch_times(sandbox, claim)) == 1
    assert live.process is not None and live.process.poll() is None


def test_a_steady_agent_sends_no_list_to_the_apiserver(sandbox: Sandbox, agents_dir: Path) -> None:
    """The watch-fed caches, against the real apiserver: once the agent is ready, its cycles of a PVC,
    a broker and a node rule read the caches; the apiserver's audit log shows no LIST from it."""
    with AgentProcess(
        sandbox=sandbox, rules=[RESIZE, REBALANCE, NODE_FAILURE], audit_path=agents_dir / "steady.jsonl"
    ) as agent:
        time.sleep(3)  # the first cycles, and the resume of each rule
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        before = resize_cycles(agent)
        time.sleep(10)  # five polls of the 2 s resize rule
        cycles = resize_cycles(agent) - before
        lists = [
            f"{entry['verb']} {entry['requestURI']}"
            for entry in audit_log_entries(sandbox)
            if str(entry.get("userAgent", "")).startswith("kafka-autopilot/")
            and entry.get("verb") == "list"
            and entry.get("requestReceivedTimestamp", "") >= since
        ]
    print(f"\nSTEADY {cycles} cycles in 10 s, {len(lists)} LIST requests")
    assert cycles >= 3, "the rules did not evaluate while watched"
    assert lists == [], lists


def resize_cycles(agent: AgentProcess) -> float:
    """How many cycles the resize rule ran: its loop-duration histogram's count, from /metrics."""
    for line in agent.metrics().splitlines():
        if line.startswith("kafka_autopilot_loop_duration_seconds_count{") and 'rule="kafka-resize"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
