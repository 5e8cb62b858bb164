"""Rule unit tests (`kafka-autopilot test`): promtool-style YAML, evaluated by the real Prometheus.

A test file names rule files and lists tests. Each test declares the objects the rules see, the input
series in promtool's notation (`a+bxN`, `_`, ...), and what it expects at given evaluation times:

    rule_files: [../../rules/kafka-resize.yaml]
    evaluation_interval: 1m          # how often the agent evaluates; default 1m
    tests:
      - name: reference table
        interval: 1m                 # step of the input series; default 1m
        objects:
          - {kind: PersistentVolumeClaim, namespace: kafka, name: data-kafka-0,
             labels: {app: kafka}, capacity: 400Gi}
        input_series:
          - series: 'px_volume_usage_bytes{namespace="kafka", pvc="data-kafka-0"}'
            values: '300+10x60'
        approvals:                   # optional answers to ActionAwaitingApproval
          - {eval_time: 5m, rule: r, object: kafka/data-kafka-0, approved: true}
        expected:
          - eval_time: 3m
            rule: kafka-resize       # optional when the file has one rule
            object: kafka/data-kafka-0
            state: ActiveActionsTaken
            actions: ["400Gi -> 800Gi"]   # every action taken so far, in order
            declined: AtMaxSize           # optional: the last decline's code

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
from dataclasses import dataclass, field
from pathlib import Path

from agent.actions.registry import CATALOG
from agent.adapters.clock import WallClock
from agent.adapters.errors import PrometheusQueryError
from agent.adapters.files import load_rule_paths
from agent.adapters.local_prometheus import RULE_TEST_EPOCH, LocalPrometheus, PrometheusBinaries, backfill_openmetrics
from agent.adapters.prometheus import PrometheusClient
from agent.audit.trail import AuditRecord, action_record, cycle_records, transition_record
from agent.core.diagnostics import Location, Problem, did_you_mean
from agent.core.engine import PlannedAction, distinct_queries, run_cycle
from agent.core.loader import merge_results
from agent.core.matching import TargetObject, broker_object, node_object, pool_object, pvc_object
from agent.core.pools import PoolShape
from agent.core.quantity import QuantityError, parse_bytes
from agent.core.rules import ConditionProvider, Rule, TargetKind
from agent.core.samples import Sample
from agent.core.series import SeriesNotationError, SeriesValue, expand_values, parse_series_selector, with_timestamps
from agent.core.states import (
    ActionFinished,
    ActionStarted,
    ApprovalAnswered,
    ObjectState,
    decide,
)
from agent.core.yamlview import View, compose_documents

DEFAULT_INTERVAL_SECONDS = 60


class RuleTestFileError(ValueError):
    """The test file itself is wrong; carries every problem found, each with file:line:col."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, kw_only=True)
class Expectation:
    at: int
    rule: str
    object: str
    state: str | None
    actions: tuple[str, ...] | None
    declined: str | None
    location: Location


@dataclass(frozen=True, kw_only=True)
class Approval:
    at: int
    rule: str
    object: str
    approved: bool


@dataclass(frozen=True, kw_only=True)
class RuleTest:
    name: str
    interval: int
    objects: tuple[TargetObject, ...]
    series: tuple[tuple[str, dict[str, str], str], ...]
    expectations: tuple[Expectation, ...]
    approvals: tuple[Approval, ...]


@dataclass(frozen=True, kw_only=True)
class RuleTestFile:
    path: Path
    rules: tuple[Rule, ...]
    evaluation_interval: int
    tests: tuple[RuleTest, ...]


@dataclass(frozen=True, kw_only=True)
class TestOutcome:
    file: Path
    name: str
    failures: tuple[str, ...]
    records: tuple[AuditRecord, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


# --- reading test files ------------------------------------------------------------------------


def read_test_file(path: Path) -> RuleTestFile:
    """Parse and check a test file; raise RuleTestFileError with every problem found."""
    reader = _TestFileReader(path=path)
    return reader.read()


@dataclass
class _TestFileReader:
    path: Path
    problems: list[Problem] = field(default_factory=list)

    def error(self, view: View, message: str) -> None:
        self.problems.append(Problem(location=view.location, rule="", field=view.path, message=message))

    def fail(self) -> RuleTestFileError:
        return RuleTestFileError(self.problems)

    def read(self) -> RuleTestFile:
        try:
            text = self.path.read_text()
        except OSError as error:
            location = Location(file=str(self.path), line=1, column=1)
            raise RuleTestFileError(
                [Problem(location=location, rule="", field="", message=f"cannot read: {error.strerror}")]
            ) from error
        composed = compose_documents(text, file=str(self.path))
        if composed.error is not None:
            syntax = composed.error
            raise RuleTestFileError([Problem(location=syntax.location, rule="", field="", message=syntax.message)])
        documents = composed.views
        if len(documents) != 1 or not documents[0].is_mapping():
            location = Location(file=str(self.path), line=1, column=1)
            raise RuleTestFileError([Problem(location=location, rule="", field="", message="must be one YAML mapping")])
        root = documents[0]
        self.check_keys(root, ("rule_files", "evaluation_interval", "tests"), ("rule_files", "tests"))
        rules = self.rules(root.get("rule_files"))
        interval = self.duration(root.get("evaluation_interval"), DEFAULT_INTERVAL_SECONDS)
        tests = [self.test(view, rules) for view in self.sequence(root.get("tests"))]
        if self.problems:
            raise self.fail()
        return RuleTestFile(
            path=self.path,
            rules=tuple(rules),
            evaluation_interval=interval,
            tests=tuple(test for test in tests if test is not None),
        )

    def check_keys(self, view: View, known: Sequence[str], required: Sequence[str] = ()) -> bool:
        if not view.is_mapping():
            self.error(view, f"must be a mapping, got a {view.kind}")
            return False
        present = set()
        for key, key_view, _ in view.items():
            present.add(key)
            if key not in known:
                self.error(key_view, f'unknown field "{key}"{did_you_mean(key, known)}')
        for key in required:
            if key not in present:
                self.error(view, f'missing required field "{key}"')
        return True

    def sequence(self, view: View | None) -> list[View]:
        if view is None:
            return []
        if not view.is_sequence():
            self.error(view, f"must be a list, got a {view.kind}")
            return []
        return list(view.elements())

    def text(self, view: View | None, default: str | None = None) -> str | None:
        if view is None:
            return default
        if not view.is_scalar() or view.kind == "null":
            self.error(view, f"must be a string, got a {view.kind}")
            return default
        return view.text()

    def duration(self, view: View | None, default: int) -> int:
        text = self.text(view)
        if view is None or text is None:
            return default
        seconds = parse_duration(text)
        if seconds is None:
            self.error(view, f"must be a duration like 30s, 5m or 1h, got {text!r}")
            return default
        return seconds

    def rules(self, view: View | None) -> list[Rule]:
        paths = []
        for element in self.sequence(view):
            name = self.text(element)
            if name is not None:
                path = (self.path.parent / name).resolve()
                if not path.exists():
                    self.error(element, f"rule file {name} not found (looked at {path})")
                paths.append(path)
        if self.problems:
            return []
        result = merge_results(load_rule_paths(paths, catalog=CATALOG))
        if result.errors:
            self.problems.extend(result.errors)
        return list(result.rules)

    def test(self, view: View, rules: Sequence[Rule]) -> RuleTest | None:
        known = ("name", "interval", "objects", "input_series", "expected", "approvals")
        if not self.check_keys(view, known, ("name", "expected")):
            return None
        name = self.text(view.get("name"), "") or ""
        interval = self.duration(view.get("interval"), DEFAULT_INTERVAL_SECONDS)
        objects = [obj for element in self.sequence(view.get("objects")) if (obj := self.object(element))]
        series = [s for element in self.sequence(view.get("input_series")) if (s := self.series(element))]
        rule_names = [rule.name for rule in rules]
        expectations = [
            e for element in self.sequence(view.get("expected")) if (e := self.expectation(element, rule_names))
        ]
        approvals = [a for element in self.sequence(view.get("approvals")) if (a := self.approval(element, rule_names))]
        return RuleTest(
            name=name,
            interval=interval,
            objects=tuple(objects),
            series=tuple(series),
            expectations=tuple(expectations),
            approvals=tuple(approvals),
        )

    def object(self, view: View) -> TargetObject | None:
        known = ("kind", "name", "namespace", "labels", "capacity", "broker_id", "node", "pool", "drives", "drive_size")
        if not self.check_keys(view, known, ("kind", "name")):
            return None
        kind_text = self.text(view.get("kind"), "") or ""
        kinds = [kind.value for kind in TargetKind]
        if kind_text not in kinds:
            self.error(
                _must(view.get("kind")), f"kind must be one of {', '.join(kinds)}{did_you_mean(kind_text, kinds)}"
            )
            return None
        kind = TargetKind(kind_text)
        name = self.text(view.get("name"), "") or ""
        namespace = self.text(view.get("namespace"), "default") or "default"
        labels_view = view.get("labels")
        labels = {}
        if labels_view is not None:
            if not labels_view.is_mapping():
                self.error(labels_view, "must be a mapping of label to value")
            else:
                labels = {key: value.text() for key, _, value in labels_view.items() if value.is_scalar()}
        if kind is TargetKind.PVC:
            capacity = self.size(view.get("capacity"))
            return pvc_object(namespace=namespace, name=name, labels=labels, capacity_bytes=capacity)
        if kind is TargetKind.BROKER:
            broker_id = self.text(view.get("broker_id"), "0") or "0"
            if not broker_id.isdigit():
                self.error(_must(view.get("broker_id")), "must be a whole number")
                return None
            return broker_object(namespace=namespace, pod=name, broker_id=int(broker_id), labels=labels)
        if kind is TargetKind.NODE:
            return node_object(name=name, labels=labels)
        drives = self.text(view.get("drives"), "1") or "1"
        drive_size = self.size(view.get("drive_size"))
        node = self.text(view.get("node"), "") or ""
        if not drives.isdigit() or drive_size is None:
            self.error(view, "a StoragePool needs drives (a whole number) and drive_size (e.g. 1Ti)")
            return None
        shape = PoolShape(total_bytes=int(drives) * drive_size, drive_count=int(drives), drive_size_bytes=drive_size)
        return pool_object(node=node, pool=name, labels=labels, shape=shape)

    def size(self, view: View | None) -> int | None:
        text = self.text(view)
        if view is None or text is None:
            return None
        try:
            return parse_bytes(text)
        except QuantityError as error:
            self.error(view, str(error))
            return None

    def series(self, view: View) -> tuple[str, dict[str, str], str] | None:
        if not self.check_keys(view, ("series", "values"), ("series", "values")):
            return None
        selector_view, values_view = _must(view.get("series")), _must(view.get("values"))
        selector, values = self.text(selector_view, "") or "", self.text(values_view, "") or ""
        try:
            name, labels = parse_series_selector(selector)
        except SeriesNotationError as error:
            self.error(selector_view, str(error))
            return None
        try:
            expand_values(values)
        except SeriesNotationError as error:
            self.error(values_view, str(error))
            return None
        return name, labels, values

    def expectation(self, view: View, rule_names: Sequence[str]) -> Expectation | None:
        known = ("eval_time", "rule", "object", "state", "actions", "declined")
        if not self.check_keys(view, known, ("eval_time", "object")):
            return None
        at = self.duration(view.get("eval_time"), -1)
        rule = self.rule_name(view, rule_names)
        actions_view = view.get("actions")
        actions = None
        if actions_view is not None:
            actions = tuple(text for element in self.sequence(actions_view) if (text := self.text(element)) is not None)
        if at < 0 or rule is None:
            return None
        return Expectation(
            at=at,
            rule=rule,
            object=self.text(view.get("object"), "") or "",
            state=self.text(view.get("state")),
            actions=actions,
            declined=self.text(view.get("declined")),
            location=view.location,
        )

    def approval(self, view: View, rule_names: Sequence[str]) -> Approval | None:
        if not self.check_keys(view, ("eval_time", "rule", "object", "approved"), ("eval_time", "object", "approved")):
            return None
        approved = _must(view.get("approved"))
        if approved.kind != "boolean":
            self.error(approved, "must be true or false")
            return None
        rule = self.rule_name(view, rule_names)
        if rule is None:
            return None
        return Approval(
            at=self.duration(view.get("eval_time"), 0),
            rule=rule,
            object=self.text(view.get("object"), "") or "",
            approved=bool(approved.scalar()),
        )

    def rule_name(self, view: View, rule_names: Sequence[str]) -> str | None:
        rule_view = view.get("rule")
        if rule_view is None:
            if len(rule_names) == 1:
                return rule_names[0]
            self.error(view, "rule: required when the rule files hold more than one rule")
            return None
        rule = self.text(rule_view)
        if rule not in rule_names:
            self.error(rule_view, f"no rule named {rule!r} in rule_files{did_you_mean(rule or '', rule_names)}")
            return None
        return rule


def parse_duration(text: str) -> int | None:
    """Prometheus-style durations (`90s`, `5m`, `1h30m`, `2d`) or plain seconds, as whole seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip()
    if text.isdigit():
        return int(text)
    total, number = 0, ""
    for char in text:
        if char.isdigit():
            number += char
        elif char in units and number:
            total += int(number) * units[char]
            number = ""
        else:
            return None
    return total if not number and text else None


def _must(view: View | None) -> View:
    assert view is not None
    return view


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
            )
            self.states[key] = step.state
            for transition in step.transitions:
                self.record(transition_record(transition, dry_run=True))

    def rule(self, name: str) -> Rule:
        return next(rule for rule in self.test_file.rules if rule.name == name)

    def cycle(self, now: int) -> None:
        rules = self.test_file.rules
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
