"""`kafka-autopilot explain OBJECT`: why the agent did (or did not) act on one object, from the outside.

An SRE asks "why did it (not) act on this volume just now?". For each rule that selects the object this
answers from what the cluster, Prometheus and the agent's own state objects hold, without the agent's
process: the expression's value now against its threshold, the state and since when, the cooldown
left, the last action and its outcome, an action in flight, a hold with its limit and when it lifts, a
pending approval, the object's own `kafka-autopilot.io/` annotations (an in-flight resize, an ignore
annotation), and what the next cycle would do.

"What the next cycle would do" is the core's own answer: `run_cycle` on this one object, from its stored
state, with the vectors of now (and, with `--policy`, the policy and its admission facts), and nothing
recorded, saved or applied. `explain_pair` is that part, pure; `gather` does the reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.actions.registry import CATALOG
from agent.adapters.clock import WallClock
from agent.adapters.errors import NotFoundError
from agent.adapters.kubernetes.approvals import Approval, ApprovalStore
from agent.adapters.kubernetes.client import KubeClient, connect
from agent.adapters.kubernetes.statestore import StateStore
from agent.adapters.kubernetes.statuscodec import StoredStatus
from agent.adapters.prometheus import PrometheusClient
from agent.audit.trail import iso_time
from agent.core.approvals import Phase
from agent.core.engine import CycleOutcome, run_cycle
from agent.core.matching import TargetObject, select_objects
from agent.core.policy import AdmissionFacts, Policy
from agent.core.rules import ConditionProvider, Rule, TargetKind
from agent.core.samples import Sample
from agent.core.states import RuleState
from agent.runtime.admission import AdmissionLedger
from agent.runtime.inventory import Inventory

KINDS = {
    "pvc": TargetKind.PVC,
    "persistentvolumeclaim": TargetKind.PVC,
    "node": TargetKind.NODE,
    "pod": TargetKind.BROKER,
    "broker": TargetKind.BROKER,
    "pool": TargetKind.STORAGE_POOL,
    "storagepool": TargetKind.STORAGE_POOL,
}


ANNOTATION_PREFIX = "kafka-autopilot.io/"


class ExplainError(ValueError):
    """The object cannot be explained as asked (a bad reference, no such object, no rule selects it)."""


@dataclass(frozen=True, kw_only=True)
class ObjectRef:
    kind: TargetKind
    key: str
    """As the agent keys it: namespace/name (PVC, broker pod), name (node), node/pool (storage pool)."""


def parse_object(text: str) -> ObjectRef:
    """`pvc/kafka/data-kafka-0`, `node/worker-3`, `pod/kafka/kafka-0` or `pool/worker-1/pool-a`."""
    kind_text, _, rest = text.partition("/")
    kind = KINDS.get(kind_text.lower())
    parts = rest.split("/") if rest else []
    wanted = 1 if kind is TargetKind.NODE else 2
    if kind is None or len(parts) != wanted or not all(parts):
        raise ExplainError(
            f"{text!r}: name the object as pvc/NAMESPACE/NAME, pod/NAMESPACE/NAME (a broker), node/NAME "
            "or pool/NODE/POOL"
        )
    return ObjectRef(kind=kind, key="/".join(parts))


@dataclass(frozen=True, kw_only=True)
class ConditionNow:
    expression: str
    value: float | None
    operator: str
    threshold: tuple[str, ...]
    holds: bool | None


@dataclass(frozen=True, kw_only=True)
class RuleExplanation:
    rule: str
    object: str
    conditions: tuple[ConditionNow, ...]
    state: str | None
    since: str | None
    reason: str
    cooldown_left_seconds: float | None
    last_action: Mapping[str, Any] | None
    in_flight: Mapping[str, Any] | None
    hold: str | None
    """The policy's (or an unknown identity's) hold, with its limit and when it lifts, as the state says."""
    approvals: tuple[Mapping[str, Any], ...]
    """ActionApprovals for this rule and object still waiting for an answer."""
    next_cycle: tuple[str, ...]
    note: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """The object's own `kafka-autopilot.io/` annotations (an in-flight resize, an ignore, a cordon by us)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time(at: float | None) -> str | None:
    return None if at is None else iso_time(at)


def next_cycle(outcome: CycleOutcome, *, key: str, before: RuleState | None) -> tuple[str, ...]:
    """What the cycle `outcome` describes would do to `key`, in words."""
    said = [f"start {p.action}: {p.before} -> {p.after}" for p in outcome.planned]
    said += [f"ask for approval of {p.action}: {p.before} -> {p.after}" for p in outcome.previews]
    said += [f"decline {d.action}: {d.code}: {d.reason}" for d in outcome.declined]
    said += [f"hold {h.action}: {h.code}: {h.reason}" for h in outcome.held]
    said += [f"move {t.from_state.value} -> {t.to_state.value} ({t.reason})" for t in outcome.transitions]
    state = outcome.states.get(key)
    if not said and state is not None:
        stay = f"nothing: stays {state.state.value}"
        said.append(f"{stay} ({state.reason})" if state.reason and state.state is before else stay)
    if key in outcome.excluded:
        said.append(f"nothing: the policy keeps it out ({outcome.excluded[key]})")
    return tuple(said)


def explain_pair(
    *,
    rule: Rule,
    target: TargetObject,
    stored: StoredStatus,
    vectors: Mapping[str, Sequence[Sample]] | None,
    now: float,
    approvals: Sequence[Approval] = (),
    policy: Policy | None = None,
    facts: AdmissionFacts | None = None,
    annotations: Mapping[str, str] | None = None,
) -> RuleExplanation:
    """One rule's view of one object now; pure (the reads are the caller's). `vectors` None: Prometheus was
    not asked, so neither the values nor the next cycle are known."""
    state = stored.state
    outcome = CycleOutcome(states={})
    if vectors is not None:
        outcome = run_cycle(
            rule=rule,
            objects=[target],
            vectors=vectors,
            states={target.key: state} if state is not None else {},
            now=now,
            policy=policy,
            facts=facts,
            catalog=CATALOG,
        )
    conditions: list[ConditionNow] = []
    for evaluation in outcome.evaluations[:1]:
        for expression, result in zip(rule.conditions.expressions, evaluation.results, strict=False):
            value = None if result.value is None or math.isnan(result.value) else result.value
            conditions.append(
                ConditionNow(
                    expression=expression.label,
                    value=value,
                    operator=expression.operator.value,
                    threshold=expression.values,
                    holds=result.holds,
                )
            )
    cooldown_left = None
    if state is not None and state.state is RuleState.ACTIVE_ACTIONS_TAKEN and state.cooldown_until is not None:
        cooldown_left = max(0.0, state.cooldown_until - now)
    hold = state.reason if state is not None and state.state is RuleState.ACTIONS_THROTTLED else None
    last = stored.last_action
    waiting = [
        approval
        for approval in approvals
        if approval.rule == rule.name
        and approval.object_key == target.key
        and approval.phase in (None, Phase.PENDING, Phase.APPROVED)
    ]
    return RuleExplanation(
        rule=rule.name,
        object=target.key,
        conditions=tuple(conditions),
        state=state.state.value if state is not None else None,
        since=_time(state.since) if state is not None else None,
        reason=state.reason if state is not None else "no state stored yet: the agent has not evaluated it",
        cooldown_left_seconds=cooldown_left,
        last_action=None
        if last is None
        else {
            "name": last.name,
            "before": last.before,
            "after": last.after,
            "started_at": _time(last.started_at),
            "finished_at": _time(last.finished_at),
            "outcome": last.outcome,
        },
        in_flight=None
        if stored.in_flight is None
        else {
            "action": stored.in_flight.action,
            "requested_at": _time(stored.in_flight.requested_at),
            "detail": dict(stored.in_flight.detail),
        },
        hold=hold,
        approvals=tuple(
            {
                "name": approval.name,
                "namespace": approval.namespace,
                "phase": (approval.phase or Phase.PENDING).value,
                "actions": approval.summary,
                "created_at": _time(approval.created_at),
            }
            for approval in waiting
        ),
        next_cycle=(f"nothing: {target.ignored}",)
        if target.ignored is not None
        else next_cycle(outcome, key=target.key, before=state.state if state is not None else None)
        if vectors is not None
        else ("not known: give --prometheus URL to evaluate the conditions",),
        note=outcome.notes.get(target.key, ""),
        annotations={k: v for k, v in (annotations or {}).items() if k.startswith(ANNOTATION_PREFIX)},
    )


def _value_text(condition: ConditionNow) -> str:
    value = "no data" if condition.value is None else f"{condition.value:.4g}"
    verdict = {True: "holds", False: "does not hold", None: "no verdict"}[condition.holds]
    return f"{condition.expression} = {value}  ({condition.operator} {', '.join(condition.threshold)}: {verdict})"


def render_text(explanations: Sequence[RuleExplanation]) -> str:
    lines: list[str] = []
    for item in explanations:
        lines.append(f"{item.object}  rule {item.rule}")
        lines.extend(f"  value:     {_value_text(condition)}" for condition in item.conditions)
        lines.append(f"  state:     {item.state or '(none)'} since {item.since or '-'}: {item.reason}")
        if item.cooldown_left_seconds is not None:
            lines.append(f"  cooldown:  {round(item.cooldown_left_seconds)}s left")
        if item.last_action is not None:
            last = item.last_action
            lines.append(
                f"  last:      {last['name']} {last['before']} -> {last['after']}: {last['outcome'] or 'running'}"
                f" (started {last['started_at']}, finished {last['finished_at'] or '-'})"
            )
        if item.in_flight is not None:
            lines.append(f"  in flight: {item.in_flight['action']} since {item.in_flight['requested_at']}")
        if item.hold is not None:
            lines.append(f"  held:      {item.hold}")
        for approval in item.approvals:
            lines.append(
                f"  approval:  {approval['namespace']}/{approval['name']} {approval['phase']}: {approval['actions']}"
                f" (kafka-autopilot approve {approval['name']} -n {approval['namespace']})"
            )
        lines.extend(f"  annotated: {key}={value}" for key, value in sorted(item.annotations.items()))
        if item.note:
            lines.append(f"  note:      {item.note}")
        lines.extend(f"  next:      {what}" for what in item.next_cycle)
        lines.append("")
    return "\n".join(lines).rstrip()


async def gather(
    *,
    ref: ObjectRef,
    rules: Sequence[Rule],
    kubeconfig: Path | None,
    prometheus_url: str | None,
    policy: Policy | None = None,
    dry_run: bool = False,
) -> list[RuleExplanation]:
    """Read what `explain_pair` needs for each rule of the object's kind that selects it."""
    clock = WallClock()
    mine = [rule for rule in rules if rule.target is ref.kind]
    if not mine:
        raise ExplainError(f"no rule targets a {ref.kind.value}")
    prometheus = PrometheusClient(url=prometheus_url or "http://no-prometheus.invalid", clock=clock)
    explanations = []
    try:
        async with await connect(kubeconfig=kubeconfig, clock=clock) as kube:
            inventory = Inventory(cluster=kube, prometheus=prometheus)
            store = StateStore(kube=kube, dry_run=dry_run)
            try:
                approvals = await ApprovalStore(kube=kube).list()
            except NotFoundError:  # the ActionApproval CRD is not installed: no approval can be pending
                approvals = []
            ledger = AdmissionLedger(policy=policy, history_source=store) if policy is not None else None
            found_anywhere = False
            for rule in mine:
                objects = [obj for obj in await inventory.objects(rule) if obj.key == ref.key]
                found_anywhere = found_anywhere or bool(objects)
                selected = select_objects(rule, objects)
                if not selected:
                    continue
                now = clock.now()
                asked = prometheus_url or rule.conditions.provider is ConditionProvider.KUBERNETES
                vectors = await inventory.vectors(rule, now) if asked else None
                facts = None
                if ledger is not None:
                    facts = await ledger.facts(rule, now, running=frozenset, cordoned_nodes=inventory.cordoned_nodes)
                explanations.append(
                    explain_pair(
                        annotations=await _annotations(kube, ref),
                        rule=rule,
                        target=selected[0],
                        stored=await store.status(rule.name, ref.key),
                        vectors=vectors,
                        now=now,
                        approvals=approvals,
                        policy=policy,
                        facts=facts,
                    )
                )
    finally:
        prometheus.close()
    if not found_anywhere:
        raise ExplainError(f"no {ref.kind.value} {ref.key} in the cluster")
    if not explanations:
        raise ExplainError(f"{ref.kind.value} {ref.key}: no rule selects it ({', '.join(r.name for r in mine)})")
    return explanations


async def _annotations(kube: KubeClient, ref: ObjectRef) -> Mapping[str, str]:
    """The object's annotations (a storage pool has none in Kubernetes)."""
    namespace, _, name = ref.key.rpartition("/")
    if ref.kind is TargetKind.PVC:
        return (await kube.get_pvc(namespace=namespace, name=name)).annotations
    if ref.kind is TargetKind.BROKER:
        return (await kube.get_pod(namespace=namespace, name=name)).annotations
    if ref.kind is TargetKind.NODE:
        return (await kube.get_node(ref.key)).annotations
    return {}
