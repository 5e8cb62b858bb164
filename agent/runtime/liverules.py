"""AutopilotRules as live objects: follow them, run what they say without a restart, and show on each
one how it is doing.

Why it exists: with `--cluster-rules` the rules are objects that people edit with kubectl, and expect
the agent to follow within a poll, as any controller does, and to say on the object whether it
loaded (`kubectl get autopilotrules`). Two parts:

- `ClusterRuleWatch` lists the AutopilotRules, then watches them (agent.adapters.kubernetes.client
  `watch`, which survives 410 and apiserver restarts; a relist replaces the whole view), loads each
  one with the rule loader and tells the scheduler (agent.runtime.scheduler) what to run. It decides,
  failing closed:
  - a new valid rule starts; a changed one replaces its loop after the loop's current cycle (its
    durable states are kept: they are keyed by rule name); a deleted one stops after its current cycle.
    Actions in flight always run to their end, with the version that planned them (a resize is never
    cut half-way); an edit that only touches the status or other metadata changes nothing;
  - an invalid edit of a running rule keeps the last valid version running, and the status says
    Valid=False with the loader's problems (file `cluster:autopilotrule/<name>`, line, field) and which
    generation still runs; a new rule that is invalid does not run;
  - a name a rule file (`--rules`) already uses is an error: the file's rule runs, the AutopilotRule
    does not, and its status names both sources;
  - a rule this agent does not run (a sidecar's scope, no storage API) is held: its health says why;
  - while the AutopilotRules cannot be read (a 403, the CRD missing) the rules stay as they were, the
    error is logged, and the list is tried again every WATCH_RETRY_SECONDS (TEMPORARY_RETRY_SECONDS
    after a temporary error); the agent is not ready until the first list was loaded.
- `ClusterRuleReports` is what the recorder (agent.runtime.recorder `RuleReporter`) tells about rules
  that came from the cluster: an Event on the AutopilotRule per transition of its objects (bounded per
  cycle: agent.runtime.events `RuleEvents`), and its status, written only when it changed: the Valid
  condition and observedGeneration when the rule is (re)loaded, `objects` (the objects it keeps a
  state for) and `objectsByState` after a cycle that changed them, and `lastEvaluated` with them, or
  alone once it is STATUS_REFRESH_SECONDS old.
  So a steady rule costs one status write a minute, never one per object. A dry-run agent writes no
  status (the live agent's is the one that counts).

Both run only in the replica that leads: they are started with the rule loops.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog

from agent.adapters.clock import Clock
from agent.adapters.errors import KubeError, NotFoundError
from agent.adapters.kubernetes.client import EventTarget, WatchEvent, WatchKind
from agent.adapters.kubernetes.clusterrules import (
    ClusterRule,
    RuleStatusApi,
    cluster_rule,
    rule_status,
    write_rule_status,
)
from agent.adapters.kubernetes.statuscodec import RULES_PLURAL, VERSION, format_time, parse_time
from agent.core.catalog import Catalog
from agent.core.diagnostics import Location, Problem, Severity
from agent.core.engine import CycleOutcome, state_counts
from agent.core.loader import parse_rules
from agent.core.rules import API_GROUP, API_VERSION, RULE_KIND, Rule
from agent.core.states import Transition
from agent.runtime.events import RuleEvents
from agent.runtime.recorder import Recorder

log = structlog.get_logger("kafka-autopilot")

STATUS_REFRESH_SECONDS: Final = 60.0
"""`lastEvaluated` alone is written again once it is this old (with any other change, at once)."""
WATCH_RETRY_SECONDS: Final = 30.0
"""How long to wait before listing the AutopilotRules again after a permanent error (403, 404)."""
TEMPORARY_RETRY_SECONDS: Final = 2.0
"""The same after a temporary one (a 429 while a new CRD's storage initializes, a 5xx, a reset),
unless the server said how long (Retry-After)."""


class RuleSource(Protocol):
    """The KubeClient calls that follow the AutopilotRules."""

    async def list_custom_objects(self, *, group: str, version: str, plural: str) -> dict[str, Any]: ...

    def watch(
        self, kind: WatchKind, *, namespace: str | None = None, resource_version: str | None = None
    ) -> AsyncGenerator[WatchEvent, None]: ...


class RuleLoops(Protocol):
    """agent.runtime.scheduler.Scheduler: what it runs."""

    def put(self, rule: Rule) -> None: ...

    def remove(self, name: str) -> None: ...

    def hold(self, name: str, why: str) -> None: ...


@dataclass(frozen=True, kw_only=True)
class _Loaded:
    problems: tuple[Problem, ...]
    note: str
    generation: int | None


@dataclass
class ClusterRuleReports:
    """Events and status on the AutopilotRules whose rules run (see the module docstring)."""

    kube: RuleStatusApi
    events: RuleEvents
    clock: Clock
    write_status: bool = True
    status_refresh_seconds: float = STATUS_REFRESH_SECONDS
    _objects: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """Each AutopilotRule as last seen (watched or written): its status and resourceVersion."""
    _loaded: dict[str, _Loaded] = field(default_factory=dict)
    _running: set[str] = field(default_factory=set)
    """Rules that run from their AutopilotRule (not a rule file's of the same name)."""

    def seen(self, obj: Mapping[str, Any]) -> None:
        self._objects[str(obj["metadata"]["name"])] = obj

    def gone(self, name: str) -> None:
        self._objects.pop(name, None)
        self._loaded.pop(name, None)
        self._running.discard(name)
        self.events.forget(name)

    async def loaded(self, found: ClusterRule, *, problems: Sequence[Problem], note: str, running: bool) -> None:
        """The AutopilotRule was (re)loaded: its Valid condition and observedGeneration."""
        self._loaded[found.name] = _Loaded(problems=tuple(problems), note=note, generation=found.generation)
        if running:
            self._running.add(found.name)
        else:
            self._running.discard(found.name)
        await self._write(found.name)

    async def transition(self, rule: Rule, transition: Transition) -> None:
        involved = self._involved(rule.name)
        if involved is not None:
            await self.events.transition(involved, transition)

    async def cycle_recorded(self, rule: Rule, outcome: CycleOutcome) -> None:
        involved = self._involved(rule.name)
        if involved is None:
            return
        await self.events.cycle_end(involved)
        by_state = Counter({state.value: count for state, count in state_counts(outcome).items() if count})
        await self._write(
            rule.name, objects=sum(by_state.values()), objects_by_state=by_state, evaluated_at=self.clock.now()
        )

    def _involved(self, name: str) -> EventTarget | None:
        obj = self._objects.get(name)
        if obj is None or name not in self._running:
            return None
        uid = obj["metadata"].get("uid")
        return EventTarget(kind=RULE_KIND, name=name, namespace=None, uid=uid, api_version=API_VERSION)

    async def _write(
        self,
        name: str,
        *,
        objects: int | None = None,
        objects_by_state: Mapping[str, int] | None = None,
        evaluated_at: float | None = None,
    ) -> None:
        seen, loaded = self._objects.get(name), self._loaded.get(name)
        if not self.write_status or seen is None or loaded is None:
            return
        now = self.clock.now()

        def new_status(current: Mapping[str, Any] | None) -> dict[str, Any] | None:
            status = rule_status(
                current=current,
                problems=loaded.problems,
                generation=loaded.generation,
                now=now,
                objects=objects,
                objects_by_state=objects_by_state,
                note=loaded.note,
            )
            if evaluated_at is None:
                return None if status == dict(current or {}) else status
            if status == dict(current or {}) and not self._evaluation_stale(current, evaluated_at):
                return None
            status["lastEvaluated"] = format_time(math.floor(evaluated_at))
            return status

        try:
            written = await write_rule_status(self.kube, seen=seen, new_status=new_status)
        except NotFoundError:
            return  # deleted meanwhile: the watch says so next
        except KubeError as error:  # informational: never stops a cycle
            log.warning("AutopilotRule status not written", rule=name, error=str(error))
            return
        if written is not None:
            self._objects[name] = written

    def _evaluation_stale(self, current: Mapping[str, Any] | None, evaluated_at: float) -> bool:
        last = (current or {}).get("lastEvaluated")
        try:
            return last is None or evaluated_at - parse_time(last) >= self.status_refresh_seconds
        except ValueError:
            return True


@dataclass
class ClusterRuleWatch:
    """Follows the AutopilotRules and tells the scheduler what to run (see the module docstring)."""

    kube: RuleSource
    loops: RuleLoops
    reports: ClusterRuleReports
    recorder: Recorder
    catalog: Catalog
    clock: Clock
    file_rules: Mapping[str, Rule] = field(default_factory=dict)
    """The rules of `--rules`, by name: a cluster rule of the same name does not run."""
    not_run: Callable[[Rule], str | None] = lambda _rule: None
    """Why this agent does not run a rule (a sidecar's scope, no storage API), or None."""
    on_problems: Callable[[int], None] = lambda _count: None
    """Told how many loader errors the AutopilotRules have now (the rule-problems gauge)."""
    retry_seconds: float = WATCH_RETRY_SECONDS
    synced: bool = False
    """The first list was loaded."""
    problem: str = ""
    """Why the AutopilotRules are not followed right now, or ""."""
    _versions: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    """(uid, rule text) last loaded, by name: a status-only change is not a change of the rule."""
    _running: dict[str, ClusterRule] = field(default_factory=dict)
    """The version that runs (or is held as not run here), by name."""
    _errors: dict[str, int] = field(default_factory=dict)

    def readiness(self) -> str | None:
        if self.synced:
            return None
        return f"AutopilotRules not listed yet{': ' + self.problem if self.problem else ''}"

    async def run(self) -> None:
        """List, then watch, until cancelled; a permanent error is logged and the list tried again."""
        while True:
            try:
                listing = await self.kube.list_custom_objects(group=API_GROUP, version=VERSION, plural=RULES_PLURAL)
                await self.replace_all(listing.get("items") or [])
                self.synced, self.problem = True, ""
                version = (listing.get("metadata") or {}).get("resourceVersion") or None
                watch = self.kube.watch("autopilotrules", resource_version=version)
                async with contextlib.aclosing(watch) as events:
                    async for event in events:
                        await self.apply(event)
            except KubeError as error:  # the watch itself resumes after temporary errors; a list does not
                pause = error.retry_after or (TEMPORARY_RETRY_SECONDS if error.temporary else self.retry_seconds)
                self.problem = f"cannot follow the AutopilotRules: {error}"
                log.error(f"{self.problem}; the rules stay as they are, listing again in {pause:.0f}s")
                await self.clock.sleep(pause)

    async def apply(self, event: WatchEvent) -> None:
        if event.type == "RESYNC":
            await self.replace_all(event.raw.get("items") or [])
        elif event.type == "DELETED":
            await self.deleted(event.object_name)
        else:
            await self.changed(event.raw)

    async def replace_all(self, items: Sequence[Mapping[str, Any]]) -> None:
        """The whole list: what is no longer in it was deleted."""
        names = {str(item["metadata"]["name"]) for item in items}
        for name in sorted(set(self._versions) - names):
            await self.deleted(name)
        for item in sorted(items, key=lambda item: str(item["metadata"]["name"])):
            await self.changed(item)

    async def changed(self, obj: Mapping[str, Any]) -> None:
        found = cluster_rule(obj)
        self.reports.seen(obj)
        version = (found.uid, found.text)
        if self._versions.get(found.name) == version:
            return
        self._versions[found.name] = version
        await self._load(found)

    async def deleted(self, name: str) -> None:
        self._versions.pop(name, None)
        self._errors.pop(name, None)
        self.on_problems(sum(self._errors.values()))
        self.reports.gone(name)
        if self._running.pop(name, None) is not None:
            self.loops.remove(name)
            log.info("rule removed: its loop stops after its current cycle", rule=name)
            self.recorder.rule_changed(
                event="rule-removed", rule=name, reason="AutopilotRule deleted; actions in flight run to their end"
            )

    async def _load(self, found: ClusterRule) -> None:
        result = parse_rules(found.text, file=found.file, catalog=self.catalog)
        rule = next((rule for rule in result.rules if rule.name == found.name), None)
        problems = list(result.problems)
        in_file = self.file_rules.get(found.name)
        if in_file is not None:
            at = rule.source if rule is not None else Location(file=found.file, line=1, column=1)
            problems.append(
                Problem(
                    location=at,
                    rule=found.name,
                    field="metadata.name",
                    message=f"rule name already used by the rule file at {in_file.source} (--rules); "
                    "the file's rule runs, this AutopilotRule does not",
                )
            )
        errors = [problem for problem in problems if problem.severity is Severity.ERROR]
        self._errors[found.name] = len(errors)
        self.on_problems(sum(self._errors.values()))
        for problem in problems:
            log.warning(f"rule problem: {problem}")
        if rule is None or errors:
            await self._refuse(found, problems)
            return
        event = "rule-changed" if found.name in self._running else "rule-added"
        self._running[found.name] = found
        why = self.not_run(rule)
        if why is None:
            self.loops.put(rule)
            log.info(f"{event.replace('-', ' ')}: it runs from now on", rule=found.name, generation=found.generation)
        else:
            self.loops.hold(found.name, why)
        self.recorder.rule_changed(event=event, rule=found.name, reason=why or f"generation {found.generation}")
        await self.reports.loaded(
            found, problems=problems, note=f"not run by this agent: {why}" if why else "", running=why is None
        )

    async def _refuse(self, found: ClusterRule, problems: Sequence[Problem]) -> None:
        running = self._running.get(found.name)
        if running is not None:
            note = f"still running generation {running.generation}, its last valid version"
        else:
            note = "not run"
        self.recorder.rule_changed(
            event="rule-invalid", rule=found.name, reason="; ".join([*(str(p) for p in problems), note])
        )
        await self.reports.loaded(found, problems=problems, note=note, running=running is not None)
