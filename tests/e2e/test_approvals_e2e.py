"""Approvals end to end: the reference resize, with approval required, against the sandbox.

One sandbox and one live agent (a subprocess, as users run it) for the module; the tests run in order,
each on a PVC of its own, and answers are given with the real `kafka-autopilot approve|decline`:
- the resize waits in ActionAwaitingApproval (state, Event, an ActionApproval with the preview) until
  approved, then runs, and the approval is marked Used. The agent is told its approvers (a user, and
  the admin's group): an approval by another Kubernetes user (a ServiceAccount with the approver
  role) is refused, put back to pending with a Warning Event, and the one by the approver is acted on;
  with the chart's ValidatingAdmissionPolicy applied (`rbac.approver.admissionPolicy`), a hand-made
  answer naming someone else than its author is refused by the apiserver;
- a declined resize never runs in that episode; the next episode asks again, with a new approval;
- conditions that clear while an approval waits cancel it (kept, marked Cancelled, with the reason);
- an answer given while the agent is down is not lost, and a restart creates no second approval;
- in dry-run the approval objects are still created and still gate the recorded action, and the
  agent mutates nothing but its own objects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import APPROVER_RULES, TokenApi, apply, approver_kubeconfig, of_kind, render
from e2e_support import (
    AGENTS_OWN_RESOURCES,
    RULES,
    STATE_OBJECTS,
    AgentProcess,
    agent_mutations,
    answer,
    audit_log_entries,
    patch_times,
    requested,
    set_usage,
)
from helpers import eventually

from agent.adapters.kubernetes.approvals import ANSWERED_BY_ANNOTATION as ANSWERED_BY
from agent.adapters.kubernetes.approvals import approval_manifest
from agent.core.approvals import ApprovalRequest
from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi

pytestmark = pytest.mark.sandbox

RULE = "kafka-resize"
APPROVALS = f"/apis/kafka-autopilot.io/v1alpha1/namespaces/{workload.NAMESPACE}/actionapprovals"
AGENT_NAMESPACE = "kafka-autopilot"
SRE = "e2e-sre"
SRE_USER = f"system:serviceaccount:{workload.NAMESPACE}:{SRE}"
OUTSIDER = "e2e-outsider"
OUTSIDER_USER = f"system:serviceaccount:{workload.NAMESPACE}:{OUTSIDER}"
APPROVERS = ["--approver-user", SRE_USER, "--approver-group", "system:masters"]
"""The SRE ServiceAccount by user; the sandbox's admin (every other test's answers) by its group."""


def approval_rule_args(tmp_path: Path) -> tuple[list[Path], list[str]]:
    """The reference rule unchanged, plus a policy that requires approval for its resize action."""
    policy = tmp_path / "approve-resizes.yaml"
    policy.write_text(
        "apiVersion: kafka-autopilot.io/v1alpha1\n"
        "kind: AutopilotPolicy\n"
        "metadata:\n"
        "  name: approve-resizes\n"
        "spec:\n"
        "  approvalRequired:\n"
        "    - openstorage.io.action.volume/resize\n"
    )
    return [RULES / "kafka-resize.yaml"], ["--policy", str(policy)]


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> KubeApi:
    return sandbox.kube.api()


@pytest.fixture(scope="module")
def rule_args(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[str]]:
    return approval_rule_args(tmp_path_factory.mktemp("rules"))


@pytest.fixture(scope="module")
def agent(
    sandbox: Sandbox, rule_args: tuple[list[Path], list[str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    rules, extra = rule_args
    with AgentProcess(
        sandbox=sandbox,
        rules=rules,
        extra_args=[*extra, *APPROVERS],
        audit_path=tmp_path_factory.mktemp("agent") / "audit.jsonl",
    ) as process:
        yield process


@pytest.fixture(scope="module")
def people(sandbox: Sandbox, api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Kubeconfigs of two ServiceAccounts, both with the approver role: one is an approver, one is not."""
    role = "kafka-autopilot-e2e-approver"
    api.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": role}, "rules": APPROVER_RULES})
    policy = render(values={"rbac": {"approver": {"admissionPolicy": True}}})
    apply(api, [*of_kind(policy, "ValidatingAdmissionPolicy"), *of_kind(policy, "ValidatingAdmissionPolicyBinding")])
    folder = tmp_path_factory.mktemp("people")
    return {
        name: approver_kubeconfig(
            api,
            server=sandbox.kube.apiserver_url,
            ca_file=sandbox.kube.pki_dir / "ca.crt",
            namespace=workload.NAMESPACE,
            name=name,
            role=role,
            folder=folder,
        )
        for name in (SRE, OUTSIDER)
    }


# --- readers ----------------------------------------------------------------------------------------


def state_of(api: KubeApi, claim: str) -> str | None:
    for item in api.get(STATE_OBJECTS)["items"]:
        spec = item.get("spec", {})
        if spec.get("rule") == RULE and spec.get("objectKey") == f"{workload.NAMESPACE}/{claim}":
            return item.get("status", {}).get("state")
    return None


def approvals_for(api: KubeApi, claim: str) -> list[dict[str, Any]]:
    """The claim's ActionApprovals, oldest first."""
    items = [
        item
        for item in api.get(APPROVALS)["items"]
        if item["spec"].get("objectKey") == f"{workload.NAMESPACE}/{claim}" and item["spec"].get("rule") == RULE
    ]
    return sorted(items, key=lambda item: item["metadata"]["creationTimestamp"])


def phase(approval: dict[str, Any]) -> str | None:
    return approval.get("status", {}).get("phase")


def waiting_approval(api: KubeApi, claim: str) -> dict[str, Any] | None:
    pending = [item for item in approvals_for(api, claim) if phase(item) == "Pending"]
    return pending[-1] if pending else None


def approval_named(api: KubeApi, name: str) -> dict[str, Any]:
    return api.get(f"{APPROVALS}/{name}")


def event_reasons(api: KubeApi, claim: str) -> list[str]:
    events = api.get(f"/apis/events.k8s.io/v1/namespaces/{workload.NAMESPACE}/events")["items"]
    return [event["reason"] for event in events if event.get("regarding", {}).get("name") == claim]


def reasons_seen(api: KubeApi, claim: str, reasons: set[str]) -> None:
    """Wait for Events with these reasons on the claim (the agent writes Events from a queue, a moment after
    the state they tell of)."""
    eventually(lambda: reasons <= set(event_reasons(api, claim)), timeout=30, what=f"Events {sorted(reasons)}")


def records_for(agent: AgentProcess, claim: str, *events: str) -> list[dict[str, Any]]:
    key = f"{workload.NAMESPACE}/{claim}"
    return [record for record in agent.records() if record["object"] == key and record["event"] in events]


def awaiting_with_approval(api: KubeApi, claim: str) -> dict[str, Any]:
    found: dict[str, Any] = eventually(
        lambda: state_of(api, claim) == "ActionAwaitingApproval" and waiting_approval(api, claim),
        timeout=120,
        what=f"{claim} in ActionAwaitingApproval with a pending ActionApproval",
    )
    return found


# --- approve --------------------------------------------------------------------------------------------


def test_the_resize_waits_for_approval_then_runs(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess, people: dict[str, Path]
) -> None:
    assert api.get(f"/api/v1/namespaces/{AGENT_NAMESPACE}")["metadata"]["name"] == AGENT_NAMESPACE
    claim = workload.pvc_name(0)
    set_usage(sandbox, claim, 330)
    approval = awaiting_with_approval(api, claim)
    name = approval["metadata"]["name"]
    preview = approval["status"]["preview"]
    assert (preview["action"], preview["object"]) == ("openstorage.io.action.volume/resize", f"kafka/{claim}")
    assert (preview["before"], preview["after"]) == ("400Gi", "800Gi")
    assert "100 * (px_volume_usage_bytes / px_volume_capacity_bytes) = 8" in preview["why"]
    assert approval["spec"]["approvalState"] == "pending"
    assert name.startswith(f"kafka-resize-{claim}-")
    reasons_seen(api, claim, {"ActionAwaitingApproval", "ApprovalRequested"})

    time.sleep(10)  # five cycles: nothing may happen without an answer
    assert requested(api, claim) == "400Gi"
    assert state_of(api, claim) == "ActionAwaitingApproval"
    assert len(approvals_for(api, claim)) == 1
    assert not records_for(agent, claim, "action-planned", "action-verified")

    mine = ["-n", workload.NAMESPACE]  # their approver role is bound in that namespace only
    outsider = answer(sandbox, "approve", name, *mine, "--reason", "e2e: looks fine", kubeconfig=people[OUTSIDER])
    assert outsider.returncode == 0, outsider.stderr  # the CLI records the answer; the agent refuses it
    refused = eventually(
        lambda: "refused" in (item := approval_named(api, name)).get("status", {}).get("message", "") and item,
        timeout=30,
        what="the outsider's approval refused",
    )
    assert refused["spec"]["approvalState"] == "pending"
    assert "kafka-autopilot.io/answered-by" not in refused["metadata"].get("annotations", {})
    assert f"approved by {OUTSIDER_USER}, refused: {OUTSIDER_USER} (groups: " in refused["status"]["message"]
    assert f"is not an approver: user {SRE_USER}, group system:masters" in refused["status"]["message"]
    reasons_seen(api, claim, {"ApprovalRefused"})
    (refusal,) = records_for(agent, claim, "approval-refused")
    assert OUTSIDER_USER in refusal["reason"]
    time.sleep(4)  # two cycles: still waiting, nothing done
    assert (requested(api, claim), state_of(api, claim)) == ("400Gi", "ActionAwaitingApproval")

    approved = answer(
        sandbox, "approve", name, *mine, "--reason", "e2e: capacity is fine", "--by", "e2e", kubeconfig=people[SRE]
    )
    assert approved.returncode == 0, approved.stderr
    answered_at = time.time()
    eventually(lambda: requested(api, claim) == "800Gi", timeout=60, what="the PVC request at 800Gi")
    (patched,) = patch_times(sandbox, claim)
    latency = datetime.fromisoformat(patched.replace("Z", "+00:00")).timestamp() - answered_at
    print(f"\nLATENCY approve -> PVC patch: {latency:.2f}s")
    eventually(lambda: state_of(api, claim) == "ActiveActionsTaken", timeout=60, what="state Taken")
    used = eventually(
        lambda: phase(approval_named(api, name)) == "Used" and approval_named(api, name), timeout=30, what="Used"
    )
    assert "verified" in used["status"]["message"]
    recorded = [
        r["event"] for r in records_for(agent, claim, "approval-requested", "approval-approved", "approval-used")
    ]
    assert recorded == ["approval-requested", "approval-approved", "approval-used"]
    (approval_record,) = records_for(agent, claim, "approval-approved")
    assert f"approved by {SRE_USER}" in approval_record["reason"]
    reasons_seen(api, claim, {"ApprovalApproved", "ApprovalUsed", "ActionVerified"})
    assert 'kafka_autopilot_approvals_total{outcome="used",rule="kafka-resize"} 1' in agent.metrics()


def test_the_apiserver_refuses_an_answer_that_names_someone_else(
    sandbox: Sandbox, api: KubeApi, people: dict[str, Path]
) -> None:
    """The chart's admission policy: the outsider may patch ActionApprovals (RBAC), but not write the
    SRE's name as the one who answered; answering under their own name goes through (and the agent
    refuses it, as above). The approval is one the agent never asked for, so it ignores it."""
    request = ApprovalRequest(
        name="forgery-check",
        namespace=workload.NAMESPACE,
        rule=RULE,
        object_kind="PersistentVolumeClaim",
        object_key=f"{workload.NAMESPACE}/no-such-claim",
        object_namespace=workload.NAMESPACE,
        object_name="no-such-claim",
        episode=0.0,
        actions=(),
        why="e2e",
    )
    api.create(APPROVALS, approval_manifest(request))
    token = yaml.safe_load(people[OUTSIDER].read_text())["users"][0]["user"]["token"]
    host, _, port = sandbox.kube.apiserver_url.removeprefix("https://").rpartition(":")
    outsider = TokenApi(host=host, port=int(port), ca_file=sandbox.kube.pki_dir / "ca.crt", token=token)

    def answer_as(user: str) -> tuple[int, dict[str, Any]]:
        patch = {"metadata": {"annotations": {ANSWERED_BY: user}}, "spec": {"approvalState": "approved"}}
        return outsider.request(
            "PATCH", f"{APPROVALS}/{request.name}", patch, content_type="application/merge-patch+json"
        )

    forged_status, forged = answer_as(SRE_USER)
    forged_state = approval_named(api, request.name)["spec"]["approvalState"]
    honest_status, honest = answer_as(OUTSIDER_USER)

    assert forged_status == 403, forged
    assert f"{ANSWERED_BY} must name the user making the change, {OUTSIDER_USER}" in forged["message"]
    assert forged_state == "pending"
    assert honest_status == 200, honest
    assert honest["metadata"]["annotations"][ANSWERED_BY] == OUTSIDER_USER


# --- decline ----------------------------------------------------------------------------------------------


def test_a_declined_resize_never_runs_in_that_episode(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    claim = workload.pvc_name(1)
    set_usage(sandbox, claim, 330)
    name = awaiting_with_approval(api, claim)["metadata"]["name"]
    declined = answer(sandbox, "decline", name, "--reason", "e2e: not now")
    assert declined.returncode == 0, declined.stderr
    eventually(lambda: state_of(api, claim) == "ActionsDeclined", timeout=60, what="state ActionsDeclined")
    eventually(lambda: phase(approval_named(api, name)) == "Declined", timeout=30, what="approval Declined")
    set_usage(sandbox, claim, 360)  # the conditions keep holding, and grow
    time.sleep(15)
    assert requested(api, claim) == "400Gi"
    assert state_of(api, claim) == "ActionsDeclined"
    assert not records_for(agent, claim, "action-planned", "action-verified", "action-applied")
    assert patch_times(sandbox, claim) == []
    reasons_seen(api, claim, {"ApprovalDeclined"})
    again = answer(sandbox, "approve", name)
    assert again.returncode == 1
    assert "already declined" in again.stderr

    set_usage(sandbox, claim, 100)  # the episode ends ...
    eventually(lambda: state_of(api, claim) == "Normal", timeout=60, what="back to Normal")
    set_usage(sandbox, claim, 330)  # ... and the next one asks again, with an approval of its own
    fresh = awaiting_with_approval(api, claim)
    assert fresh["metadata"]["name"] != name
    assert fresh["spec"]["approvalState"] == "pending"
    assert requested(api, claim) == "400Gi"


# --- cancel -------------------------------------------------------------------------------------------------


def test_conditions_clearing_while_waiting_cancel_the_approval(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    claim = workload.pvc_name(1)  # the episode the previous test left waiting
    name = awaiting_with_approval(api, claim)["metadata"]["name"]
    set_usage(sandbox, claim, 100)
    eventually(lambda: state_of(api, claim) == "Normal", timeout=60, what="back to Normal")
    cancelled = eventually(
        lambda: phase(approval_named(api, name)) == "Cancelled" and approval_named(api, name),
        timeout=30,
        what="the approval Cancelled",
    )
    assert "conditions cleared" in cancelled["status"]["message"]
    assert cancelled["status"]["preview"]["after"] == "800Gi"  # kept, for people to read
    reasons_seen(api, claim, {"ApprovalCancelled"})
    assert records_for(agent, claim, "approval-cancelled")
    late = answer(sandbox, "approve", name)
    assert late.returncode == 1
    assert "no longer waits" in late.stderr
    time.sleep(6)
    assert requested(api, claim) == "400Gi"


# --- restart --------------------------------------------------------------------------------------------------


def test_an_answer_given_while_the_agent_is_down_is_not_lost(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    claim = workload.pvc_name(2)
    set_usage(sandbox, claim, 330)
    name = awaiting_with_approval(api, claim)["metadata"]["name"]
    agent.kill()
    approved = answer(sandbox, "approve", name)
    assert approved.returncode == 0, approved.stderr
    agent.start()
    eventually(lambda: requested(api, claim) == "800Gi", timeout=90, what="the PVC request at 800Gi")
    eventually(lambda: phase(approval_named(api, name)) == "Used", timeout=60, what="approval Used")
    assert [item["metadata"]["name"] for item in approvals_for(api, claim)] == [name]
    assert len(patch_times(sandbox, claim)) == 1


# --- dry-run ------------------------------------------------------------------------------------------------------


def test_dry_run_still_asks_and_waits_and_changes_nothing_else(
    sandbox: Sandbox,
    api: KubeApi,
    agent: AgentProcess,
    rule_args: tuple[list[Path], list[str]],
    tmp_path: Path,
) -> None:
    agent.stop()
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    rules, extra = rule_args
    dry = AgentProcess(sandbox=sandbox, rules=rules, extra_args=extra, audit_path=tmp_path / "dry.jsonl", dry_run=True)
    dry.start()
    try:
        claim = workload.pvc_name(3)
        set_usage(sandbox, claim, 330)
        name = awaiting_with_approval(api, claim)["metadata"]["name"]
        assert name.startswith(f"dry-run-kafka-resize-{claim}-"), "named apart: a live agent never takes it"
        time.sleep(8)
        assert not records_for(dry, claim, "action-dry-run")  # the approval gates the recorded action too
        approved = answer(sandbox, "approve", name)
        assert approved.returncode == 0, approved.stderr
        planned = eventually(
            lambda: records_for(dry, claim, "action-dry-run"), timeout=60, what="the dry-run resize record"
        )
        assert (planned[0]["before"], planned[0]["after"]) == ("400Gi", "800Gi")
        eventually(lambda: phase(approval_named(api, name)) == "Used", timeout=60, what="approval Used")
        time.sleep(2)
        assert requested(api, claim) == "400Gi"
        touched = {
            entry["objectRef"].get("resource") for entry in agent_mutations(audit_log_entries(sandbox), since=since)
        }
        assert "actionapprovals" in touched
        assert touched <= AGENTS_OWN_RESOURCES, touched
    finally:
        dry.stop()
