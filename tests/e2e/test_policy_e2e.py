"""Guardrail policies at work: the real agent, the reference rule unchanged, a policy per scenario.

Each test starts the agent with its own policy (written into tmp_path, or the shipped audit-only one),
pushes volumes past the rule's 80% threshold, and checks what the policy let through and what it held
back: a held object shows its hold as a state in its AutopilotRuleObject status and as an Event. No
scenario waits out the rule's 5-minute cooldown: several volumes cross the threshold at once instead.

Volumes used: data-kafka-0 and -1 stay 400Gi until the rate-limit scenario resizes one of them;
data-kafka-2 and -3 are resized by the max-concurrent scenario.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
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
    requested,
    set_usage,
)
from helpers import eventually
from metrics_text import metric_total

from agent.adapters.kubernetes.statuscodec import parse_time
from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi

pytestmark = pytest.mark.sandbox

RULE = "kafka-resize"
RULE_FILES = [RULES / "kafka-resize.yaml"]

POLICY_HEADER = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotPolicy
metadata:
  name: {name}
spec:
"""

AgentFactory = Callable[[str, str], AgentProcess]


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> KubeApi:
    return sandbox.kube.api()


@pytest.fixture
def agent_with(sandbox: Sandbox, api: KubeApi, tmp_path: Path) -> Iterator[AgentFactory]:
    """Starts the agent with a policy (a name and the lines of its spec); stops it and forgets its
    states afterwards, with every volume's usage back to low, so the next scenario starts clean."""
    started: list[AgentProcess] = []

    def start(name: str, spec: str) -> AgentProcess:
        policy = tmp_path / f"{name}.yaml"
        policy.write_text(POLICY_HEADER.format(name=name) + spec)
        process = AgentProcess(sandbox=sandbox, rules=RULE_FILES, audit_path=tmp_path / "audit.jsonl", policy=policy)
        started.append(process)
        process.start()
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()
        for broker in range(4):
            set_usage(sandbox, workload.pvc_name(broker), 100)
        for item in api.get(STATE_OBJECTS)["items"]:
            api.delete(f"{STATE_OBJECTS}/{item['metadata']['name']}")


def status_of(api: KubeApi, claim: str) -> dict[str, Any]:
    key = f"{workload.NAMESPACE}/{claim}"
    for item in api.get(STATE_OBJECTS)["items"]:
        spec = item.get("spec", {})
        if spec.get("rule") == RULE and spec.get("objectKey") == key:
            return dict(item.get("status") or {})
    return {}


def events_for(api: KubeApi, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        event
        for namespace in (workload.NAMESPACE, "default")
        for event in api.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")["items"]
        if event.get("regarding", {}).get("name") == name and event.get("reason") == reason
    ]


def records(agent: AgentProcess, event: str, claim: str) -> list[dict[str, Any]]:
    key = f"{workload.NAMESPACE}/{claim}"
    return [record for record in agent.records() if record["event"] == event and record["object"] == key]


# --- dry-run: the shipped audit-only policy ------------------------------------------------------------


def test_the_audit_only_policy_plans_and_records_and_changes_nothing(
    sandbox: Sandbox, api: KubeApi, tmp_path: Path
) -> None:
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    agent = AgentProcess(
        sandbox=sandbox,
        rules=RULE_FILES,
        audit_path=tmp_path / "audit-only.jsonl",
        policy=REPO / "policies" / "audit-only.yaml",
    )
    agent.start()
    claims = [workload.pvc_name(0), workload.pvc_name(1)]
    try:
        for claim in claims:
            set_usage(sandbox, claim, 330)
        for claim in claims:
            planned = eventually(
                lambda claim=claim: records(agent, "action-planned", claim), timeout=90, what=f"{claim} planned"
            )
            assert (planned[0]["before"], planned[0]["after"]) == ("400Gi", "800Gi")
            dry = eventually(
                lambda claim=claim: records(agent, "action-dry-run", claim), timeout=60, what=f"{claim} dry-run"
            )
            assert dry[0]["dry_run"] is True
            assert dry[0]["mutations"] == [
                f"patch PersistentVolumeClaim kafka/{claim}: request 800Gi",
            ]
        assert any(record["event"] == "mutation-recorded" for record in agent.records())
        time.sleep(4)
        assert [requested(api, claim) for claim in claims] == ["400Gi", "400Gi"]
        touched = {
            entry["objectRef"].get("resource") for entry in agent_mutations(audit_log_entries(sandbox), since=since)
        }
        assert touched <= AGENTS_OWN_RESOURCES, touched
        assert "autopilotruleobjects" in touched
    finally:
        agent.stop()
        for claim in claims:
            set_usage(sandbox, claim, 100)
        for item in api.get(STATE_OBJECTS)["items"]:
            api.delete(f"{STATE_OBJECTS}/{item['metadata']['name']}")


# --- an action window that is closed now ---------------------------------------------------------------


def test_outside_the_policys_action_window_the_volume_waits(
    sandbox: Sandbox, api: KubeApi, agent_with: AgentFactory
) -> None:
    opens = datetime.now(UTC) + timedelta(hours=2)
    closes = opens + timedelta(hours=1)
    agent = agent_with("later", f'  actionWindow:\n    - start: "{opens:%H:%M}"\n      end: "{closes:%H:%M}"\n')
    claim = workload.pvc_name(0)
    set_usage(sandbox, claim, 330)
    eventually(
        lambda: status_of(api, claim).get("state") == "ActionAwaitingWindow", timeout=90, what="ActionAwaitingWindow"
    )
    (event, *_) = eventually(
        lambda: events_for(api, claim, "ActionAwaitingWindow"), timeout=30, what="the ActionAwaitingWindow Event"
    )
    assert "outside the action window" in event["note"]
    time.sleep(6)
    assert requested(api, claim) == "400Gi"
    assert status_of(api, claim)["state"] == "ActionAwaitingWindow"
    assert not records(agent, "action-planned", claim)


# --- a rate limit --------------------------------------------------------------------------------------


def test_a_per_rule_rate_limit_holds_back_the_second_resize_even_across_a_restart(
    sandbox: Sandbox, api: KubeApi, agent_with: AgentFactory
) -> None:
    agent = agent_with("one-per-hour", "  rateLimits:\n    perRule: {count: 1, period: 1h}\n")
    claims = [workload.pvc_name(0), workload.pvc_name(1)]
    for claim in claims:
        set_usage(sandbox, claim, 330)
    resized = eventually(
        lambda: [claim for claim in claims if requested(api, claim) == "800Gi"], timeout=90, what="one resize"
    )
    (held,) = [claim for claim in claims if claim not in resized]
    eventually(lambda: status_of(api, held).get("state") == "ActionsThrottled", timeout=60, what="ActionsThrottled")
    status = status_of(api, held)
    assert status["reason"].startswith("RateLimitPerRule: 1 actions started by rule kafka-resize in the last 1h;")
    assert "policy one-per-hour allows 1 per 1h: next at" in status["reason"]
    (event, *_) = eventually(lambda: events_for(api, held, "ActionsThrottled"), timeout=30, what="the Event")
    assert "RateLimitPerRule" in event["note"]
    (record, *_) = records(agent, "action-throttled", held)
    assert record["code"] == "RateLimitPerRule"
    assert metric_total(agent.metrics(), "kafka_autopilot_actions_total", outcome="throttled") > 0

    agent.stop()  # a new life of the agent reads the same history from the durable state
    agent.start()
    time.sleep(8)
    assert requested(api, held) == "400Gi"
    assert status_of(api, held)["state"] == "ActionsThrottled"
    assert [requested(api, claim) for claim in resized] == ["800Gi"]


# --- at most one action at once ----------------------------------------------------------------------


def test_max_concurrent_actions_holds_the_second_until_the_first_is_done(
    sandbox: Sandbox, api: KubeApi, agent_with: AgentFactory
) -> None:
    agent = agent_with("one-at-a-time", "  maxConcurrentActions: 1\n")
    claims = [workload.pvc_name(2), workload.pvc_name(3)]
    for claim in claims:
        set_usage(sandbox, claim, 330)
    held = eventually(
        lambda: [claim for claim in claims if "ActionsThrottled" in status_of(api, claim).get("enteredAt", {})],
        timeout=90,
        what="one volume held back",
    )
    assert len(held) == 1
    (event, *_) = eventually(lambda: events_for(api, held[0], "ActionsThrottled"), timeout=30, what="the Event")
    assert "MaxConcurrentActions: 1 actions in flight; policy one-at-a-time allows 1 at once" in event["note"]
    for claim in claims:
        eventually(lambda claim=claim: requested(api, claim) == "800Gi", timeout=120, what=f"{claim} resized")
    for claim in claims:
        eventually(lambda claim=claim: records(agent, "action-verified", claim), timeout=60, what=f"{claim} verified")
        eventually(
            lambda claim=claim: status_of(api, claim).get("state") == "ActiveActionsTaken", timeout=30, what="Taken"
        )
    statuses = {claim: status_of(api, claim) for claim in claims}
    (other,) = [claim for claim in claims if claim != held[0]]
    held_started = parse_time(statuses[held[0]]["lastAction"]["startedAt"])
    other_finished = parse_time(statuses[other]["lastAction"]["finishedAt"])
    assert held_started >= other_finished, statuses
