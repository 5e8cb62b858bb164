"""Kubernetes Events for what the agent decided and did, where `kubectl describe` shows them.

Why it exists: SREs look at the object first. Each record the recorder turns into an Event goes on
the object acted on (PVC, Node, Pod) and on the rule's state object (AutopilotRuleObject), so both
`kubectl describe pvc …` and `kubectl get events --field-selector involvedObject.kind=AutopilotRuleObject`
tell the story. An Event that cannot be written is logged and dropped: it never stops an action.

A rule that is an AutopilotRule object also gets Events for its objects' transitions (`RuleEvents`),
as Portworx's Autopilot writes them, so `kubectl describe autopilotrule <name>` and
`kubectl get events --field-selector involvedObject.kind=AutopilotRule,involvedObject.name=<name>`
show them; those are bounded per cycle, so a rule over 10,000 objects does not write 10,000 Events.

Both write through `EventQueue` in the agent: a task of its own writes the Events in order, so no cycle
and no action waits on them. A threshold crossed is patched after the writes that make the action
durable (its AutopilotRuleObject), not after the four to six Events its transitions give.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Protocol

import structlog

from agent.adapters.clock import Clock
from agent.adapters.kubernetes import EventTarget, KubeError
from agent.adapters.kubernetes.client import EventType
from agent.adapters.kubernetes.statuscodec import object_name
from agent.core.matching import TargetObject
from agent.core.rules import TargetKind
from agent.core.states import RuleState, Transition

log = structlog.get_logger("kafka-autopilot")


class EventWriter(Protocol):
    """KubeClient.emit_event, or an EventQueue in front of it."""

    async def emit_event(
        self,
        *,
        involved: EventTarget,
        reason: str,
        message: str,
        type_: EventType,
        action: str,
        at: float | None = None,
    ) -> object: ...


EVENT_QUEUE_CAPACITY: Final = 1000
"""Events waiting to be written before new ones are dropped (and counted)."""


class _Waiting(NamedTuple):
    involved: EventTarget
    reason: str
    message: str
    type_: EventType
    action: str
    at: float


class EventQueue:
    """Events written by a task of their own (`run`), in the order they were emitted, each with the time it
    was emitted as its eventTime. `emit_event` only queues, so the caller goes on at once.

    Bounded: with `capacity` Events waiting (an apiserver slow to take them), a new one is dropped and
    counted (`on_dropped`). An Event the apiserver refuses is logged and dropped, as before: Events tell
    the story, they never hold up a cycle or an action."""

    def __init__(
        self,
        *,
        kube: EventWriter,
        clock: Clock,
        capacity: int = EVENT_QUEUE_CAPACITY,
        on_dropped: Callable[[], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"the Event queue needs room for at least one Event, not {capacity}")
        self.capacity = capacity
        self.dropped = 0
        self._kube = kube
        self._clock = clock
        self._on_dropped = on_dropped
        self._waiting: deque[_Waiting] = deque()
        self._dropped_since_empty = 0
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()

    @property
    def buffered(self) -> int:
        """Events queued and not written yet (the one being written included)."""
        return len(self._waiting)

    async def emit_event(
        self,
        *,
        involved: EventTarget,
        reason: str,
        message: str,
        type_: EventType,
        action: str,
        at: float | None = None,
    ) -> None:
        if len(self._waiting) >= self.capacity:
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped()
            if self._dropped_since_empty == 0:
                log.warning("events not recorded from now on: too many waiting", waiting=len(self._waiting))
            self._dropped_since_empty += 1
            return
        when = self._clock.now() if at is None else at
        self._waiting.append(_Waiting(involved, reason, message, type_, action, when))
        self._empty.clear()
        self._ready.set()

    async def drained(self) -> None:
        """Return once every queued Event is written or given up (the caller bounds the wait)."""
        await self._empty.wait()

    async def run(self) -> None:
        """Write the queued Events in order, for ever."""
        while True:
            if not self._waiting:
                if self._dropped_since_empty:
                    log.warning("events recorded again", dropped=self._dropped_since_empty)
                    self._dropped_since_empty = 0
                self._empty.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            event = self._waiting[0]
            try:
                await self._kube.emit_event(
                    involved=event.involved,
                    reason=event.reason,
                    message=event.message,
                    type_=event.type_,
                    action=event.action,
                    at=event.at,
                )
            except Exception as error:  # KubeError, or anything else: this Event is lost, the next ones are not
                log.warning(
                    "event not recorded",
                    reason=event.reason,
                    object=event.involved.name,
                    error=f"{type(error).__name__}: {error}",
                )
            self._waiting.popleft()


@dataclass
class KubeEvents:
    """Events on the object acted on, and on the rule's state object (AutopilotRuleObject)."""

    kube: EventWriter

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


RULE_EVENTS_PER_CYCLE: Final = 10
"""Transitions that get an Event each on their AutopilotRule between two cycle ends of the rule."""
RULE_EVENT_OBJECTS_NAMED: Final = 5
"""Objects named in the Event that sums up the others of one (from, to) pair."""


@dataclass
class RuleEvents:
    """Events on an AutopilotRule for its objects' transitions, as Portworx's Autopilot writes them:
    reason the state entered (`Triggered`, `ActiveActionsPending`, ...), message
    `rule: <rule>:<object> transition from <from> => <to>: <why>`; Warning for ActionsDeclined.

    Bounded, per rule: between two ends of its cycles (`cycle_end`), the first `per_cycle` transitions
    (RULE_EVENTS_PER_CYCLE) get an Event each; the others are counted by (from, to) pair, and the cycle's
    end writes one Event per pair, `rule: <rule>: <n> more objects transition from <from> => <to>
    (<first objects> ...)`. A rule writes at most `per_cycle` Events plus one per pair of states a cycle,
    whatever the number of its objects. An Event that cannot be written is logged and dropped.
    """

    kube: EventWriter
    per_cycle: int = RULE_EVENTS_PER_CYCLE
    _sent: dict[str, int] = field(default_factory=dict)
    _over: dict[str, dict[tuple[RuleState, RuleState], list[str]]] = field(default_factory=dict)

    async def transition(self, involved: EventTarget, transition: Transition) -> None:
        rule = involved.name
        if self._sent.get(rule, 0) >= self.per_cycle:
            pair = (transition.from_state, transition.to_state)
            self._over.setdefault(rule, {}).setdefault(pair, []).append(transition.object)
            return
        self._sent[rule] = self._sent.get(rule, 0) + 1
        message = (
            f"rule: {rule}:{transition.object} transition from {transition.from_state} => {transition.to_state}"
            + (f": {transition.reason}" if transition.reason else "")
        )
        await self._emit(involved, transition.to_state, message)

    async def cycle_end(self, involved: EventTarget) -> None:
        """The rule's cycle is over: sum up the transitions over the limit, and start counting again."""
        rule = involved.name
        self._sent.pop(rule, None)
        for (from_state, to_state), objects in sorted(self._over.pop(rule, {}).items()):
            named = ", ".join(objects[:RULE_EVENT_OBJECTS_NAMED]) + (
                " ..." if len(objects) > RULE_EVENT_OBJECTS_NAMED else ""
            )
            message = f"rule: {rule}: {len(objects)} more objects transition from {from_state} => {to_state} ({named})"
            await self._emit(involved, to_state, message)

    def forget(self, rule: str) -> None:
        """The rule is gone: nothing of it is summed up any more."""
        self._sent.pop(rule, None)
        self._over.pop(rule, None)

    async def _emit(self, involved: EventTarget, to_state: RuleState, message: str) -> None:
        try:
            await self.kube.emit_event(
                involved=involved,
                reason=to_state.value,
                message=message,
                type_="Warning" if to_state is RuleState.ACTIONS_DECLINED else "Normal",
                action="Transition",
            )
        except KubeError as error:
            log.warning("event not recorded", reason=to_state.value, rule=involved.name, error=str(error))
