"""Approvals without a cluster: names, namespaces, previews, the ActionApproval codec and the CLI's table.

The name is what makes approvals idempotent (a restart finds the same object) and episode-bound (an
old answer never approves a new episode), so it is pinned down from every side here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest
from helpers import REFERENCE_RULE

from agent.actions.registry import CATALOG
from agent.adapters.kubernetes.approvals import (
    ANSWERED_BY_ANNOTATION,
    approval_manifest,
    decode_approval,
    preview_status,
)
from agent.adapters.kubernetes.crds import crd_manifests
from agent.cli import build_parser
from agent.core.approvals import (
    Answer,
    Phase,
    approval_name,
    approval_namespace,
    build_request,
    episode_of,
    why_text,
)
from agent.core.engine import run_cycle
from agent.core.loader import parse_rules
from agent.core.matching import node_object, pvc_object
from agent.core.rules import Rule
from agent.core.samples import Sample
from agent.core.states import ObjectState, RuleState
from agent.runtime.approval_commands import age, waiting

GIB = 1024**3
T0 = 1_717_416_000.25
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def approval_rule() -> Rule:
    result = parse_rules(REFERENCE_RULE + "  enforcement: approvalRequired\n", file="rule.yaml", catalog=CATALOG)
    assert [str(problem) for problem in result.problems] == []
    (rule,) = result.rules
    return rule


PVC = pvc_object(namespace="kafka", name="data-kafka-0", labels={"app": "kafka"}, capacity_bytes=400 * GIB)


def awaiting_outcome() -> Any:
    rule = approval_rule()
    query = rule.conditions.expressions[0].query
    vectors = {query: [Sample(labels={"namespace": "kafka", "pvc": "data-kafka-0"}, value=82.5)]}
    return run_cycle(rule=rule, objects=[PVC], vectors=vectors, states={}, now=T0, catalog=CATALOG)


# --- names and namespaces -------------------------------------------------------------------------


def test_the_name_is_readable_deterministic_and_a_dns_subdomain() -> None:
    name = approval_name(rule="kafka-resize", object_key="kafka/data-kafka-0", episode=T0)
    assert name == approval_name(rule="kafka-resize", object_key="kafka/data-kafka-0", episode=T0)
    assert name.startswith("kafka-resize-data-kafka-0-")
    assert DNS_SUBDOMAIN.match(name) and len(name) <= 63


@pytest.mark.parametrize(
    ("rule", "key", "episode"),
    [
        pytest.param("kafka-resize", "kafka/data-kafka-0", T0 + 0.001, id="another episode"),
        pytest.param("kafka-resize", "other/data-kafka-0", T0, id="same name in another namespace"),
        pytest.param("kafka-resize-2", "kafka/data-kafka-0", T0, id="another rule"),
    ],
)
def test_another_episode_object_or_rule_gets_another_name(rule: str, key: str, episode: float) -> None:
    assert approval_name(rule=rule, object_key=key, episode=episode) != approval_name(
        rule="kafka-resize", object_key="kafka/data-kafka-0", episode=T0
    )


def test_a_dry_run_agents_approval_is_named_apart_so_a_live_agent_never_takes_its_answer() -> None:
    live = approval_name(rule="kafka-resize", object_key="kafka/data-kafka-0", episode=T0)
    dry = approval_name(rule="kafka-resize", object_key="kafka/data-kafka-0", episode=T0, dry_run=True)
    assert dry != live
    assert dry.startswith("dry-run-kafka-resize-data-kafka-0-")
    assert DNS_SUBDOMAIN.match(dry) and len(dry) <= 63
    long_rule = "r" * 200
    assert approval_name(rule=long_rule, object_key="k", episode=T0, dry_run=True) != approval_name(
        rule=long_rule, object_key="k", episode=T0
    ), "apart even when the readable part is cut"


def test_long_and_odd_names_are_cut_and_still_apart() -> None:
    long_rule = "r" * 200
    first = approval_name(rule=long_rule, object_key="ns/" + "a" * 100 + "1", episode=T0)
    second = approval_name(rule=long_rule, object_key="ns/" + "a" * 100 + "2", episode=T0)
    assert first != second
    for name in (first, second, approval_name(rule="Kafka_Resize", object_key="Node.Ä/x..y", episode=T0)):
        assert DNS_SUBDOMAIN.match(name), name
        assert len(name) <= 63


def test_an_episode_must_be_a_finite_time() -> None:
    with pytest.raises(ValueError, match="finite"):
        approval_name(rule="r", object_key="k", episode=float("nan"))


def test_namespaced_objects_keep_their_approvals_cluster_objects_go_to_the_agents_namespace() -> None:
    assert approval_namespace(target=PVC, agent_namespace="kafka-autopilot") == "kafka"
    node = node_object(name="node-1", labels={})
    assert approval_namespace(target=node, agent_namespace="kafka-autopilot") == "kafka-autopilot"


def test_the_episode_is_when_the_object_entered_awaiting_approval() -> None:
    assert episode_of(ObjectState()) is None
    state = ObjectState(
        state=RuleState.ACTIONS_DECLINED, entered_at={"ActionAwaitingApproval": T0, "ActionsDeclined": T0 + 9}
    )
    assert episode_of(state) == T0


# --- the preview --------------------------------------------------------------------------------------


def test_the_request_previews_the_planned_resize_and_says_why() -> None:
    outcome = awaiting_outcome()
    state = outcome.states[PVC.key]
    assert state.state is RuleState.ACTION_AWAITING_APPROVAL
    episode = episode_of(state)
    assert episode == T0
    request = build_request(
        rule="kafka-resize",
        target=PVC,
        episode=episode,
        previews=outcome.previews,
        evaluation=outcome.evaluations[0],
        agent_namespace="kafka-autopilot",
    )
    assert (request.namespace, request.object_key, request.object_kind) == (
        "kafka",
        "kafka/data-kafka-0",
        "PersistentVolumeClaim",
    )
    assert [(a.action, a.before, a.after) for a in request.actions] == [
        ("openstorage.io.action.volume/resize", "400Gi", "800Gi")
    ]
    assert request.summary == "openstorage.io.action.volume/resize 400Gi -> 800Gi"
    assert "= 82.5 (holds)" in request.why
    assert list(request.values.values()) == [82.5]


def test_why_says_no_data_for_a_missing_value() -> None:
    outcome = run_cycle(rule=approval_rule(), objects=[PVC], vectors={}, states={}, now=T0, catalog=CATALOG)
    assert "no data (unknown)" in why_text(outcome.evaluations[0])
    assert why_text(None) == "conditions hold"


# --- the ActionApproval codec ------------------------------------------------------------------------


def request() -> Any:
    outcome = awaiting_outcome()
    return build_request(
        rule="kafka-resize",
        target=PVC,
        episode=T0,
        previews=outcome.previews,
        evaluation=outcome.evaluations[0],
        agent_namespace="kafka-autopilot",
    )


def test_a_new_approval_is_pending_with_valid_labels() -> None:
    manifest = approval_manifest(request())
    assert manifest["metadata"]["namespace"] == "kafka"
    assert manifest["spec"]["approvalState"] == "pending"
    assert manifest["spec"]["objectKey"] == "kafka/data-kafka-0"
    labels = manifest["metadata"]["labels"]
    assert labels["kafka-autopilot.io/rule"] == "kafka-resize"
    assert labels["kafka-autopilot.io/object-name"] == "data-kafka-0"
    assert all(LABEL_VALUE.match(value) for value in labels.values()), labels


def _declared(schema: Mapping[str, Any], value: Any, path: str) -> list[str]:
    """Paths in `value` the schema does not declare (the apiserver would silently prune them)."""
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        missing = []
        for key, item in value.items():
            if key not in properties:
                missing.append(f"{path}.{key}")
            else:
                missing.extend(_declared(properties[key], item, f"{path}.{key}"))
        return missing
    if isinstance(value, list):
        return [found for item in value for found in _declared(schema.get("items", {}), item, f"{path}[]")]
    return []


def test_every_field_the_agent_writes_is_declared_in_the_crd() -> None:
    (crd,) = [m for m in crd_manifests() if m["spec"]["names"]["kind"] == "ActionApproval"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    manifest = approval_manifest(request())
    status = preview_status(request(), now=T0)
    assert _declared(schema["properties"]["spec"], manifest["spec"], "spec") == []
    assert _declared(schema["properties"]["status"], status, "status") == []
    phases = schema["properties"]["status"]["properties"]["phase"]["enum"]
    assert phases == [phase.value for phase in Phase]


def test_an_approval_reads_back_with_its_answer_phase_and_preview() -> None:
    manifest = approval_manifest(request())
    manifest["metadata"].update(
        creationTimestamp="2024-06-03T12:00:00Z",
        resourceVersion="42",
        annotations={ANSWERED_BY_ANNOTATION: "sre-on-call"},
    )
    manifest["spec"]["approvalState"] = "approved"
    manifest["status"] = preview_status(request(), now=T0)
    approval = decode_approval(manifest)
    assert approval.answer is Answer.APPROVED
    assert approval.phase is Phase.PENDING
    assert approval.answered_by == "sre-on-call"
    assert approval.summary == "openstorage.io.action.volume/resize 400Gi -> 800Gi"
    assert approval.created_at == 1_717_416_000.0
    assert approval.resource_version == "42"
    assert "82.5" in approval.why


def test_an_approval_without_status_has_no_phase_yet() -> None:
    approval = decode_approval(approval_manifest(request()))
    assert approval.phase is None
    assert waiting(approval)
    assert approval.summary == "(preview not written yet)"


# --- the CLI's table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (7200, "2h"), (3 * 86400, "3d")]
)
def test_age_reads_like_kubectl(seconds: float, shown: str) -> None:
    assert age(seconds) == shown


def test_only_unanswered_live_approvals_are_waiting() -> None:
    manifest = approval_manifest(request())
    manifest["status"] = {"phase": "Cancelled"}
    assert not waiting(decode_approval(manifest))
    manifest["status"] = {"phase": "Pending"}
    manifest["spec"]["approvalState"] = "declined"
    assert not waiting(decode_approval(manifest))


# --- the agent's namespace ----------------------------------------------------------------------------


def test_run_namespace_defaults_to_pod_namespace_else_kafka_autopilot(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["run", "--prometheus", "http://prometheus:9090", "--rules", "rules"]
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert build_parser().parse_args(argv).namespace == "kafka-autopilot"
    monkeypatch.setenv("POD_NAMESPACE", "autopilot-system")
    assert build_parser().parse_args(argv).namespace == "autopilot-system"
    assert build_parser().parse_args([*argv, "--namespace", "ops"]).namespace == "ops"
