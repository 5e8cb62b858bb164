"""The file format of rule unit tests (`kafka-autopilot test`), with every problem at file:line:col.

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

This module is the format and its checks; running the tests against Prometheus is
`agent.runtime.ruletest`. `read_inventory` reads a file of `objects:` alone, written the same way
(`kafka-autopilot backtest --objects`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.actions.registry import CATALOG
from agent.adapters.files import load_rule_paths
from agent.core.diagnostics import Location, Problem, did_you_mean
from agent.core.loader import merge_results
from agent.core.matching import TargetObject, broker_object, node_object, pool_object, pvc_object
from agent.core.pools import PoolShape
from agent.core.quantity import QuantityError, parse_bytes
from agent.core.rules import Rule, TargetKind
from agent.core.series import SeriesNotationError, expand_values, parse_series_selector
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


# --- reading test files ------------------------------------------------------------------------


def read_test_file(path: Path) -> RuleTestFile:
    """Parse and check a test file; raise RuleTestFileError with every problem found."""
    reader = _TestFileReader(path=path)
    return reader.read()


def read_inventory(path: Path) -> tuple[TargetObject, ...]:
    """An object inventory (`kafka-autopilot backtest --objects`): a mapping whose `objects` list takes
    the fields of a test's `objects`; RuleTestFileError with every problem found."""
    reader = _TestFileReader(path=path)
    root = reader.root()
    reader.check_keys(root, ("objects",), ("objects",))
    objects = tuple(obj for element in reader.sequence(root.get("objects")) if (obj := reader.object(element)))
    if reader.problems:
        raise reader.fail()
    return objects


@dataclass
class _TestFileReader:
    path: Path
    problems: list[Problem] = field(default_factory=list)

    def error(self, view: View, message: str) -> None:
        self.problems.append(Problem(location=view.location, rule="", field=view.path, message=message))

    def fail(self) -> RuleTestFileError:
        return RuleTestFileError(self.problems)

    def read(self) -> RuleTestFile:
        root = self.root()
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

    def root(self) -> View:
        """The file's one YAML mapping; RuleTestFileError if it cannot be read or is not one."""
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
        return documents[0]

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
