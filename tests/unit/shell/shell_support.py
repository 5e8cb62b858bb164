"""Planning the way the engine does, for the executor tests: a rule parsed by the real loader from
YAML, and the PlannedAction from the real `plan_actions`, so the tests do not depend on where plan
details live; and the AutopilotRuleObject API in memory, for the real StateStore."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agent.actions.registry import CATALOG
from agent.adapters.errors import ConflictError, NotFoundError
from agent.adapters.kubernetes.client import EventTarget, EventType, WatchEvent, WatchEventType
from agent.core.engine import DeclinedAction, PlannedAction, plan_actions
from agent.core.loader import parse_rules
from agent.core.matching import TargetObject
from agent.core.rules import LabelSelector, Rule

WALL_BUDGET_SECONDS = 0.5
"""What one executor run on the fakes may take in wall time, whatever its virtual time."""


def load_rule(text: str) -> Rule:
    result = parse_rules(text, file="rule.yaml", catalog=CATALOG)
    assert [str(problem) for problem in result.problems] == []
    (rule,) = result.rules
    return rule


def plan(rule: Rule, target: TargetObject, *, now: float) -> PlannedAction:
    planned = plan_actions(rule=rule, target=target, now=now)
    assert not isinstance(planned, DeclinedAction), planned
    (action,) = planned
    return action


def params(rule: Rule) -> object:
    (action,) = rule.actions
    return action.params


@dataclass
class Wall:
    seconds: float = 0.0


@contextmanager
def wall_time() -> Iterator[Wall]:
    """Measures the wall time of the block (the tests assert it stays tiny while virtual time runs)."""
    took = Wall()
    started = time.perf_counter()
    try:
        yield took
    finally:
        took.seconds = time.perf_counter() - started


class InMemoryRuleObjects:
    """The cluster-scoped custom-object calls StateStore and the AutopilotRules make, kept in a dict
    by name; as the apiserver does, every change is also a watch event (`watch`), a spec change bumps
    metadata.generation and a status write does not. `emit_event` records the Events written."""

    server = "https://in-memory"

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self._version = 0
        self.status_writes: list[dict[str, Any]] = []
        """Every status written, in order."""
        self.deletes: list[str] = []
        """The names of the objects deleted, in order."""
        self.events: list[tuple[EventTarget, str, str, str]] = []
        """Every Event written: (regarding, reason, message, type)."""
        self._changes: asyncio.Queue[WatchEvent] | None = None

    def _stamp(self, obj: dict[str, Any], *, change: WatchEventType = "MODIFIED") -> dict[str, Any]:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self.objects[obj["metadata"]["name"]] = obj
        self._tell(change, obj)
        return copy.deepcopy(obj)

    def _tell(self, change: WatchEventType, obj: dict[str, Any]) -> None:
        if self._changes is not None:
            name = obj["metadata"]["name"]
            self._changes.put_nowait(WatchEvent(type=change, object_name=name, namespace=None, raw=copy.deepcopy(obj)))

    def apply(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """`kubectl apply` of an AutopilotRule: created (generation 1), or its spec replaced (generation + 1)."""
        found = self.objects.get(name)
        if found is None:
            obj: dict[str, Any] = {
                "apiVersion": "kafka-autopilot.io/v1alpha1",
                "kind": "AutopilotRule",
                "metadata": {"name": name, "uid": f"uid-{name}-{self._version}", "generation": 1},
                "spec": copy.deepcopy(spec),
            }
            return self._stamp(obj, change="ADDED")
        obj = copy.deepcopy(found)
        obj["spec"] = copy.deepcopy(spec)
        obj["metadata"]["generation"] += 1
        return self._stamp(obj)

    def delete(self, name: str) -> None:
        self._tell("DELETED", self.objects.pop(name))

    async def watch(
        self, kind: str, *, namespace: str | None = None, resource_version: str | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        """The changes made from now on (the caller lists first)."""
        self._changes = asyncio.Queue()
        while True:
            yield await self._changes.get()

    async def emit_event(
        self,
        *,
        involved: EventTarget,
        reason: str,
        message: str,
        type_: EventType,
        action: str,
        at: float | None = None,
    ) -> str:
        self.events.append((involved, reason, message, type_))
        return f"{involved.name}.{len(self.events)}"

    async def get_custom_object(self, *, group: str, version: str, plural: str, name: str) -> dict[str, Any]:
        if name not in self.objects:
            raise NotFoundError(f"{plural} {name} not found", server=self.server, verb="GET", resource=plural)
        return copy.deepcopy(self.objects[name])

    async def list_custom_objects(self, *, label_selector: str | None = None, **_: Any) -> dict[str, Any]:
        selector = LabelSelector.from_query(label_selector) if label_selector else None
        found = [
            copy.deepcopy(obj)
            for obj in self.objects.values()
            if selector is None or selector.matches(obj["metadata"].get("labels") or {})
        ]
        return {"items": found, "metadata": {}}

    async def create_custom_object(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        if body["metadata"]["name"] in self.objects:
            raise ConflictError("exists", server=self.server, verb="POST", resource="autopilotruleobjects")
        created = copy.deepcopy({**body, "status": {}})
        created["metadata"]["uid"] = f"uid-{self._version + 1}"
        return self._stamp(created)

    async def delete_custom_object(self, *, name: str, uid: str, resource_version: str, **_: Any) -> bool:
        """The apiserver's preconditions: a stored object with another uid or resourceVersion is a 409."""
        stored = self.objects.get(name)
        if stored is None:
            return False
        if (stored["metadata"].get("uid"), stored["metadata"]["resourceVersion"]) != (uid, resource_version):
            raise ConflictError(
                "precondition failed", server=self.server, verb="DELETE", resource="autopilotruleobjects"
            )
        del self.objects[name]
        self.deletes.append(name)
        return True

    async def replace_custom_object_status(self, *, body: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        stored = self.objects[body["metadata"]["name"]]
        if stored["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            raise ConflictError(
                "resourceVersion moved", server=self.server, verb="PUT", resource="autopilotruleobjects"
            )
        self.status_writes.append(copy.deepcopy(body["status"]))
        return self._stamp({**copy.deepcopy(stored), "status": copy.deepcopy(body["status"])})
