"""Two replicas of the agent against the sandbox, with leader election: exactly one ever acts.

The shipped reference rule `rules/kafka-resize.yaml` runs unchanged in both replicas
(`--leader-elect`, lease duration 15 s). The tests run in order and form one story:
- only the leader evaluates and resizes; the standby serves health and metrics and does nothing else;
- the leader is SIGKILLed right after its PVC PATCH: the standby takes over within the lease
  duration (plus one retry period: it looks every 2 s), resumes the recorded plan from the durable
  state and verifies it; the apiserver's audit log shows exactly one PATCH of that PVC;
- a leader told to stop (SIGTERM) releases the Lease and the standby takes over at its next look;
- a leader that finds someone else in the Lease stops at once and exits with 75;
- a standby whose wall clock runs 5 minutes ahead (libfaketime) never takes a Lease the leader renews,
  and takes it within the lease duration once the leader is killed;
- two dry-run replicas: one leads, and nobody mutates anything but the agent's own objects.
The apiserver's audit log tells the replicas apart by User-Agent (`kafka-autopilot/<version> (<identity>)`).
Takeover times are printed (pytest -s shows them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    AGENTS_OWN_RESOURCES,
    REPO,
    RULES,
    STATE_OBJECTS,
    AgentProcess,
    agent_mutations,
    audit_log_entries,
    capacity,
    requested,
    set_usage,
    state_of,
)
from helpers import eventually

from agent.runtime.leadership import EXIT_LEADERSHIP_LOST
from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi

pytestmark = pytest.mark.sandbox

LEASE = "/apis/coordination.k8s.io/v1/namespaces/kafka-autopilot/leases/kafka-autopilot"
RULE_FILES = [RULES / "kafka-resize.yaml"]
LEASE_DURATION = 15
RETRY_PERIOD = 2
SLACK = 8
"""Seconds allowed on top of the protocol's bounds on a loaded 2-core machine."""
ACTION_EVENTS = ("action-planned", "action-verified", "action-failed", "action-held", "action-dry-run")
EXIT_LOST = 75
"""The documented exit code of a replica that lost leadership (agent.runtime.leadership)."""

assert EXIT_LEADERSHIP_LOST == EXIT_LOST


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> KubeApi:
    return sandbox.kube.api()


@pytest.fixture(scope="module")
def agents_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents")


def replica(sandbox: Sandbox, directory: Path, identity: str, *, dry_run: bool = False) -> AgentProcess:
    return AgentProcess(
        sandbox=sandbox,
        rules=RULE_FILES,
        audit_path=directory / f"{identity}.jsonl",
        dry_run=dry_run,
        leader_elect=True,
        identity=identity,
        lease_duration=LEASE_DURATION,
    )


@pytest.fixture(scope="module")
def pair(sandbox: Sandbox, agents_dir: Path) -> Iterator[dict[str, AgentProcess]]:
    """replica-a starts first and leads; replica-b stands by."""
    a = replica(sandbox, agents_dir, "replica-a")
    b = replica(sandbox, agents_dir, "replica-b")
    try:
        a.start()
        eventually(lambda: leadership(a, "acquired"), timeout=60, what="replica-a leading")
        b.start()
        eventually(lambda: leadership(b, "standby"), timeout=60, what="replica-b standing by")
        yield {"a": a, "b": b}
    finally:
        a.stop()
        b.stop()


def leadership(agent: AgentProcess, outcome: str) -> list[dict[str, Any]]:
    return [r for r in agent.records() if r["event"] == "leadership" and r["outcome"] == outcome]


def acted(agent: AgentProcess) -> list[dict[str, Any]]:
    return [r for r in agent.records() if r["event"] in ACTION_EVENTS]


def evaluated(agent: AgentProcess) -> list[dict[str, Any]]:
    return [r for r in agent.records() if r["event"] == "evaluation"]


def pvc_patches(sandbox: Sandbox, claim: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in agent_mutations(audit_log_entries(sandbox))
        if entry.get("objectRef", {}).get("resource") == "persistentvolumeclaims"
        and entry.get("objectRef", {}).get("name") == claim
        and entry.get("objectRef", {}).get("subresource") is None
    ]


def by(identity: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in entries if str(entry.get("userAgent", "")).endswith(f"({identity})")]


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def metric(agent: AgentProcess, name: str) -> str:
    return next(line for line in agent.metrics().splitlines() if line.startswith(f"{name} "))


# --- one acts -----------------------------------------------------------------------------------------


def test_only_the_leader_evaluates_and_resizes(sandbox: Sandbox, api: KubeApi, pair: dict[str, AgentProcess]) -> None:
    a, b = pair["a"], pair["b"]
    claim = workload.pvc_name(0)
    set_usage(sandbox, claim, 330)
    eventually(lambda: capacity(api, claim) == "800Gi", timeout=90, what="capacity 800Gi")
    eventually(
        lambda: state_of(api, "kafka-resize", f"kafka/{claim}") == "ActiveActionsTaken", timeout=60, what="Taken"
    )
    eventually(
        lambda: [r for r in a.records() if r["event"] == "action-verified" and r["object"] == f"kafka/{claim}"],
        timeout=30,
        what="the leader's verified resize",
    )
    time.sleep(2 * RETRY_PERIOD)
    assert evaluated(a) and acted(a)
    assert evaluated(b) == [] and acted(b) == [], "the standby evaluated or acted"
    patches = pvc_patches(sandbox, claim)
    assert len(patches) == 1, patches
    assert by("replica-a", patches) == patches
    standby_writes = {
        entry["objectRef"]["resource"] for entry in by("replica-b", agent_mutations(audit_log_entries(sandbox)))
    }
    assert standby_writes <= {"customresourcedefinitions"}, standby_writes
    assert metric(a, "kafka_autopilot_leader") == "kafka_autopilot_leader 1"
    assert metric(b, "kafka_autopilot_leader") == "kafka_autopilot_leader 0"
    assert b.ready(), "a standby reports ready"
    lease = api.get(LEASE)["spec"]
    assert lease["holderIdentity"] == "replica-a"
    assert lease["leaseDurationSeconds"] == LEASE_DURATION


# --- the leader dies mid-action -----------------------------------------------------------------------------


def test_the_standby_takes_over_from_a_killed_leader_and_resizes_exactly_once(
    sandbox: Sandbox, api: KubeApi, pair: dict[str, AgentProcess]
) -> None:
    a, b = pair["a"], pair["b"]
    claim = workload.pvc_name(2)
    set_usage(sandbox, claim, 330)
    eventually(lambda: requested(api, claim) == "800Gi", timeout=60, what="the leader's PATCH", interval=0.1)
    a.kill()
    killed_at = time.time()
    capacity_when_killed = capacity(api, claim)
    acquired = eventually(
        lambda: leadership(b, "acquired"), timeout=LEASE_DURATION + RETRY_PERIOD + SLACK + 30, what="takeover"
    )
    took_over = epoch(acquired[0]["time"]) - killed_at
    print(
        f"\nTAKEOVER after SIGKILL of the leader: {took_over:.2f}s "
        f"(lease duration {LEASE_DURATION}s, retry period {RETRY_PERIOD}s; capacity when killed {capacity_when_killed})"
    )
    assert took_over <= LEASE_DURATION + RETRY_PERIOD + SLACK
    assert took_over >= LEASE_DURATION - RETRY_PERIOD - 1, "took over a Lease that was still being renewed"
    eventually(lambda: capacity(api, claim) == "800Gi", timeout=90, what="capacity 800Gi")
    eventually(
        lambda: state_of(api, "kafka-resize", f"kafka/{claim}") == "ActiveActionsTaken", timeout=90, what="Taken"
    )
    time.sleep(10)
    patches = pvc_patches(sandbox, claim)
    assert len(patches) == 1, [(p["userAgent"], p["requestReceivedTimestamp"]) for p in patches]
    assert by("replica-a", patches) == patches
    assert requested(api, claim) == "800Gi"
    verified = [
        (agent.identity, r)
        for agent in (a, b)
        for r in agent.records()
        if r["event"] == "action-verified" and r["object"] == f"kafka/{claim}"
    ]
    print(f"verified by: {[who for who, _ in verified]}")
    assert len(verified) == 1
    lease = api.get(LEASE)["spec"]
    assert lease["holderIdentity"] == "replica-b"
    assert lease["leaseTransitions"] >= 1
    assert metric(b, "kafka_autopilot_leader") == "kafka_autopilot_leader 1"
    # Kubernetes restarts the killed container: it comes back as a standby and acts no more.
    a.audit_path = a.audit_path.with_name("replica-a-restarted.jsonl")
    a.start()
    eventually(lambda: leadership(a, "standby"), timeout=60, what="the restarted replica standing by")
    assert metric(a, "kafka_autopilot_leader") == "kafka_autopilot_leader 0"
    time.sleep(2 * RETRY_PERIOD)
    assert evaluated(a) == [] and acted(a) == []


def test_a_leader_stopped_with_sigterm_hands_over_at_once(
    sandbox: Sandbox, api: KubeApi, pair: dict[str, AgentProcess]
) -> None:
    a, b = pair["a"], pair["b"]
    stopped_at = time.time()
    b.stop()
    assert b.process is not None and b.process.returncode == 0
    assert leadership(b, "released")
    acquired = eventually(lambda: leadership(a, "acquired"), timeout=30, what="handover to replica-a")
    handed_over = epoch(acquired[0]["time"]) - stopped_at
    print(f"\nHANDOVER after SIGTERM of the leader: {handed_over:.2f}s")
    assert handed_over < LEASE_DURATION
    assert api.get(LEASE)["spec"]["holderIdentity"] == "replica-a"
    eventually(a.ready, timeout=60, what="the new leader ready")


def test_a_leader_that_sees_another_holder_stops_at_once_and_exits_75(
    api: KubeApi, pair: dict[str, AgentProcess]
) -> None:
    a = pair["a"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api.merge_patch(LEASE, {"spec": {"holderIdentity": "intruder", "renewTime": now, "acquireTime": now}})
    changed_at = time.time()
    process = a.process
    assert process is not None
    eventually(lambda: process.poll() is not None, timeout=RETRY_PERIOD + SLACK + 10, what="the leader exiting")
    code = process.returncode
    stopped = time.time() - changed_at
    print(f"\nSTEP-DOWN after another holder appeared in the Lease: {stopped:.2f}s, exit code {code}")
    assert code == EXIT_LOST
    lost = leadership(a, "lost")
    assert lost and "intruder" in lost[0]["reason"]
    actions_after = [r for r in a.records() if r["event"] in ACTION_EVENTS and r["time"] > lost[0]["time"]]
    assert actions_after == []
    log = a.audit_path.with_suffix(".log").read_text(errors="replace")
    assert "lost leadership, stopped acting" in log


# --- skewed clocks ----------------------------------------------------------------------------------------

SKEW_SECONDS = 300


def clock_ahead(seconds: int) -> dict[str, str]:
    """The environment that runs a process `seconds` ahead on the wall clock (Debian's libfaketime,
    installed by scripts/install-faketime.sh); its monotonic clock is left alone, as NTP drift leaves it."""
    library = Path(os.environ.get("KAFKA_AUTOPILOT_CACHE", REPO / ".cache")) / "faketime" / "libfaketime.so.1"
    assert library.is_file(), f"{library} is missing: run scripts/install-faketime.sh (`make unit` does)"
    return {"LD_PRELOAD": str(library.resolve()), "FAKETIME": f"+{seconds}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def test_a_standby_whose_clock_runs_five_minutes_ahead_never_steals_a_renewed_lease(
    sandbox: Sandbox, api: KubeApi, pair: dict[str, AgentProcess], agents_dir: Path
) -> None:
    """Expiry runs from when a replica saw the Lease record change, on its own monotonic clock. A
    replica that compared the holder's renewTime with its own wall clock would take over at its first
    look, from a leader that still renews."""
    for agent in pair.values():
        agent.stop()
    api.delete(LEASE)
    steady = replica(sandbox, agents_dir, "steady-e")
    ahead = replica(sandbox, agents_dir, "ahead-f")
    ahead.environment = clock_ahead(SKEW_SECONDS)
    try:
        steady.start()
        eventually(lambda: leadership(steady, "acquired"), timeout=30, what="steady-e leading")
        ahead.start()
        eventually(lambda: leadership(ahead, "standby"), timeout=60, what="ahead-f standing by")
        skew = epoch(ahead.records()[-1]["time"]) - time.time()
        print(f"\nSKEW the standby's records are {skew:.0f}s ahead")
        assert skew > SKEW_SECONDS - 30, "the standby's clock is not ahead: libfaketime did not load"
        time.sleep(LEASE_DURATION + 2 * RETRY_PERIOD)
        assert leadership(ahead, "acquired") == [], "a standby with a skewed clock took a renewed Lease"
        assert api.get(LEASE)["spec"]["holderIdentity"] == "steady-e"
        assert metric(steady, "kafka_autopilot_leader") == "kafka_autopilot_leader 1"
        assert metric(ahead, "kafka_autopilot_leader") == "kafka_autopilot_leader 0"
        steady.kill()
        killed_at = time.monotonic()
        eventually(
            lambda: leadership(ahead, "acquired"), timeout=LEASE_DURATION + RETRY_PERIOD + SLACK + 30, what="takeover"
        )
        took_over = time.monotonic() - killed_at
        print(f"TAKEOVER by the standby {SKEW_SECONDS}s ahead, after SIGKILL of the leader: {took_over:.2f}s")
        assert took_over <= LEASE_DURATION + RETRY_PERIOD + SLACK
        assert api.get(LEASE)["spec"]["holderIdentity"] == "ahead-f"
    finally:
        steady.stop()
        ahead.stop()


# --- dry-run ---------------------------------------------------------------------------------------------


def test_two_dry_run_replicas_one_leads_and_nothing_changes(
    sandbox: Sandbox, api: KubeApi, pair: dict[str, AgentProcess], agents_dir: Path
) -> None:
    for agent in pair.values():
        agent.stop()
    for item in api.get(STATE_OBJECTS)["items"]:
        api.delete(f"{STATE_OBJECTS}/{item['metadata']['name']}")
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    c = replica(sandbox, agents_dir, "dry-c", dry_run=True)
    d = replica(sandbox, agents_dir, "dry-d", dry_run=True)
    try:
        c.start()
        d.start()
        claim = workload.pvc_name(1)
        set_usage(sandbox, claim, 330)
        planned = eventually(
            lambda: [
                r
                for agent in (c, d)
                for r in agent.records()
                if r["event"] == "action-dry-run" and r["object"] == f"kafka/{claim}"
            ],
            timeout=LEASE_DURATION + 120,
            what="a dry-run resize record (the dry-run replicas elect on a Lease of their own)",
        )
        assert (planned[0]["before"], planned[0]["after"]) == ("400Gi", "800Gi")
        leaders = [agent for agent in (c, d) if leadership(agent, "acquired")]
        assert len(leaders) == 1
        (leader,) = leaders
        standby = d if leader is c else c
        assert acted(standby) == [] and evaluated(standby) == []
        time.sleep(2)
        assert requested(api, claim) == "400Gi"
        assert all(requested(api, workload.pvc_name(n)) in ("400Gi", "800Gi") for n in range(4))
        assert requested(api, workload.pvc_name(3)) == "400Gi"
        touched = {
            entry["objectRef"].get("resource") for entry in agent_mutations(audit_log_entries(sandbox), since=since)
        }
        assert touched <= AGENTS_OWN_RESOURCES, touched
        assert "leases" in touched
    finally:
        c.stop()
        d.stop()
