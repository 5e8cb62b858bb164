"""The approval loop of the agent: ask when a rule waits for approval, read the answer, tidy up.

After each cycle of a rule (`after_cycle`):
- every object in ActionAwaitingApproval has its ActionApproval (created at the first cycle that
  finds it missing, with the preview of what would be done and why: a restart between saving the
  state and creating the approval is caught up on the next cycle);
- an answer by someone who is not an approver (`approvers`, from `run --approver-user/--approver-group`;
  agent.core.approvals.Approvers), or one that records no user while approvers are named, is refused:
  the approval is put back to pending with a status message saying who answered and why it was
  refused, an `approval-refused` record and a Warning Event say the same, and the object keeps
  waiting for an approver;
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

from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from agent.actions.base import Outcome
from agent.adapters.clock import Clock
from agent.adapters.errors import KubeError, StateConflictError
from agent.adapters.kubernetes.approvals import Approval
from agent.core.approvals import (
    FINAL_PHASES,
    Answer,
    ApprovalRequest,
    Approvers,
    Phase,
    approval_name,
    approval_namespace,
    build_request,
    episode_of,
)
from agent.core.engine import CycleOutcome, PlannedAction, advance, evaluation_of, plan_actions, touched_states
from agent.core.matching import TargetObject
from agent.core.rules import Rule
from agent.core.states import ApprovalAnswered, ObjectState, RuleState
from agent.runtime.recorder import Recorder

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

    async def withdraw_answer(self, approval: Approval, *, message: str, now: float) -> Approval | None: ...


class StateWriter(Protocol):
    async def save(self, *, rule: str, object_key: str, object_kind: str, state: ObjectState) -> None: ...


@dataclass
class ApprovalFlow:
    store: ApprovalBackend
    states: StateWriter
    recorder: Recorder
    clock: Clock
    trigger: Callable[[Iterable[str]], object]
    """Evaluate these rules now (an approved action starts at the next evaluation)."""
    agent_namespace: str
    dry_run: bool = False
    """A dry-run agent's approvals are named apart (`dry-run-...`): a live agent never takes their answers."""
    approvers: Approvers = field(default_factory=Approvers)
    """Who may answer; nobody named: whoever may write the ActionApproval (RBAC decides)."""

    async def after_cycle(
        self,
        rule: Rule,
        outcome: CycleOutcome,
        *,
        before: Mapping[str, ObjectState],
        objects: Mapping[str, TargetObject],
        conflicted: set[str],
    ) -> None:
        """`objects`: the inventory's objects by key."""
        for transition in outcome.transitions:
            if transition.from_state in _MAY_HOLD_AN_APPROVAL and transition.to_state is RuleState.NORMAL:
                target = objects.get(transition.object)
                episode = episode_of(before.get(transition.object, ObjectState()))
                if target is not None and episode is not None:
                    await self._guarded(rule, target, self.cancel(rule, target, episode, transition.reason))
        for key, state in touched_states(outcome).items():
            target = objects.get(key)
            if state.state is not RuleState.ACTION_AWAITING_APPROVAL or key in conflicted or target is None:
                continue
            await self._guarded(rule, target, self.follow(rule, target, state, outcome))

    async def _guarded(self, rule: Rule, target: TargetObject, step: Coroutine[Any, Any, None]) -> None:
        try:
            await step
        except KubeError as error:
            log.warning(
                "approval step failed; next cycle tries again", rule=rule.name, object=target.key, error=str(error)
            )
            await self.recorder.approval(rule, target, event="approval-error", reason="", message=str(error), where="")

    async def follow(self, rule: Rule, target: TargetObject, state: ObjectState, outcome: CycleOutcome) -> None:
        """Make sure the object's approval exists, and act on its answer once."""
        episode = episode_of(state)
        if episode is None:
            return
        now = self.clock.now()
        previews: Sequence[PlannedAction] = [plan for plan in outcome.previews if plan.object == target.key]
        if not previews:
            fresh = plan_actions(rule=rule, target=target, now=now)
            previews = fresh if isinstance(fresh, tuple) else ()
        evaluation = evaluation_of(outcome.evaluations, target.key)
        request = build_request(
            rule=rule.name,
            target=target,
            episode=episode,
            previews=previews,
            evaluation=evaluation,
            agent_namespace=self.agent_namespace,
            dry_run=self.dry_run,
        )
        approval, created = await self.store.ensure(request, now=now)
        where = f"{approval.namespace}/{approval.name}"
        if created:
            message = (
                f"{rule.name} wants {request.summary} on {target.key}, because {request.why}; "
                f"answer with: kafka-autopilot approve|decline {approval.name} -n {approval.namespace}"
            )
            await self.recorder.approval(
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
        refusal = self.approvers.refusal(user=approval.answered_by, groups=approval.answered_by_groups)
        if refusal is not None:
            await self.refuse(rule, target, approval, request, refusal)
            return
        approved = approval.answer is Answer.APPROVED
        step = advance(
            rule=rule,
            object_key=target.key,
            state=state,
            event=ApprovalAnswered(approved=approved, by=approval.answered_by),
            now=now,
        )
        try:
            await self.states.save(
                rule=rule.name, object_key=target.key, object_kind=rule.target.value, state=step.state
            )
        except StateConflictError as error:
            log.info(
                "state moved by another writer; answer left for it", rule=rule.name, object=target.key, why=str(error)
            )
            return
        await self.recorder.transitions(rule, target, step.transitions)
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
        await self.recorder.approval(
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
            self.trigger([rule.name])

    async def refuse(
        self, rule: Rule, target: TargetObject, approval: Approval, request: ApprovalRequest, refusal: str
    ) -> None:
        """An answer the agent may not act on: back to pending, and say who gave it and why it was refused."""
        by = approval.answered_by or "an unknown user"
        message = (
            f"{approval.answer.value} by {by}, refused: {refusal}; still waiting for an approver: "
            f"kafka-autopilot approve|decline {approval.name} -n {approval.namespace}"
        )
        if await self.store.withdraw_answer(approval, message=message, now=self.clock.now()) is None:
            return  # answered again, or deleted, meanwhile: the next cycle reads it afresh
        await self.recorder.approval(
            rule,
            target,
            event="approval-refused",
            reason="ApprovalRefused",
            message=f"{rule.name}: {request.summary}: {message}",
            where=f"{approval.namespace}/{approval.name}",
            actions=request.actions,
            warning=True,
        )

    async def cancel(self, rule: Rule, target: TargetObject, episode: float, why: str) -> None:
        """The conditions cleared while the approval waited: mark it Cancelled (kept, for people)."""
        namespace = approval_namespace(target=target, agent_namespace=self.agent_namespace)
        name = approval_name(rule=rule.name, object_key=target.key, episode=episode, dry_run=self.dry_run)
        approval = await self.store.get(namespace=namespace, name=name)
        if approval is None or approval.phase in FINAL_PHASES:
            return
        answered = f" (it had been {approval.answer.value})" if approval.answer is not Answer.PENDING else ""
        message = f"cancelled{answered}: {why}; the action was not taken"
        await self.store.set_phase(
            namespace=namespace, name=name, phase=Phase.CANCELLED, message=message, now=self.clock.now()
        )
        await self.recorder.approval(
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
        name = approval_name(rule=rule.name, object_key=target.key, episode=episode, dry_run=self.dry_run)
        message = f"used: {planned.action} {planned.before} -> {planned.after}: {outcome.kind.value}: {outcome.reason}"

        async def mark() -> None:
            approval = await self.store.get(namespace=namespace, name=name)
            if approval is None or approval.phase is Phase.USED:
                return
            await self.store.set_phase(
                namespace=namespace, name=name, phase=Phase.USED, message=message, now=self.clock.now()
            )
            await self.recorder.approval(
                rule,
                target,
                event="approval-used",
                reason="ApprovalUsed",
                message=f"{rule.name}: approval {namespace}/{name} {message}",
                where=f"{namespace}/{name}",
                actions=approval.actions,
            )

        await self._guarded(rule, target, mark())
