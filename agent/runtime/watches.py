"""Watches that make the agent react in seconds: evaluate rules at once when the cluster changes.

Why it exists: a node that goes NotReady, or a broker pod deleted, should not wait for the next poll
of the rules that care. The watches survive `410 Gone` and apiserver restarts (the Kubernetes
adapter resumes them); they only set triggers, and the rule loops do the rest.
"""

from __future__ import annotations

import asyncio

from agent.adapters.kubernetes import KubeClient
from agent.core.rules import TargetKind
from agent.runtime.scheduler import Triggers


async def watch_triggers(kube: KubeClient, triggers: Triggers) -> None:
    """Evaluate node rules at once when a node's Ready condition changes, and broker and node rules
    when a pod is deleted, instead of waiting for the next poll."""

    async def nodes() -> None:
        ready: dict[str, object] = {}
        async for event in kube.watch("nodes"):
            conditions = event.raw.get("status", {}).get("conditions", []) if event.raw else []
            status = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
            if ready.get(event.object_name) != status:
                ready[event.object_name] = status
                triggers.trigger_kind(TargetKind.NODE)

    async def pods() -> None:
        async for event in kube.watch("pods"):
            if event.type == "DELETED":
                triggers.trigger_kind(TargetKind.BROKER)
                triggers.trigger_kind(TargetKind.NODE)

    async with asyncio.TaskGroup() as group:
        group.create_task(nodes())
        group.create_task(pods())
