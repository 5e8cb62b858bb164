"""ActionApproval objects in the Kubernetes API: the agent asks, a person answers, the agent reads.

Why this module exists: an approval must survive restarts and be visible to people with kubectl.
The agent creates one ActionApproval per (rule, object, episode), named deterministically by
agent.core.approvals, so a restarted agent (or a second replica) finds the same object instead of
creating another, and an answer is never lost: it lives in the object's spec.

- spec.approvalState (pending | approved | declined) belongs to people (`kafka-autopilot approve`,
  `kubectl edit`), with who answered (user and groups) and why as annotations; the agent writes it
  when the CLI asks it to answer, and puts it back to pending when it refuses an answer (an answer
  by someone who is not an approver: agent.core.approvals.Approvers);
- status (subresource) belongs to the agent: the preview (what, on which object, before -> after,
  why), and `phase` with a message telling what became of the approval: Pending, Approved,
  Declined, Cancelled (the conditions cleared while it waited: kept, so people see what happened)
  or Used (the approved action ran).

The store reaches the apiserver only through the access layer (`KubeClient`'s custom-object calls).
In the agent it reads approvals from a watch-fed cache (`watched_approvals`, agent.adapters.kubernetes.cache),
keeping its own writes until the cache shows them; writes and the CLI's reads go to the apiserver.
Errors are its `KubeError`s (agent.adapters.errors), naming the apiserver and the request that
failed; `temporary` says whether later may work (no answer, 429, 5xx). An answer that conflicts
with one given already is `AnswerConflictError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from agent.adapters.errors import AnswerConflictError, ConflictError, KubeError, NotFoundError
from agent.adapters.kubernetes.cache import ReadYourWrites, WatchCache, WatchSource
from agent.adapters.kubernetes.client import KubeClient
from agent.adapters.kubernetes.statuscodec import (
    APPROVALS_PLURAL,
    OBJECT_KIND_LABEL,
    OBJECT_NAME_LABEL,
    OBJECT_NAMESPACE_LABEL,
    RULE_LABEL,
    VERSION,
    format_time,
    label_value,
    parse_time,
)
from agent.core.approvals import ActionPreview, Answer, ApprovalRequest, Phase
from agent.core.rules import API_GROUP, API_VERSION

APPROVAL_KIND: Final = "ActionApproval"
EPISODE_LABEL: Final = f"{API_GROUP}/episode"
ANSWERED_BY_ANNOTATION: Final = f"{API_GROUP}/answered-by"
ANSWER_REASON_ANNOTATION: Final = f"{API_GROUP}/answer-reason"
ANSWERED_BY_GROUPS_ANNOTATION: Final = f"{API_GROUP}/answered-by-groups"
"""The answering user's groups, comma separated, as the SelfSubjectReview gave them."""

# --- the codec (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Approval:
    """An ActionApproval as read from the API."""

    name: str
    namespace: str
    rule: str
    object_kind: str
    object_key: str
    answer: Answer
    phase: Phase | None
    """None until the agent wrote the status (a moment after creating it)."""
    message: str
    actions: tuple[ActionPreview, ...]
    why: str
    created_at: float | None
    answered_by: str
    answer_reason: str
    resource_version: str
    answered_by_groups: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        return "; ".join(action.describe() for action in self.actions) or "(preview not written yet)"


def approval_manifest(request: ApprovalRequest) -> dict[str, Any]:
    """A new ActionApproval, pending (its status is written separately: the subresource ignores it here)."""
    labels = {
        RULE_LABEL: label_value(request.rule),
        OBJECT_KIND_LABEL: label_value(request.object_kind),
        OBJECT_NAME_LABEL: label_value(request.object_name),
        EPISODE_LABEL: label_value(format_time(request.episode).replace(":", ".")),
    }
    if request.object_namespace:
        labels[OBJECT_NAMESPACE_LABEL] = label_value(request.object_namespace)
    return {
        "apiVersion": API_VERSION,
        "kind": APPROVAL_KIND,
        "metadata": {"name": request.name, "namespace": request.namespace, "labels": labels},
        "spec": {
            "approvalState": Answer.PENDING.value,
            "rule": request.rule,
            "objectKind": request.object_kind,
            "objectKey": request.object_key,
            "objectNamespace": request.object_namespace,
            "objectName": request.object_name,
        },
    }


def preview_status(request: ApprovalRequest, *, now: float) -> dict[str, Any]:
    """The status the agent writes on a new approval: phase Pending and the preview."""
    first = request.actions[0] if request.actions else ActionPreview(action="", before="", after="")
    return {
        "phase": Phase.PENDING.value,
        "message": f"waiting for an answer: kafka-autopilot approve|decline {request.name} -n {request.namespace}",
        "episode": format_time(request.episode),
        "requestedAt": format_time(math.floor(now)),
        "lastTransitionTime": format_time(math.floor(now)),
        "preview": {
            "action": first.action,
            "object": request.object_key,
            "before": first.before,
            "after": first.after,
            "expectedResult": request.summary,
            "why": request.why,
            "actions": [
                {"action": action.action, "before": action.before, "after": action.after} for action in request.actions
            ],
            "conditions": [
                {"expression": expression, "value": "no data" if value is None else f"{value:g}"}
                for expression, value in request.values.items()
            ],
        },
    }


def decode_approval(obj: Mapping[str, Any]) -> Approval:
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    preview = status.get("preview") or {}
    annotations = metadata.get("annotations") or {}
    try:
        answer = Answer(str(spec.get("approvalState", "pending")))
    except ValueError:
        answer = Answer.PENDING
    try:
        phase: Phase | None = Phase(str(status["phase"])) if status.get("phase") else None
    except ValueError:
        phase = None
    created: float | None = None
    if metadata.get("creationTimestamp"):
        try:
            created = parse_time(str(metadata["creationTimestamp"]))
        except ValueError:
            created = None
    actions = tuple(
        ActionPreview(
            action=str(item.get("action", "")), before=str(item.get("before", "")), after=str(item.get("after", ""))
        )
        for item in preview.get("actions") or []
        if isinstance(item, Mapping)
    )
    return Approval(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        rule=str(spec.get("rule", "")),
        object_kind=str(spec.get("objectKind", "")),
        object_key=str(spec.get("objectKey", "")),
        answer=answer,
        phase=phase,
        message=str(status.get("message", "")),
        actions=actions,
        why=str(preview.get("why", "")),
        created_at=created,
        answered_by=str(annotations.get(ANSWERED_BY_ANNOTATION, "")),
        answer_reason=str(annotations.get(ANSWER_REASON_ANNOTATION, "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        answered_by_groups=tuple(
            group for group in str(annotations.get(ANSWERED_BY_GROUPS_ANNOTATION, "")).split(",") if group
        ),
    )


# --- the store ----------------------------------------------------------------------------------------


def watched_approvals(source: WatchSource) -> WatchCache[Approval]:
    """The watch-fed cache of every ActionApproval (all namespaces), decoded once per change."""
    return WatchCache(source=source, kind="actionapprovals", decode=decode_approval)


class ApprovalStore:
    """Creates, reads and answers ActionApprovals through the Kubernetes access layer."""

    def __init__(self, *, kube: KubeClient, watched: WatchCache[Approval] | None = None) -> None:
        self._kube = kube
        self._watched = watched
        """The agent's watch-fed ActionApprovals (`watched_approvals`); without it (the CLI), `get` is a GET."""
        self._own: ReadYourWrites[Approval] = ReadYourWrites(
            version_of=lambda approval: approval.resource_version, cache=watched
        )

    async def get(self, *, namespace: str, name: str) -> Approval | None:
        """The approval (from the watch-fed cache when the store has one, with this store's own later
        writes in place of the cache's older copy), or None when there is none."""
        if self._watched is not None:
            await self._watched.wait_synced()
            key = f"{namespace}/{name}"
            return self._own.view(key, self._watched.get(key))
        return await self._fetch(namespace=namespace, name=name)

    async def _fetch(self, *, namespace: str, name: str) -> Approval | None:
        """The approval fresh from the apiserver (a GET), None when there is none."""
        try:
            obj = await self._kube.get_custom_object(
                group=API_GROUP, version=VERSION, plural=APPROVALS_PLURAL, namespace=namespace, name=name
            )
        except NotFoundError:
            return None
        return self._noted(decode_approval(obj))

    async def ensure(self, request: ApprovalRequest, *, now: float) -> tuple[Approval, bool]:
        """The request's approval, created (with its preview) when missing; True when created now.

        Idempotent: an existing approval is returned as it is (its answer kept); one whose status
        was never written (the agent stopped in between) gets its preview now.
        """
        created = False
        existing = await self.get(namespace=request.namespace, name=request.name)
        if existing is None:
            try:
                obj = await self._kube.create_custom_object(
                    group=API_GROUP,
                    version=VERSION,
                    plural=APPROVALS_PLURAL,
                    namespace=request.namespace,
                    body=approval_manifest(request),
                )
                existing, created = self._noted(decode_approval(obj)), True
            except ConflictError as error:
                existing = await self._fetch(namespace=request.namespace, name=request.name)
                if existing is None:
                    raise KubeError(
                        f"{error} (exists, then gone)",
                        server=self._kube.server,
                        verb="POST",
                        resource=APPROVALS_PLURAL,
                        namespace=request.namespace,
                        name=request.name,
                        status=409,
                        temporary=True,
                    ) from error
        if existing.rule != request.rule or existing.object_key != request.object_key:
            raise KubeError(
                f"kube-apiserver {self._kube.server}: {APPROVAL_KIND} {request.namespace}/{request.name} belongs to "
                f"{existing.rule!r}: {existing.object_key!r}, not to {request.rule!r}: {request.object_key!r} "
                "(name clash)",
                server=self._kube.server,
                verb="GET",
                resource=APPROVALS_PLURAL,
                namespace=request.namespace,
                name=request.name,
            )
        if existing.phase is None:
            existing = (
                await self._patch_status(
                    namespace=request.namespace, name=request.name, status=preview_status(request, now=now)
                )
                or existing
            )
        return existing, created

    async def set_phase(self, *, namespace: str, name: str, phase: Phase, message: str, now: float) -> Approval | None:
        """Record what became of the approval; None when it does not exist (nothing to record on)."""
        current = await self.get(namespace=namespace, name=name)
        if current is None:
            return None
        if current.phase is phase and current.message == message:
            return current
        status = {"phase": phase.value, "message": message, "lastTransitionTime": format_time(math.floor(now))}
        return await self._patch_status(namespace=namespace, name=name, status=status)

    async def _patch_status(self, *, namespace: str, name: str, status: Mapping[str, Any]) -> Approval | None:
        try:
            obj = await self._kube.patch_custom_object_status(
                group=API_GROUP, version=VERSION, plural=APPROVALS_PLURAL, namespace=namespace, name=name, status=status
            )
        except NotFoundError:
            return None
        return self._noted(decode_approval(obj))

    def _noted(self, approval: Approval) -> Approval:
        """`approval` as this store just wrote or read it: what `get` answers until the cache shows it."""
        if self._watched is not None:
            self._own.note(f"{approval.namespace}/{approval.name}", approval)
        return approval

    async def list(self, *, namespace: str | None = None, name: str | None = None) -> list[Approval]:
        """Approvals of one namespace or all, optionally only those called `name`; oldest first."""
        listed = await self._kube.list_custom_objects(
            group=API_GROUP,
            version=VERSION,
            plural=APPROVALS_PLURAL,
            namespace=namespace or None,
            field_selector=f"metadata.name={name}" if name is not None else None,
        )
        approvals = [decode_approval(item) for item in listed.get("items") or []]
        return sorted(approvals, key=lambda approval: (approval.created_at or 0.0, approval.namespace, approval.name))

    async def answer(
        self, approval: Approval, *, answer: Answer, by: str, reason: str, groups: Sequence[str] = ()
    ) -> Approval:
        """Set spec.approvalState on the approval as read (a resourceVersion precondition: an answer
        given meanwhile by someone else is never overwritten)."""
        if answer is Answer.PENDING:
            raise ValueError("an answer is approved or declined")
        where = {"server": self._kube.server, "namespace": approval.namespace, "name": approval.name}
        if approval.phase in (Phase.CANCELLED, Phase.USED):
            raise AnswerConflictError(
                f"{APPROVAL_KIND} {approval.namespace}/{approval.name} no longer waits for an answer: "
                f"{approval.phase.value}: {approval.message}",
                status=None,
                **where,
            )
        if approval.answer is answer:
            return approval
        if approval.answer is not Answer.PENDING:
            raise AnswerConflictError(
                f"{APPROVAL_KIND} {approval.namespace}/{approval.name} was already {approval.answer.value}"
                + (f" by {approval.answered_by}" if approval.answered_by else ""),
                status=409,
                **where,
            )
        annotations = {
            ANSWERED_BY_ANNOTATION: by or None,
            ANSWERED_BY_GROUPS_ANNOTATION: ",".join(groups) or None,
            ANSWER_REASON_ANNOTATION: reason or None,
        }
        try:
            obj = await self._patch_answer(approval, answer=answer, annotations=annotations)
        except ConflictError as error:
            raise AnswerConflictError(
                f"{APPROVAL_KIND} {approval.namespace}/{approval.name} changed while answering; look again",
                status=409,
                **where,
            ) from error
        return self._noted(decode_approval(obj))

    async def _patch_answer(
        self, approval: Approval, *, answer: Answer, annotations: Mapping[str, str | None]
    ) -> dict[str, Any]:
        """Merge-patch spec.approvalState and who answered, on the approval as read (resourceVersion)."""
        return await self._kube.patch_custom_object(
            group=API_GROUP,
            version=VERSION,
            plural=APPROVALS_PLURAL,
            namespace=approval.namespace,
            name=approval.name,
            patch={
                "metadata": {"resourceVersion": approval.resource_version, "annotations": dict(annotations)},
                "spec": {"approvalState": answer.value},
            },
        )

    async def withdraw_answer(self, approval: Approval, *, message: str, now: float) -> Approval | None:
        """Put a refused answer back to pending (who gave it and why removed), conditional on the
        approval as read, and say why in its status; None when it changed or went away meanwhile."""
        annotations = dict.fromkeys((ANSWERED_BY_ANNOTATION, ANSWERED_BY_GROUPS_ANNOTATION, ANSWER_REASON_ANNOTATION))
        try:
            await self._patch_answer(approval, answer=Answer.PENDING, annotations=annotations)
        except (ConflictError, NotFoundError):
            return None
        return await self.set_phase(
            namespace=approval.namespace, name=approval.name, phase=Phase.PENDING, message=message, now=now
        )
