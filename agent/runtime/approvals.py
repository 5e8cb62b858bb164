"""The approval loop of the agent: ask when a rule waits for approval, read the answer, tidy up.

After each cycle of a rule (`after_cycle`):
- every object in ActionAwaitingApproval has its ActionApproval (created at the first cycle that
  finds it missing, with the preview of what would be done and why: a restart between saving the
  state and creating the approval is caught up on the next cycle);
- an answer is fed through the state machine (`ApprovalAnswered`), the new state persisted and the
  transition recorded: approved, the actions start at the next evaluation (the rule is triggered at
  once); declined, ActionsDeclined, and nothing runs in this episode;
- an object that went back to Normal (its conditions cleared) while its approval waited, or before
  an approved action could run, gets its approval marked Cancelled, with the reason, and kept for
  people to read. An approval a person deleted while it waited is asked for again.
After an approved action ran (`action_finished`), its approval is marked Used.

Each of these steps writes an audit record (`approval-requested`, `-approved`, `-declined`,
`-cancelled`, `-used`) and an Event on the object. A failure to reach the apiserver costs the
object this cycle only: it is logged and recorded, and the next cycle tries again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from agent.actions.base import Outcome
from agent.adapters.errors import KubeError, StateConflictError
from agent.adapters.kubernetes.approvals import Approval
from agent.audit.trail import AUDIT_KEYS, AuditRecord, iso_time
from agent.core.approvals import (
    FINAL_PHASES,
    ActionPreview,
    Answer,
    ApprovalRequest,
    Phase,
    approval_name,
    approval_namespace,
    build_request,
    episode_of,
)
from agent.core.engine import CycleOutcome, PlannedAction, plan_actions
from agent.core.matching import TargetObject
from agent.core.rules import Rule
from agent.core.states import ApprovalAnswered, ObjectState, RuleState, decide

if TYPE_CHECKING:
    from agent.runtime.agent import Agent

log = structlog.get_logger("kafka-autopilot")


_MAY_HOLD_AN_APPROVAL = frozenset(
    {RuleState.ACTION_AWAITING_APPROVAL, RuleState.ACTION_AWAITING_WINDOW, RuleState.ACTIONS_DECLINED}
)
"""States an episode may leave for Normal with its approval unused (waiting, approved but outside the
action window, approved but declined by the planner)."""


class ApprovalBackend(Protocol):
    """agent.adapters.kubernetes.approvals.ApprovalStore: the ActionApprovals in the Kubernetes API."""

    async def ensure(self, request: ApprovalRequest, *, now: float) -> tuple[Approval, bool]: ...

    async def get(self, *, namespace: str, name: str) -> Approval | None: ...

    async def set_phase(
        self, *, namespace: str, name: str, phase: Phase, message: str, now: float
    ) -> Approval | None: ...


@dataclass
class ApprovalFlow:
    store: ApprovalBackend
    agent_namespace: str

    async def after_cycle(
        self,
        agent: Agent,
        rule: Rule,
        outcome: CycleOutcome,
        *,
        before: Mapping[str, ObjectState],
        objects: Sequence[TargetObject],
        conflicted: set[str],
    ) -> None:
        by_key = {target.key: target for target in objects}
        for transition in outcome.transitions:
            if transition.from_state in _MAY_HOLD_AN_APPROVAL and transition.to_state is RuleState.NORMAL:
                target = by_key.get(transition.object)
                episode = episode_of(before.get(transition.object, ObjectState()))
                if target is not None and episode is not None:
                    await self._guarded(
                        agent, rule, target, self.cancel(agent, rule, target, episode, transition.reason)
                    )
        for key, state in outcome.states.items():
            target = by_key.get(key)
            if state.state is not RuleState.ACTION_AWAITING_APPROVAL or key in conflicted or target is None:
                continue
            await self._guarded(agent, rule, target, self.follow(agent, rule, target, state, outcome))

    async def _guarded(self, agent: Agent, rule: Rule, target: TargetObject, step: Any) -> None:
        try:
            await step
        except KubeError as error:
            log.warning(
                "approval step failed; next cycle tries again", rule=rule.name, object=target.key, error=str(error)
            )
            agent.trail.write(
                approval_record(
                    event="approval-error",
                    rule=rule.name,
                    target=target,
                    at=agent.clock.now(),
                    approval="",
                    outcome="error",
                    reason=str(error),
                    dry_run=agent.records_dry_run(rule),
                )
            )

    async def follow(
        self, agent: Agent, rule: Rule, target: TargetObject, state: ObjectState, outcome: CycleOutcome
    ) -> None:
        """Make sure the object's approval exists, and act on its answer once."""
        episode = episode_of(state)
        if episode is None:
            return
        now = agent.clock.now()
        previews: Sequence[PlannedAction] = [plan for plan in outcome.previews if plan.object == target.key]
        if not previews:
            fresh = plan_actions(rule=rule, target=target, now=now)
            previews = fresh if isinstance(fresh, tuple) else ()
        evaluation = next((item for item in outcome.evaluations if item.object == target.key), None)
        request = build_request(
            rule=rule.name,
            target=target,
            episode=episode,
            previews=previews,
            evaluation=evaluation,
            agent_namespace=self.agent_namespace,
        )
        approval, created = await self.store.ensure(request, now=now)
        where = f"{approval.namespace}/{approval.name}"
        if created:
            message = (
                f"{rule.name} wants {request.summary} on {target.key}, because {request.why}; "
                f"answer with: kafka-autopilot approve|decline {approval.name} -n {approval.namespace}"
            )
            await self._note(
                agent,
                rule,
                target,
                event="approval-requested",
                reason="ApprovalRequested",
                message=message,
                where=where,
                actions=request.actions,
            )
        if state.approval_declined_at is not None:
            return
        if state.approved_at is not None:
            if approval.phase in (None, Phase.PENDING):
                await self.store.set_phase(
                    namespace=approval.namespace,
                    name=approval.name,
                    phase=Phase.APPROVED,
                    message="approved: the actions start at the next evaluation",
                    now=now,
                )
            return
        if approval.answer is Answer.PENDING or approval.phase in FINAL_PHASES:
            return
        approved = approval.answer is Answer.APPROVED
        step = decide(
            rule=rule.name,
            object_key=target.key,
            state=state,
            event=ApprovalAnswered(approved=approved, by=approval.answered_by),
            now=now,
            cooldown_seconds=rule.cooldown_seconds,
            for_seconds=rule.conditions.for_seconds,
        )
        try:
            await agent.store.save(
                rule=rule.name, object_key=target.key, object_kind=rule.target.value, state=step.state
            )
        except StateConflictError as error:
            log.info(
                "state moved by another writer; answer left for it", rule=rule.name, object=target.key, why=str(error)
            )
            return
        await agent.note_transitions(rule, target, step.transitions)
        by = f" by {approval.answered_by}" if approval.answered_by else ""
        because = f" ({approval.answer_reason})" if approval.answer_reason else ""
        if approved:
            phase, message = Phase.APPROVED, f"approved{by}{because}: the actions start at the next evaluation"
        else:
            phase, message = Phase.DECLINED, f"declined{by}{because}: nothing runs until the conditions clear"
        await self.store.set_phase(
            namespace=approval.namespace, name=approval.name, phase=phase, message=message, now=now
        )
        event = "approval-approved" if approved else "approval-declined"
        reason = "ApprovalApproved" if approved else "ApprovalDeclined"
        await self._note(
            agent,
            rule,
            target,
            event=event,
            reason=reason,
            message=f"{rule.name}: {request.summary}: {message}",
            where=where,
            actions=request.actions,
            warning=not approved,
        )
        if approved:
            agent.trigger([rule.name])

    async def cancel(self, agent: Agent, rule: Rule, target: TargetObject, episode: float, why: str) -> None:
        """The conditions cleared while the approval waited: mark it Cancelled (kept, for people)."""
        namespace = approval_namespace(target=target, agent_namespace=self.agent_namespace)
        name = approval_name(rule=rule.name, object_key=target.key, episode=episode)
        approval = await self.store.get(namespace=namespace, name=name)
        if approval is None or approval.phase in FINAL_PHASES:
            return
        answered = f" (it had been {approval.answer.value})" if approval.answer is not Answer.PENDING else ""
        message = f"cancelled{answered}: {why}; the action was not taken"
        await self.store.set_phase(
            namespace=namespace, name=name, phase=Phase.CANCELLED, message=message, now=agent.clock.now()
        )
        await self._note(
            agent,
            rule,
            target,
            event="approval-cancelled",
            reason="ApprovalCancelled",
            message=f"{rule.name}: approval {namespace}/{name} {message}",
            where=f"{namespace}/{name}",
            actions=approval.actions,
        )

    async def action_finished(
        self,
        agent: Agent,
        rule: Rule,
        *,
        planned: PlannedAction,
        target: TargetObject,
        state: ObjectState,
        outcome: Outcome,
    ) -> None:
        """An approved action ran: its approval is spent."""
        episode = episode_of(state)
        if state.approved_at is None or episode is None:
            return
        namespace = approval_namespace(target=target, agent_namespace=self.agent_namespace)
        name = approval_name(rule=rule.name, object_key=target.key, episode=episode)
        message = f"used: {planned.action} {planned.before} -> {planned.after}: {outcome.kind.value}: {outcome.reason}"

        async def mark() -> None:
            approval = await self.store.get(namespace=namespace, name=name)
            if approval is None or approval.phase is Phase.USED:
                return
            await self.store.set_phase(
                namespace=namespace, name=name, phase=Phase.USED, message=message, now=agent.clock.now()
            )
            await self._note(
                agent,
                rule,
                target,
                event="approval-used",
                reason="ApprovalUsed",
                message=f"{rule.name}: approval {namespace}/{name} {message}",
                where=f"{namespace}/{name}",
                actions=approval.actions,
            )

        await self._guarded(agent, rule, target, mark())

    async def _note(
        self,
        agent: Agent,
        rule: Rule,
        target: TargetObject,
        *,
        event: str,
        reason: str,
        message: str,
        where: str,
        actions: Sequence[ActionPreview],
        warning: bool = False,
    ) -> None:
        first = actions[0] if actions else None
        outcome = event.removeprefix("approval-")
        agent.trail.write(
            approval_record(
                event=event,
                rule=rule.name,
                target=target,
                at=agent.clock.now(),
                approval=where,
                outcome=outcome,
                reason=message,
                dry_run=agent.records_dry_run(rule),
                action=first.action if first else None,
                before=first.before if first else None,
                after=first.after if first else None,
                summary="; ".join(action.describe() for action in actions),
            )
        )
        agent.telemetry.inc("kafka_autopilot_approvals_total", rule=rule.name, outcome=outcome)
        if agent.events is not None:
            await agent.events.emit(rule=rule.name, target=target, reason=reason, message=message, warning=warning)


def approval_record(
    *,
    event: str,
    rule: str,
    target: TargetObject,
    at: float,
    approval: str,
    outcome: str,
    reason: str,
    dry_run: bool,
    action: str | None = None,
    before: str | None = None,
    after: str | None = None,
    summary: str = "",
) -> AuditRecord:
    """An audit record about an approval, with the trail's stable keys plus `approval` (namespace/name)."""
    record: AuditRecord = dict.fromkeys(AUDIT_KEYS)
    record.update(
        time=iso_time(at),
        event=event,
        rule=rule,
        object=target.key,
        action=action,
        before=before,
        after=after,
        outcome=outcome,
        reason=reason,
        dry_run=dry_run,
        approval=approval,
    )
    if summary:
        record["summary"] = summary
    return record
