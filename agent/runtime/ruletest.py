"""Rule unit tests (`kafka-autopilot test`): promtool-style YAML, evaluated by the real Prometheus.

The file format and its reader are in `agent.runtime.ruletest_file`.

The series are backfilled with `promtool tsdb create-blocks-from openmetrics` into a fresh TSDB, a
`prometheus` serves it on loopback, and every condition is an instant query at the evaluation time:
there is no PromQL engine of ours. The caller names both binaries (`kafka-autopilot test` finds them with
`agent.adapters.local_prometheus.find_binaries`). Conditions of `provider: kubernetes` rules read input
series named after their key (e.g. `NodeReady{node="n1"}`).

The executor is simulated: a planned action succeeds at once, and a resize or pool expansion updates
the object's size (each action's spec says how: `ActionSpec.simulate`), so later plans start from it.
Nothing leaves this process but Prometheus queries.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.actions.registry import CATALOG
from agent.adapters.clock import WallClock
from agent.adapters.errors import PrometheusQueryError
from agent.adapters.local_prometheus import RULE_TEST_EPOCH, LocalPrometheus, PrometheusBinaries, backfill_openmetrics
from agent.adapters.prometheus import PrometheusClient
from agent.audit.trail import AuditRecord, action_record, cycle_records, transition_record
from agent.core.diagnostics import Location, Problem
from agent.core.engine import PlannedAction, distinct_queries, run_cycle
from agent.core.matching import TargetObject
from agent.core.rules import ConditionProvider, Rule
from agent.core.samples import Sample
from agent.core.series import SeriesValue, expand_values, with_timestamps
from agent.core.states import (
    ActionFinished,
    ActionStarted,
    ApprovalAnswered,
    ObjectState,
    decide,
)
from agent.runtime.ruletest_file import (
    Expectation,
    RuleTest,
    RuleTestFile,
    RuleTestFileError,
    read_test_file,
)

__all__ = ["RuleTestFileError", "TestOutcome", "read_test_file", "run_test"]


@dataclass(frozen=True, kw_only=True)
class TestOutcome:
    file: Path
    name: str
    failures: tuple[str, ...]
    records: tuple[AuditRecord, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


# --- running tests -----------------------------------------------------------------------------


def run_test(
    test_file: RuleTestFile,
    test: RuleTest,
    *,
    binaries: PrometheusBinaries,
    on_record: Callable[[AuditRecord], None] | None = None,
) -> TestOutcome:
    end = max((expectation.at for expectation in test.expectations), default=0)
    with tempfile.TemporaryDirectory(prefix="kafka-autopilot-ruletest-") as scratch:
        tsdb = Path(scratch) / "tsdb"
        backfill_openmetrics(
            series=[(name, labels, _timed(values, interval=test.interval)) for name, labels, values in test.series],
            tsdb_dir=tsdb,
            promtool=binaries.promtool,
        )
        with LocalPrometheus(prometheus=binaries.prometheus, tsdb_dir=tsdb, run_dir=Path(scratch)) as server:
            client = PrometheusClient(url=server.url, clock=WallClock())
            try:
                simulation = _Simulation(
                    test_file=test_file, test=test, query=client.instant_query, on_record=on_record
                )
                failures = simulation.run(until=end)
            finally:
                client.close()
    return TestOutcome(file=test_file.path, name=test.name, failures=tuple(failures), records=tuple(simulation.records))


def _timed(values: str, *, interval: int) -> list[tuple[float, SeriesValue]]:
    return with_timestamps(expand_values(values), start_seconds=RULE_TEST_EPOCH, interval_seconds=interval)


QueryFunc = Callable[..., Sequence[Sample]]


@dataclass
class _Simulation:
    """The agent's loop in fast-forward: evaluate every interval, act through a simulated executor."""

    test_file: RuleTestFile
    test: RuleTest
    query: QueryFunc
    on_record: Callable[[AuditRecord], None] | None
    states: dict[tuple[str, str], ObjectState] = field(default_factory=dict)
    objects: dict[str, TargetObject] = field(default_factory=dict)
    taken: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    last_decline: dict[tuple[str, str], str] = field(default_factory=dict)
    records: list[AuditRecord] = field(default_factory=list)

    def run(self, *, until: int) -> list[str]:
        self.objects = {obj.key: obj for obj in self.test.objects}
        failures: list[str] = []
        step = self.test_file.evaluation_interval
        expectations = sorted(self.test.expectations, key=lambda expectation: expectation.at)
        looked_at = [e.at for e in expectations] + [a.at for a in self.test.approvals]
        for now in _times(until=until, step=step, extra=looked_at):
            self.answer_approvals(now)
            self.cycle(now)
            failures.extend(self.check(e) for e in expectations if e.at == now)
        return [failure for failure in failures if failure]

    def record(self, record: AuditRecord) -> None:
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def answer_approvals(self, now: int) -> None:
        for approval in self.test.approvals:
            if approval.at != now:
                continue
            key = (approval.rule, approval.object)
            rule = self.rule(approval.rule)
            step = decide(
                rule=rule.name,
                object_key=approval.object,
                state=self.states.get(key, ObjectState()),
                event=ApprovalAnswered(approved=approval.approved, by="rule test"),
                now=now,
                cooldown_seconds=rule.cooldown_seconds,
                for_seconds=rule.conditions.for_seconds,
                poll_interval_seconds=rule.poll_interval_seconds,
            )
            self.states[key] = step.state
            for transition in step.transitions:
                self.record(transition_record(transition, dry_run=True))

    def paced_rules(self) -> list[Rule]:
        """The rules as evaluated here: every `evaluation_interval`, so a gap that restarts `for` (over 2 x
        pollInterval without a holding sample) is measured against the slower of the two."""
        step = int(self.test_file.evaluation_interval)
        return [
            replace(rule, poll_interval_seconds=max(rule.poll_interval_seconds, step)) for rule in self.test_file.rules
        ]

    def rule(self, name: str) -> Rule:
        return next(rule for rule in self.paced_rules() if rule.name == name)

    def cycle(self, now: int) -> None:
        rules = self.paced_rules()
        vectors: dict[str, Sequence[Sample]] = {}
        # Rule tests read kubernetes-provider keys from input series too, so both kinds are queried.
        queries = distinct_queries(rules) + distinct_queries(rules, provider=ConditionProvider.KUBERNETES)
        for query in queries:
            try:
                vectors[query] = self.query(query, at=RULE_TEST_EPOCH + now)
            except PrometheusQueryError as error:
                location = Location(file=str(self.test_file.path), line=1, column=1)
                problem = Problem(location=location, rule="", field="", message=str(error))
                raise RuleTestFileError([problem]) from error
        for rule in rules:
            states = {obj: state for (name, obj), state in self.states.items() if name == rule.name}
            outcome = run_cycle(
                rule=rule,
                objects=list(self.objects.values()),
                vectors=vectors,
                states=states,
                now=now,
                catalog=CATALOG,
            )
            for obj, state in outcome.states.items():
                self.states[(rule.name, obj)] = state
            for record in cycle_records(outcome, dry_run=True):
                self.record(record)
            for declined in outcome.declined:
                self.last_decline[(rule.name, declined.object)] = declined.code
            for planned in outcome.planned:
                self.execute(rule, planned, now)

    def execute(self, rule: Rule, planned: PlannedAction, now: int) -> None:
        key = (rule.name, planned.object)
        for event in (ActionStarted(), ActionFinished(succeeded=True, reason="simulated executor: applied")):
            step = decide(
                rule=rule.name,
                object_key=planned.object,
                state=self.states[key],
                event=event,
                now=now,
                cooldown_seconds=rule.cooldown_seconds,
                for_seconds=rule.conditions.for_seconds,
                poll_interval_seconds=rule.poll_interval_seconds,
            )
            self.states[key] = step.state
            for transition in step.transitions:
                self.record(transition_record(transition, dry_run=True))
        self.taken.setdefault(key, []).append(f"{planned.before} -> {planned.after}")
        self.record(action_record(planned, dry_run=True, outcome="applied", reason="simulated executor"))
        target = self.objects.get(planned.object)
        if target is None:
            return
        spec = CATALOG.get(planned.action)
        if spec is not None:
            self.objects[target.key] = spec.simulated(target, planned.detail)

    def check(self, expectation: Expectation) -> str:
        key = (expectation.rule, expectation.object)
        state = self.states.get(key)
        where = f"{expectation.location}: at {expectation.at}s, {expectation.rule} {expectation.object}"
        problems = []
        if state is None:
            return f"{where}: the object was never evaluated (is it declared in objects and selected by the rule?)"
        if expectation.state is not None and state.state.value != expectation.state:
            problems.append(f"state {state.state.value} ({state.reason}), expected {expectation.state}")
        taken = self.taken.get(key, [])
        if expectation.actions is not None and tuple(taken) != expectation.actions:
            problems.append(f"actions {taken}, expected {list(expectation.actions)}")
        decline = self.last_decline.get(key)
        if expectation.declined is not None and decline != expectation.declined:
            problems.append(f"last decline {decline}, expected {expectation.declined}")
        return f"{where}: " + "; ".join(problems) if problems else ""


def _times(*, until: int, step: int, extra: Sequence[int]) -> Iterator[int]:
    """Every multiple of `step` up to `until`, plus the exact times tests look at, in order."""
    return iter(sorted(set(range(0, until + 1, step)) | {time for time in extra if time <= until}))
