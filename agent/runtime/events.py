"""Kubernetes Events for what the agent decided and did, where `kubectl describe` shows them.

Why it exists: SREs look at the object first. Each record the recorder turns into an Event goes on
the object acted on (PVC, Node, Pod) and on the rule's state object (AutopilotRuleObject), so both
`kubectl describe pvc …` and `kubectl get events --field-selector involvedObject.kind=AutopilotRuleObject`
tell the story. An Event that cannot be written is logged and dropped: it never stops an action.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from agent.adapters.kubernetes import EventTarget, KubeClient, KubeError
from agent.adapters.kubernetes.statuscodec import object_name
from agent.core.matching import TargetObject
from agent.core.rules import TargetKind

log = structlog.get_logger("kafka-autopilot")


@dataclass
class KubeEvents:
    """Events on the object acted on, and on the rule's state object (AutopilotRuleObject)."""

    kube: KubeClient

    async def emit(self, *, rule: str, target: TargetObject, reason: str, message: str, warning: bool) -> None:
        kind = {
            TargetKind.PVC: "PersistentVolumeClaim",
            TargetKind.NODE: "Node",
            TargetKind.BROKER: "Pod",
            TargetKind.STORAGE_POOL: "Node",
        }[target.kind]
        name = target.name.split("/", 1)[0] if target.kind is TargetKind.STORAGE_POOL else target.name
        state_object = EventTarget(
            kind="AutopilotRuleObject",
            name=object_name(rule=rule, object_key=target.key),
            namespace=None,
            uid=None,
            api_version="kafka-autopilot.io/v1alpha1",
        )
        on_object = EventTarget(kind=kind, name=name, namespace=target.namespace, uid=None)
        for involved in (on_object, state_object):
            try:
                await self.kube.emit_event(
                    involved=involved,
                    reason=reason,
                    message=message,
                    type_="Warning" if warning else "Normal",
                    action=reason,
                )
            except KubeError as error:
                log.warning("event not recorded", reason=reason, object=target.key, error=str(error))
