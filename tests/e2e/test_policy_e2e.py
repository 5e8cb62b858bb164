"""Guardrail policies at work: the real agent, the reference rule unchanged, a policy per scenario.

Each test starts the agent with its own policy (written into tmp_path, or the shipped audit-only one),
pushes volumes past the rule's 80% threshold, and checks what the policy let through and what it held
back: a held object shows its hold as a state in its AutopilotRuleObject status and as an Event. No
scenario waits out the rule's 5-minute cooldown: several volumes cross the threshold at once instead.

Volumes used: data-kafka-0 and -1 stay 400Gi until the rate-limit scenario resizes one of them;
data-kafka-2 and -3 are resized by the max-concurrent scenario.

Last, AutopilotRules are live objects (`--cluster-rules`, no policy): a rule created, edited, made
invalid and deleted with the API while the agent runs changes what it does within one poll, and the
columns `kubectl get autopilotrules` prints (the CRD's printer columns, read as the Table kubectl asks
for) show its status; a rule named as a rule file's is refused, naming both.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
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
    state_of,
)
from helpers import eventually
from metrics_text import metric_total

from agent.adapters.kubernetes.statuscodec import parse_time
from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi, KubeApiError

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
    (event, *_) = eventually(lambda: events_for(api, held[0], "ActionsThrottled"), timeout=30, what="the Event")
    assert "MaxConcurrentActions: 1 actions in flight; policy one-at-a-time allows 1 at once" in event["note"]
    for claim in claims:
        eventually(lambda claim=claim: requested(api, claim) == "800Gi", timeout=120, what=f"{claim} resized")
    for claim in claims:
        eventually(lambda claim=claim: records(agent, "action-verified", claim), timeout=60, what=f"{claim} verified")
        eventually(
            lambda claim=claim: status_of(api, claim).get("state") == "ActiveActionsTaken", timeout=30, what="Taken"
        )
    # Which ran first is what the cycles saw first; the other was held until it was done (an object may
    # also be held once by a view of in-flight actions that is not yet current: holding is the safe side).
    statuses = {claim: status_of(api, claim) for claim in claims}
    first, second = sorted(claims, key=lambda claim: parse_time(statuses[claim]["lastAction"]["startedAt"]))
    assert "ActionsThrottled" in statuses[second]["enteredAt"], statuses
    second_started = parse_time(statuses[second]["lastAction"]["startedAt"])
    first_finished = parse_time(statuses[first]["lastAction"]["finishedAt"])
    assert second_started >= first_finished, statuses
    throttled = [record["object"] for record in agent.records() if record["event"] == "action-throttled"]
    assert f"{workload.NAMESPACE}/{second}" in throttled, throttled


# --- AutopilotRules are live objects --------------------------------------------------------------------

AUTOPILOT_RULES = "/apis/kafka-autopilot.io/v1alpha1/autopilotrules"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
LIVE_RULE = "kafka-live"
LIVE_POLL_SECONDS = 5


def live_rule(name: str, threshold: str) -> dict[str, Any]:
    """The reference rule as an AutopilotRule, with another threshold, a poll of LIVE_POLL_SECONDS and a
    `for` of an hour: an object over the threshold is Triggered and stays so, and nothing is resized."""
    spec = yaml.safe_load((RULES / "kafka-resize.yaml").read_text())["spec"]
    spec["conditions"]["expressions"][0]["values"] = [threshold]
    spec["conditions"]["for"] = "1h"
    spec["pollInterval"] = LIVE_POLL_SECONDS
    return {
        "apiVersion": "kafka-autopilot.io/v1alpha1",
        "kind": "AutopilotRule",
        "metadata": {"name": name},
        "spec": spec,
    }


def printed_columns(api: KubeApi, name: str) -> dict[str, Any]:
    """The columns `kubectl get autopilotrules -o wide` shows for one rule (the CRD's printer columns)."""
    status, text = api.request("GET", f"{AUTOPILOT_RULES}?fieldSelector=metadata.name={name}", accept=TABLE)
    assert status == 200, text
    table = json.loads(text)
    (row,) = table["rows"]
    return {column["name"]: cell for column, cell in zip(table["columnDefinitions"], row["cells"], strict=True)}


def usage_percent(sandbox: Sandbox, claim: str) -> float:
    """The claim's usage as Prometheus has it now (the rules' expression), 0 when it has none yet."""
    selector = f'namespace="{workload.NAMESPACE}",pvc="{claim}"'
    query = f"100 * (px_volume_usage_bytes{{{selector}}} / px_volume_capacity_bytes{{{selector}}})"
    url = f"{sandbox.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        result = json.loads(answer.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def rule_events(api: KubeApi, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        event
        for event in api.get("/apis/events.k8s.io/v1/namespaces/default/events")["items"]
        if event.get("regarding", {}).get("kind") == "AutopilotRule"
        and event["regarding"].get("name") == name
        and event.get("reason") == reason
    ]


def test_an_autopilotrule_edited_while_the_agent_runs_changes_what_it_does_within_a_poll(
    sandbox: Sandbox, api: KubeApi, tmp_path: Path
) -> None:
    claim = workload.pvc_name(3)
    key = f"{workload.NAMESPACE}/{claim}"
    agent = AgentProcess(
        sandbox=sandbox, rules=RULE_FILES, audit_path=tmp_path / "live.jsonl", extra_args=["--cluster-rules"]
    )
    agent.start()
    try:
        capacity_gib = int(requested(api, claim).removesuffix("Gi"))
        set_usage(sandbox, claim, 0.75 * capacity_gib)  # under the file rule's 80%: it does nothing
        eventually(lambda: usage_percent(sandbox, claim) > 74, timeout=30, what="Prometheus sees the usage")
        api.create(AUTOPILOT_RULES, live_rule(LIVE_RULE, "90"))
        api.create(AUTOPILOT_RULES, live_rule(RULE, "10"))  # the rule file's name
        # a quiet Normal object keeps no AutopilotRuleObject: the rule at work shows in its health and status
        eventually(lambda: agent.rule_health().get(LIVE_RULE) == "ok", timeout=90, what="the new rule at work")
        assert state_of(api, LIVE_RULE, key) is None
        columns = eventually(
            lambda: (found := printed_columns(api, LIVE_RULE))["Evaluated"] and found,
            timeout=30,
            what="the status columns",
        )
        assert columns["Valid"] == "True" and columns["Evaluated"], columns
        refused = eventually(
            lambda: (found := printed_columns(api, RULE))["Valid"] == "False" and found,
            timeout=30,
            what="the conflicting rule refused",
        )
        assert "cluster:autopilotrule/kafka-resize" in refused["Problems"], refused
        assert "rules/kafka-resize.yaml" in refused["Problems"], refused

        edited = time.monotonic()
        api.merge_patch(f"{AUTOPILOT_RULES}/{LIVE_RULE}", {"spec": live_rule(LIVE_RULE, "70")["spec"]})
        eventually(lambda: state_of(api, LIVE_RULE, key) == "Triggered", timeout=30, what="the edit followed")
        took = time.monotonic() - edited
        print(f"\nLIVE RULES: edit -> new state: {took:.1f}s (poll {LIVE_POLL_SECONDS}s)")
        # Within one poll of the agent, plus the second this test may take to see the state through the API.
        assert took < LIVE_POLL_SECONDS + 1, "within one poll"
        columns = eventually(
            lambda: (found := printed_columns(api, LIVE_RULE))["States"] and "Triggered" in found["States"] and found,
            timeout=30,
            what="the states column",
        )
        assert json.loads(columns["States"]) == {"Normal": 3, "Triggered": 1}, columns
        (event, *_) = eventually(lambda: rule_events(api, LIVE_RULE, "Triggered"), timeout=30, what="the Event")
        assert key in event["note"] and "Normal => Triggered" in event["note"], event

        bad = live_rule(LIVE_RULE, "70")["spec"]
        bad["conditions"]["expressions"][0]["operator"] = "Bigger"
        api.merge_patch(f"{AUTOPILOT_RULES}/{LIVE_RULE}", {"spec": bad})
        invalid = eventually(
            lambda: (found := printed_columns(api, LIVE_RULE))["Valid"] == "False" and found,
            timeout=30,
            what="the invalid edit reported",
        )
        assert "operator" in invalid["Problems"] and "still running generation 2" in invalid["Problems"], invalid
        assert state_of(api, LIVE_RULE, key) == "Triggered"

        api.delete(f"{AUTOPILOT_RULES}/{LIVE_RULE}")
        eventually(lambda: LIVE_RULE not in agent.rule_health(), timeout=LIVE_POLL_SECONDS * 2, what="the loop stopped")
        evaluated = metric_total(agent.metrics(), "kafka_autopilot_evaluations_total", rule=LIVE_RULE)
        file_rule = metric_total(agent.metrics(), "kafka_autopilot_evaluations_total", rule=RULE)
        time.sleep(2 * LIVE_POLL_SECONDS)
        assert metric_total(agent.metrics(), "kafka_autopilot_evaluations_total", rule=LIVE_RULE) == evaluated
        assert metric_total(agent.metrics(), "kafka_autopilot_evaluations_total", rule=RULE) > file_rule
        lifecycle = [
            record["event"]
            for record in agent.records()
            if record["rule"] == LIVE_RULE and str(record["event"]).startswith("rule-")
        ]
        assert lifecycle == ["rule-added", "rule-changed", "rule-invalid", "rule-removed"], lifecycle
        assert requested(api, claim) == f"{capacity_gib}Gi"
    finally:
        agent.stop()
        set_usage(sandbox, claim, 100)
        for name in (LIVE_RULE, RULE):
            with contextlib.suppress(KubeApiError):
                api.delete(f"{AUTOPILOT_RULES}/{name}")
        for item in api.get(STATE_OBJECTS)["items"]:
            api.delete(f"{STATE_OBJECTS}/{item['metadata']['name']}")
