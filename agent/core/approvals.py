"""Approvals, pure: where an ActionApproval lives, what it is called, and what its preview says.

A rule with `enforcement: approvalRequired` stops in ActionAwaitingApproval until a person answers
an ActionApproval. This module decides, without I/O, everything about that object that must come out
the same on every replica and after every restart:

- its namespace: the object's own for namespaced objects (PVCs, broker pods), so the namespace's
  owners can be allowed to answer for their own volumes; the agent's namespace otherwise;
- its name: readable (`<rule>-<object>-`) plus a hash of (rule, object key, episode). The episode is
  the time the object entered ActionAwaitingApproval, kept in its durable state, so an answer given
  in one episode never approves the next one;
- its preview: each action with before -> after, and why (every condition's value);
- whether an answer may be acted on (`Approvers`): when the agent was told who approves, an answer
  whose recorded Kubernetes user is not one of them, or is in none of their groups, or that records
  no user at all, is refused.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from agent.core.engine import ObjectEvaluation, PlannedAction
from agent.core.matching import TargetObject
from agent.core.states import ObjectState, RuleState

_HASH_LENGTH: Final = 10
_READABLE_LENGTH: Final = 52
"""Room for the readable part; with the hash a name stays within 63 characters (handy to type)."""


class Answer(StrEnum):
    """spec.approvalState: what a person said."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"


class Phase(StrEnum):
    """status.phase: what the agent made of the approval."""

    PENDING = "Pending"
    APPROVED = "Approved"
    DECLINED = "Declined"
    CANCELLED = "Cancelled"
    """The conditions cleared (or the object went away) before the action ran."""
    USED = "Used"
    """The approved action ran; the approval is spent."""


FINAL_PHASES: Final = frozenset({Phase.DECLINED, Phase.CANCELLED, Phase.USED})


@dataclass(frozen=True, kw_only=True)
class ActionPreview:
    action: str
    before: str
    after: str

    def describe(self) -> str:
        return f"{self.action} {self.before} -> {self.after}"


@dataclass(frozen=True, kw_only=True)
class ApprovalRequest:
    """Everything the agent writes into a new ActionApproval."""

    name: str
    namespace: str
    rule: str
    object_kind: str
    object_key: str
    object_namespace: str
    object_name: str
    episode: float
    actions: tuple[ActionPreview, ...]
    why: str
    values: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return "; ".join(action.describe() for action in self.actions) or "no action planned"


@dataclass(frozen=True, kw_only=True)
class Approvers:
    """Who may answer (`run --approver-user/--approver-group`); nobody named means anyone who can write
    the ActionApproval (RBAC alone decides)."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    @property
    def configured(self) -> bool:
        return bool(self.users or self.groups)

    def refusal(self, *, user: str, groups: Sequence[str]) -> str | None:
        """None when an answer recorded as given by `user` (in `groups`) may be acted on, else why not."""
        if not self.configured:
            return None
        if not user:
            return "the answer records no Kubernetes user (written without `kafka-autopilot approve|decline`?)"
        if user in self.users or self.groups.intersection(groups):
            return None
        allowed = [*(f"user {name}" for name in sorted(self.users)), *(f"group {name}" for name in sorted(self.groups))]
        member_of = f" (groups: {', '.join(groups)})" if groups else " (no groups recorded)"
        return f"{user}{member_of} is not an approver: {', '.join(allowed)}"


def episode_of(state: ObjectState) -> float | None:
    """When the object last entered ActionAwaitingApproval: the episode its approval belongs to."""
    return state.entered_at.get(RuleState.ACTION_AWAITING_APPROVAL.value)


def approval_namespace(*, target: TargetObject, agent_namespace: str) -> str:
    return target.namespace or agent_namespace


def approval_name(*, rule: str, object_key: str, episode: float, dry_run: bool = False) -> str:
    """`<rule>-<object name>-<10 hex digits>`: a DNS-1123 subdomain, the same on every replica; a
    dry-run agent's start with `dry-run-`.

    The hash covers rule, object key, the episode's exact time and the mode, so two episodes (or two
    objects whose readable parts collide after cutting) never share a name, and an answer given to a
    dry-run agent can never be taken by a live one.
    """
    if not math.isfinite(episode):
        raise ValueError(f"episode must be a finite time, got {episode!r}")
    object_part = object_key.rsplit("/", 1)[-1]
    mode = "dry-run-" if dry_run else ""
    readable = re.sub(r"[^a-z0-9-]+", "-", f"{mode}{rule}-{object_part}".lower())
    readable = re.sub(r"-{2,}", "-", readable)[:_READABLE_LENGTH].strip("-")
    digest = hashlib.sha1(f"{mode}{rule}\n{object_key}\n{episode!r}".encode(), usedforsecurity=False).hexdigest()
    suffix = digest[:_HASH_LENGTH]
    return f"{readable}-{suffix}" if readable else suffix


def why_text(evaluation: ObjectEvaluation | None) -> str:
    """The conditions' values, as a person reads them: `expr = 82.5 (holds)`."""
    if evaluation is None:
        return "conditions hold"
    parts = []
    for result in evaluation.results:
        value = "no data" if result.value is None or math.isnan(result.value) else f"{result.value:g}"
        verdict = {True: "holds", False: "does not hold", None: "unknown"}[result.holds]
        parts.append(f"{result.expression} = {value} ({verdict})")
    return "; ".join(parts) or "conditions hold"


def condition_values(evaluation: ObjectEvaluation | None) -> dict[str, float | None]:
    if evaluation is None:
        return {}
    return {
        result.expression: None if result.value is None or math.isnan(result.value) else result.value
        for result in evaluation.results
    }


def build_request(
    *,
    rule: str,
    target: TargetObject,
    episode: float,
    previews: Sequence[PlannedAction],
    evaluation: ObjectEvaluation | None,
    agent_namespace: str,
    dry_run: bool = False,
) -> ApprovalRequest:
    """The ActionApproval for `target`'s episode, with the planned actions as its preview."""
    return ApprovalRequest(
        name=approval_name(rule=rule, object_key=target.key, episode=episode, dry_run=dry_run),
        namespace=approval_namespace(target=target, agent_namespace=agent_namespace),
        rule=rule,
        object_kind=target.kind.value,
        object_key=target.key,
        object_namespace=target.namespace or "",
        object_name=target.name,
        episode=episode,
        actions=tuple(
            ActionPreview(action=plan.action, before=plan.before, after=plan.after)
            for plan in previews
            if plan.object == target.key
        ),
        why=why_text(evaluation),
        values=condition_values(evaluation),
    )
