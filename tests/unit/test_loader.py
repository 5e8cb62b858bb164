"""Rule loading: the reference rule unchanged, the shipped rules, and every error pinned to its place.

Expected positions are found in the test text itself (see `where`), so each case states the place an
author would look at: the offending key or value, 1-based line and column as an editor shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
from helpers import REFERENCE_RULE as REFERENCE

from agent.actions.registry import CATALOG
from agent.actions.volume_resize.spec import VolumeResizeParams
from agent.core.diagnostics import Location, Problem
from agent.core.loader import LoadResult, merge_results, parse_rules
from agent.core.operators import Operator
from agent.core.rules import (
    API_VERSION,
    VENDOR_API_VERSION,
    ActionWindow,
    ConditionExpression,
    ConditionProvider,
    Enforcement,
    Rule,
    TargetKind,
)
from agent.runtime.main import load_rules

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
FILE = "rules/test.yaml"
TIB = 1024**4

REFERENCE_QUERY = "100 * (px_volume_usage_bytes / px_volume_capacity_bytes)"

NODE_RULE = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: node-down
spec:
  conditions:
    provider: kubernetes
    expressions:
      - key: NodeReady
        operator: Lt
        values: ["1"]
  actions:
    - name: kafka-autopilot.io.action.node/cordon-reschedule
"""


def where(text: str, needle: str, *, nth: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the nth occurrence of needle in text."""
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(needle, offset + 1)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    return text.replace(old, new)


def upto(text: str, marker: str) -> str:
    """The text before marker."""
    return text.partition(marker)[0]


def after(text: str, marker: str) -> str:
    """The text after marker."""
    return text.partition(marker)[2]


def load(text: str, *, file: str = FILE) -> LoadResult:
    return parse_rules(text, file=file, catalog=CATALOG)


def only_rule(text: str) -> Rule:
    result = load(text)
    assert [str(problem) for problem in result.problems] == []
    assert len(result.rules) == 1
    return result.rules[0]


def expression_meaning(expression: ConditionExpression) -> tuple[object, ...]:
    return (expression.query, expression.operator, expression.values, expression.alias)


def meaning(rule: Rule) -> tuple[object, ...]:
    """Everything a rule means, leaving out where it was written."""
    conditions = rule.conditions
    return (
        rule.name,
        rule.api_version,
        rule.target,
        rule.selector,
        rule.namespace_selector,
        tuple(expression_meaning(expression) for expression in conditions.expressions),
        (conditions.required_matches, conditions.for_seconds, conditions.provider),
        rule.actions,
        rule.poll_interval_seconds,
        rule.cooldown_seconds,
        rule.enforcement,
        rule.action_windows,
        rule.identity_labels,
    )


def shape(problem: Problem) -> str:
    """What str(problem) must be, built from the documented format `file:line:col: rule: field: message`."""
    location = problem.location
    return f"{location.file}:{location.line}:{location.column}: {problem.rule or '-'}: {problem.field or '-'}: "


# --- the reference rule ------------------------------------------------------------------------


def test_reference_rule_loads_unchanged_with_typed_params() -> None:
    rule = only_rule(REFERENCE)

    assert rule.name == "kafka-resize"
    assert rule.api_version == VENDOR_API_VERSION
    assert rule.source == Location(file=FILE, line=1, column=1)
    assert rule.target is TargetKind.PVC
    assert dict(rule.selector.match_labels) == {"app": "kafka"}
    assert rule.selector.match_expressions == ()
    assert rule.namespace_selector is None
    assert rule.poll_interval_seconds == 2
    assert rule.cooldown_seconds == 300  # the vendor's 5 min action cooldown
    assert rule.enforcement is Enforcement.REQUIRED
    assert rule.action_windows == ()
    assert rule.identity_labels is None
    assert [expression_meaning(expression) for expression in rule.conditions.expressions] == [
        (REFERENCE_QUERY, Operator.GT, ("80",), None)
    ]
    assert rule.conditions.needed == 1
    assert rule.conditions.for_seconds == 0
    assert rule.conditions.provider is ConditionProvider.PROMETHEUS
    (action,) = rule.actions
    assert action.name == "openstorage.io.action.volume/resize"
    assert action.params == VolumeResizeParams(scale_percentage=Fraction(100), max_bytes=1099511627776)
    assert action.params.max_bytes == TIB
    assert dict(action.raw_params) == {"scalepercentage": "100", "maxsize": "1Ti"}


def test_reference_rule_under_our_api_version_means_the_same() -> None:
    ours = only_rule(edit(REFERENCE, VENDOR_API_VERSION, API_VERSION))
    vendor = only_rule(REFERENCE)
    assert ours.api_version == API_VERSION
    assert meaning(replace(ours, api_version=VENDOR_API_VERSION)) == meaning(vendor)


# --- the shipped rules -------------------------------------------------------------------------

SHIPPED_TARGETS = {
    "kafka-leader-rebalance.yaml": ("kafka-leader-rebalance", TargetKind.BROKER),
    "kafka-node-failure.yaml": ("kafka-node-failure", TargetKind.NODE),
    "kafka-offline-partitions.yaml": ("kafka-offline-partitions", TargetKind.BROKER),
    "kafka-pool-expand.yaml": ("kafka-pool-expand", TargetKind.STORAGE_POOL),
    "kafka-resize.yaml": ("kafka-resize", TargetKind.PVC),
    "kafka-under-replicated.yaml": ("kafka-under-replicated", TargetKind.BROKER),
}


def test_every_shipped_rule_file_is_covered_here() -> None:
    assert sorted(path.name for path in RULES_DIR.glob("*.yaml")) == sorted(SHIPPED_TARGETS)


@pytest.mark.parametrize("filename", sorted(SHIPPED_TARGETS))
def test_shipped_rule_loads_without_problems(filename: str) -> None:
    path = RULES_DIR / filename
    result = parse_rules(path.read_text(encoding="utf-8"), file=str(path), catalog=CATALOG)
    assert [str(problem) for problem in result.problems] == []
    (rule,) = result.rules
    assert (rule.name, rule.target) == SHIPPED_TARGETS[filename]


KUBELET_RULES_DIR = RULES_DIR.parent / "rules-kubelet"


def test_the_kubelet_rules_load_and_merge_with_the_shipped_ones_but_the_reference_resize() -> None:
    """The chart's default set (rules.volumeMetrics: kubelet): rules/ without the Portworx resize, plus
    rules-kubelet/; every rule a PVC rule on kubelet_volume_stats_*, and no name used twice."""
    kubelet = [
        parse_rules(path.read_text(encoding="utf-8"), file=str(path), catalog=CATALOG)
        for path in sorted(KUBELET_RULES_DIR.glob("*.yaml"))
    ]
    assert [str(problem) for result in kubelet for problem in result.problems] == []
    rules = [rule for result in kubelet for rule in result.rules]
    assert sorted(rule.name for rule in rules) == ["kafka-inodes", "kafka-resize-kubelet"]
    for rule in rules:
        assert rule.target is TargetKind.PVC
        assert all("kubelet_volume_stats_" in expression.query for expression in rule.conditions.expressions)
    shipped = [
        parse_rules(path.read_text(encoding="utf-8"), file=str(path), catalog=CATALOG)
        for path in sorted(RULES_DIR.glob("*.yaml"))
        if path.name != "kafka-resize.yaml"
    ]
    assert merge_results([*shipped, *kubelet]).problems == ()


def test_shipped_rules_merge_without_duplicate_names() -> None:
    results = [
        parse_rules(path.read_text(encoding="utf-8"), file=str(path), catalog=CATALOG)
        for path in sorted(RULES_DIR.glob("*.yaml"))
    ]
    merged = merge_results(results)
    assert merged.problems == ()
    assert len(merged.rules) == len(SHIPPED_TARGETS)


def test_shipped_resize_rule_is_the_reference_rule() -> None:
    path = RULES_DIR / "kafka-resize.yaml"
    (shipped,) = parse_rules(path.read_text(encoding="utf-8"), file=FILE, catalog=CATALOG).rules
    assert meaning(shipped) == meaning(only_rule(REFERENCE))


# --- several documents, several files ----------------------------------------------------------

BAD_DOCUMENT = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: broken
spec:
  conditions:
    expressions:
      - key: up
        operator: Gt
        values: ["zero"]
  actions:
    - name: openstorage.io.action.volume/resize
"""


def test_bad_document_between_two_good_ones_loses_only_itself() -> None:
    second = edit(REFERENCE, "name: kafka-resize", "name: kafka-resize-2")
    text = REFERENCE + "---\n" + BAD_DOCUMENT + "---\n" + second
    result = load(text)

    assert [rule.name for rule in result.rules] == ["kafka-resize", "kafka-resize-2"]
    assert [rule.source.line for rule in result.rules] == [1, where(text, "apiVersion", nth=2)[0]]
    (problem,) = result.problems
    assert problem.rule == "broken"
    assert problem.field == "spec.conditions.expressions[0].values"
    assert (problem.location.line, problem.location.column) == where(text, '["zero"]')
    assert "'zero' is not a number" in problem.message


def test_duplicate_rule_name_across_files_keeps_the_first() -> None:
    first = load(REFERENCE, file="rules/a.yaml")
    second = load(edit(REFERENCE, '"100"', '"50"'), file="rules/b.yaml")
    merged = merge_results([first, second])

    (rule,) = merged.rules
    assert rule.source.file == "rules/a.yaml"
    assert rule.actions[0].params == VolumeResizeParams(scale_percentage=Fraction(100), max_bytes=TIB)
    (problem,) = merged.problems
    assert problem.location == Location(file="rules/b.yaml", line=1, column=1)
    assert (problem.rule, problem.field) == ("kafka-resize", "metadata.name")
    assert "rules/a.yaml:1:1" in problem.message
    assert str(problem).startswith("rules/b.yaml:1:1: kafka-resize: metadata.name: ")


def test_two_rule_files_in_one_folder_with_one_name_run_neither_and_name_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(REFERENCE)
    (tmp_path / "b.yaml").write_text("# the same rule again\n" + edit(REFERENCE, '"100"', '"50"'))

    rules, problems = load_rules([tmp_path])

    assert rules == []
    said = sorted(str(problem) for problem in problems)
    assert len(said) == 2
    assert all(f"{tmp_path}/a.yaml:1:1" in line and f"{tmp_path}/b.yaml:2:1" in line for line in said), said


def test_merge_keeps_each_files_problems() -> None:
    merged = merge_results([load(BAD_DOCUMENT, file="rules/bad.yaml"), load(REFERENCE, file="rules/ok.yaml")])
    assert [rule.name for rule in merged.rules] == ["kafka-resize"]
    assert [problem.location.file for problem in merged.problems] == ["rules/bad.yaml"]


# --- one error at a time: place, rule, field and message ---------------------------------------

Case = tuple[str, Callable[[], str], str, str, str, str]
"""id, text, needle (its first occurrence is where the problem is), rule, field, message fragment."""

EXPR = "spec.conditions.expressions[0]"
ACTION = "spec.actions[0]"


def _pool_expand_with_both_scales() -> str:
    text = edit(REFERENCE, "openstorage.io.action.volume/resize", "openstorage.io.action.storagepool/expand")
    return edit(text, '        maxsize: "1Ti"', '        maxsize: "1Ti"\n        scalesize: "100Gi"')


ERROR_CASES: list[Case] = [
    (
        "unknown field suggests pollInterval",
        lambda: edit(REFERENCE, "pollInterval:", "pollIntreval:"),
        "pollIntreval",
        "kafka-resize",
        "spec.pollIntreval",
        'unknown field "pollIntreval" (did you mean "pollInterval"?)',
    ),
    (
        "unknown param suggests scalepercentage",
        lambda: edit(REFERENCE, "scalepercentage:", "scalepercentag:"),
        "scalepercentag",
        "kafka-resize",
        f"{ACTION}.params.scalepercentag",
        'unknown field "scalepercentag" (did you mean "scalepercentage"?)',
    ),
    (
        "unknown action suggests the right one",
        lambda: edit(REFERENCE, "volume/resize", "volume/resise"),
        "openstorage.io.action.volume/resise",
        "kafka-resize",
        f"{ACTION}.name",
        'unknown action "openstorage.io.action.volume/resise" (did you mean "openstorage.io.action.volume/resize"?)',
    ),
    (
        "unknown operator suggests GtEq",
        lambda: edit(REFERENCE, "operator: Gt", "operator: Gteq"),
        "Gteq",
        "kafka-resize",
        f"{EXPR}.operator",
        '(did you mean "GtEq"?)',
    ),
    (
        "Gt with two values",
        lambda: edit(REFERENCE, '["80"]', '["80", "90"]'),
        '["80", "90"]',
        "kafka-resize",
        f"{EXPR}.values",
        "Gt takes exactly 1 value, got 2",
    ),
    (
        "InRange with one value",
        lambda: edit(REFERENCE, "operator: Gt", "operator: InRange"),
        '["80"]',
        "kafka-resize",
        f"{EXPR}.values",
        "InRange takes exactly 2 values, got 1",
    ),
    (
        "Exists with one value",
        lambda: edit(REFERENCE, "operator: Gt", "operator: Exists"),
        '["80"]',
        "kafka-resize",
        f"{EXPR}.values",
        "Exists takes no values, got 1",
    ),
    (
        "non-numeric value",
        lambda: edit(REFERENCE, '["80"]', '["80%"]'),
        '["80%"]',
        "kafka-resize",
        f"{EXPR}.values",
        "'80%' is not a number",
    ),
    (
        "keyAlias unknown, with suggestion",
        lambda: edit(REFERENCE, f'key: "{REFERENCE_QUERY}"', "keyAlias: PxVolumeUsagePercent"),
        "PxVolumeUsagePercent",
        "kafka-resize",
        f"{EXPR}.keyAlias",
        'unknown keyAlias "PxVolumeUsagePercent" (did you mean "PxVolumeUsagePercentage"?)',
    ),
    (
        "key and keyAlias both",
        lambda: edit(
            REFERENCE, "        operator: Gt", "        keyAlias: PxVolumeUsagePercentage\n        operator: Gt"
        ),
        "key:",
        "kafka-resize",
        f"{EXPR}.keyAlias",
        "give key or keyAlias, not both",
    ),
    (
        "missing conditions",
        lambda: upto(REFERENCE, "  conditions:") + "  actions:" + after(REFERENCE, "  actions:"),
        "selector:",
        "kafka-resize",
        "spec.conditions",
        'missing required field "conditions"',
    ),
    (
        "missing actions",
        lambda: upto(REFERENCE, "  actions:"),
        "selector:",
        "kafka-resize",
        "spec.actions",
        'missing required field "actions"',
    ),
    (
        "empty actions",
        lambda: upto(REFERENCE, "  actions:") + "  actions: []\n",
        "[]",
        "kafka-resize",
        "spec.actions",
        "needs at least one action",
    ),
    (
        "mixed target kinds in one rule",
        lambda: REFERENCE + "    - name: openstorage.io.action.storagepool/expand\n",
        "- name",
        "kafka-resize",
        "spec.actions",
        "actions of one rule must act on one kind of object",
    ),
    (
        "bad maxsize quantity",
        lambda: edit(REFERENCE, '"1Ti"', '"1TB"'),
        '"1TB"',
        "kafka-resize",
        f"{ACTION}.params.maxsize",
        "is not a valid quantity",
    ),
    (
        "zero maxsize",
        lambda: edit(REFERENCE, '"1Ti"', '"0"'),
        '"0"',
        "kafka-resize",
        f"{ACTION}.params.maxsize",
        "must be a size above 0",
    ),
    (
        "scalepercentage and scalesize both",
        _pool_expand_with_both_scales,
        "scalepercentage",
        "kafka-resize",
        f"{ACTION}.params",
        "give scalepercentage or scalesize, not both",
    ),
    (
        "enforcement unknown, with suggestion",
        lambda: REFERENCE + "  enforcement: dryrun\n",
        "dryrun",
        "kafka-resize",
        "spec.enforcement",
        'must be one of required, preferred, approvalRequired, dryRun (did you mean "dryRun"?)',
    ),
    (
        "bad duration",
        lambda: REFERENCE + "  actionsCoolDownPeriod: 5 minutes\n",
        "5 minutes",
        "kafka-resize",
        "spec.actionsCoolDownPeriod",
        "must be whole seconds or a duration like 5m, got '5 minutes'",
    ),
    (
        "pollInterval below one second",
        lambda: edit(REFERENCE, "pollInterval: 2", "pollInterval: 0"),
        "0\n  conditions",
        "kafka-resize",
        "spec.pollInterval",
        "must be at least 1s, got 0s",
    ),
    (
        "a list where a mapping is expected",
        lambda: edit(REFERENCE, "  selector:\n    matchLabels:\n      app: kafka", "  selector: [app, kafka]"),
        "[app, kafka]",
        "kafka-resize",
        "spec.selector",
        "must be a mapping, got a sequence",
    ),
    (
        "a mapping where a string is expected",
        lambda: edit(REFERENCE, "operator: Gt", "operator: {name: Gt}"),
        "{name: Gt}",
        "kafka-resize",
        f"{EXPR}.operator",
        "must be a string, got a mapping",
    ),
    (
        "a list where a string is expected",
        lambda: edit(REFERENCE, "app: kafka", "app: [kafka]"),
        "[kafka]",
        "kafka-resize",
        "spec.selector.matchLabels.app",
        "must be a string, got a sequence",
    ),
    (
        "wrong apiVersion",
        lambda: edit(REFERENCE, "/v1alpha1", "/v1beta1"),
        "autopilot.libopenstorage.org/v1beta1",
        "kafka-resize",
        "apiVersion",
        "unsupported apiVersion 'autopilot.libopenstorage.org/v1beta1'; "
        f'use {VENDOR_API_VERSION} or {API_VERSION} (did you mean "{VENDOR_API_VERSION}"?)',
    ),
    (
        "wrong kind",
        lambda: edit(REFERENCE, "kind: AutopilotRule", "kind: AutoPilotRules"),
        "AutoPilotRules",
        "kafka-resize",
        "kind",
        "kind must be AutopilotRule, got 'AutoPilotRules'",
    ),
    (
        "invalid metadata.name",
        lambda: edit(REFERENCE, "name: kafka-resize", "name: Kafka_Resize"),
        "Kafka_Resize",
        "Kafka_Resize",
        "metadata.name",
        "'Kafka_Resize' is not a valid name",
    ),
    (
        "requiredMatches larger than the expression count",
        lambda: edit(REFERENCE, "    expressions:", "    requiredMatches: 2\n    expressions:"),
        "2\n    expressions",
        "kafka-resize",
        "spec.conditions.requiredMatches",
        "is 2 but there are only 1 expressions",
    ),
    (
        "unknown kubernetes-provider condition key",
        lambda: edit(NODE_RULE, "key: NodeReady", "key: NodeReadyy"),
        "NodeReadyy",
        "node-down",
        f"{EXPR}.key",
        'unknown kubernetes condition "NodeReadyy"; known: NodeReady, NodeLeaseAgeSeconds, '
        'NodeUnreachableSeconds (did you mean "NodeReady"?)',
    ),
    (
        "kubernetes provider on a PVC rule",
        lambda: edit(
            NODE_RULE, "kafka-autopilot.io.action.node/cordon-reschedule", "openstorage.io.action.volume/resize"
        ),
        "kubernetes",
        "node-down",
        "spec.conditions.provider",
        "the kubernetes provider has conditions for Nodes only",
    ),
    (
        "unbalanced PromQL parentheses",
        lambda: edit(REFERENCE, "px_volume_capacity_bytes)", "px_volume_capacity_bytes"),
        '"100 *',
        "kafka-resize",
        f"{EXPR}.key",
        "unbalanced parentheses",
    ),
    (
        "label selector operator with suggestion",
        lambda: edit(
            REFERENCE,
            "      app: kafka\n",
            "      app: kafka\n    matchExpressions:\n"
            "      - key: tier\n        operator: Notin\n        values: [zk]\n",
        ),
        "Notin",
        "kafka-resize",
        "spec.selector.matchExpressions[0].operator",
        '(did you mean "NotIn"?)',
    ),
]


@pytest.mark.parametrize(
    ("text", "needle", "rule", "field", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in ERROR_CASES],
)
def test_error_is_reported_at_its_place(
    text: Callable[[], str], needle: str, rule: str, field: str, message: str
) -> None:
    source = text()
    result = load(source)

    assert result.rules == ()
    assert len(result.problems) == 1, [str(problem) for problem in result.problems]
    (problem,) = result.problems
    line, column = where(source, needle)
    assert problem.location == Location(file=FILE, line=line, column=column)
    assert (problem.rule, problem.field) == (rule, field)
    assert message in problem.message
    assert str(problem) == shape(problem) + problem.message


def test_problem_str_is_file_line_col_rule_field_message() -> None:
    (problem,) = load(edit(REFERENCE, "pollInterval:", "pollIntreval:")).problems
    assert str(problem) == (
        f'{FILE}:9:3: kafka-resize: spec.pollIntreval: unknown field "pollIntreval" (did you mean "pollInterval"?)'
    )


def test_invalid_yaml_is_reported_with_its_line() -> None:
    source = edit(REFERENCE, "pollInterval: 2", "pollInterval: a: 2")
    result = load(source)

    assert result.rules == ()
    (problem,) = result.problems
    line, column = where(source, ": 2")
    assert problem.location == Location(file=FILE, line=line, column=column)
    assert (problem.rule, problem.field) == ("", "")
    assert problem.message.startswith("invalid YAML: ")
    assert str(problem) == f"{FILE}:{line}:{column}: -: -: {problem.message}"


def test_every_error_of_a_document_is_reported_at_once() -> None:
    source = edit(REFERENCE, "pollInterval:", "pollIntreval:")
    source = edit(source, "operator: Gt", "operator: Gteq")
    source = edit(source, '"1Ti"', '"1TB"')
    result = load(source)

    assert result.rules == ()
    found = {(problem.location.line, problem.location.column, problem.field) for problem in result.problems}
    assert found == {
        (*where(source, "pollIntreval"), "spec.pollIntreval"),
        (*where(source, "Gteq"), f"{EXPR}.operator"),
        (*where(source, '"1TB"'), f"{ACTION}.params.maxsize"),
    }
    assert len(result.problems) == 3
    assert {problem.rule for problem in result.problems} == {"kafka-resize"}


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ('"5m"', 300),
        ('"1h30m"', 5400),
        ("90", 90),
        ('"90s"', 90),
        ('"2h"', 7200),
        ('"1m30s"', 90),
        ("0", 0),
    ],
)
def test_cooldown_duration(written: str, seconds: int) -> None:
    rule = only_rule(REFERENCE + f"  actionsCoolDownPeriod: {written}\n")
    assert rule.cooldown_seconds == seconds


@pytest.mark.parametrize(("written", "seconds"), [('"2m"', 120), ("30", 30), ('"1h"', 3600)])
def test_for_duration(written: str, seconds: int) -> None:
    rule = only_rule(edit(REFERENCE, "    expressions:", f"    for: {written}\n    expressions:"))
    assert rule.conditions.for_seconds == seconds


@pytest.mark.parametrize("written", ['"5 m"', '"1.5h"', "-5", "1.5", '"5M"', "true", '"m"', '"30m1h"', "null"])
def test_bad_duration_is_an_error(written: str) -> None:
    source = REFERENCE + f"  actionsCoolDownPeriod: {written}\n"
    result = load(source)
    assert result.rules == ()
    assert [problem.field for problem in result.problems] == ["spec.actionsCoolDownPeriod"]
    assert result.problems[0].location.line == where(source, "actionsCoolDownPeriod")[0]


# --- action windows and enforcement ------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "windows"),
    [
        (
            '  actionWindow:\n    start: "01:00"\n    end: "05:30"\n',
            (ActionWindow(start_minute=60, end_minute=330),),
        ),
        (
            '  actionWindow:\n    days: [Sat, Sunday]\n    start: "22:00"\n    end: "02:00"\n',
            (ActionWindow(days=frozenset({6, 7}), start_minute=22 * 60, end_minute=2 * 60),),
        ),
        (
            '  actionWindow:\n    - days: [mon]\n      start: "9:00"\n      end: "17:00"\n'
            '    - start: "00:00"\n      end: "24:00"\n',
            (
                ActionWindow(days=frozenset({1}), start_minute=9 * 60, end_minute=17 * 60),
                ActionWindow(start_minute=0, end_minute=24 * 60),
            ),
        ),
    ],
)
def test_action_window_parsing(yaml_text: str, windows: tuple[ActionWindow, ...]) -> None:
    assert only_rule(REFERENCE + yaml_text).action_windows == windows


MON, TUE, WED, SAT, SUN = 1, 2, 3, 6, 7


@pytest.mark.parametrize(
    ("days", "weekday", "clock", "inside"),
    [
        # Every day, 22:00 to 02:00 UTC.
        ("", MON, "21:59", False),
        ("", MON, "22:00", True),
        ("", MON, "23:59", True),
        ("", TUE, "00:00", True),
        ("", TUE, "01:59", True),
        ("", TUE, "02:00", False),
        ("", TUE, "12:00", False),
        # Monday night only: the hours after midnight belong to the night that started on Monday.
        ("    days: [Mon]\n", MON, "23:00", True),
        ("    days: [Mon]\n", TUE, "01:00", True),
        ("    days: [Mon]\n", MON, "01:00", False),
        ("    days: [Mon]\n", TUE, "23:00", False),
        # Sunday night runs into Monday morning; the week wraps.
        ("    days: [Sun]\n", MON, "01:00", True),
        ("    days: [Sun]\n", SUN, "01:00", False),
        ("    days: [Sat]\n", SUN, "01:30", True),
        ("    days: [Sat]\n", WED, "01:30", False),
    ],
)
def test_action_window_spanning_midnight(days: str, weekday: int, clock: str, inside: bool) -> None:
    rule = only_rule(REFERENCE + f'  actionWindow:\n{days}    start: "22:00"\n    end: "02:00"\n')
    hours, minutes = (int(part) for part in clock.split(":"))
    assert rule.in_action_window(weekday=weekday, minute_of_day=hours * 60 + minutes) is inside


@pytest.mark.parametrize(
    ("clock", "minute", "inside"),
    [("08:59", 539, False), ("09:00", 540, True), ("16:59", 1019, True), ("17:00", 1020, False)],
)
def test_action_window_same_day_is_half_open(clock: str, minute: int, inside: bool) -> None:
    rule = only_rule(REFERENCE + '  actionWindow:\n    start: "09:00"\n    end: "17:00"\n')
    assert rule.in_action_window(weekday=WED, minute_of_day=minute) is inside, clock


def test_no_action_window_means_always() -> None:
    rule = only_rule(REFERENCE)
    assert all(rule.in_action_window(weekday=day, minute_of_day=minute) for day in range(1, 8) for minute in (0, 719))


@pytest.mark.parametrize(
    ("yaml_text", "needle", "field"),
    [
        ('  actionWindow:\n    start: "25:00"\n    end: "02:00"\n', '"25:00"', "spec.actionWindow.start"),
        ('  actionWindow:\n    start: "22:00"\n    end: "24:30"\n', '"24:30"', "spec.actionWindow.end"),
        ('  actionWindow:\n    start: "22:60"\n    end: "23:00"\n', '"22:60"', "spec.actionWindow.start"),
        ('  actionWindow:\n    start: "22:00"\n', "start", "spec.actionWindow.end"),
        (
            '  actionWindow:\n    days: [Funday]\n    start: "1:00"\n    end: "2:00"\n',
            "Funday",
            "spec.actionWindow.days[0]",
        ),
    ],
)
def test_bad_action_window_is_an_error(yaml_text: str, needle: str, field: str) -> None:
    source = REFERENCE + yaml_text
    result = load(source)
    assert result.rules == ()
    (problem,) = result.problems
    assert problem.field == field
    assert (problem.location.line, problem.location.column) == where(source, needle)


@pytest.mark.parametrize(
    ("written", "enforcement", "approval_required", "dry_run"),
    [
        (None, Enforcement.REQUIRED, False, False),
        ("required", Enforcement.REQUIRED, False, False),
        ("preferred", Enforcement.PREFERRED, False, False),
        ("approvalRequired", Enforcement.APPROVAL_REQUIRED, True, False),
        ("dryRun", Enforcement.DRY_RUN, False, True),
    ],
)
def test_enforcement(written: str | None, enforcement: Enforcement, approval_required: bool, dry_run: bool) -> None:
    rule = only_rule(REFERENCE + (f"  enforcement: {written}\n" if written else ""))
    assert rule.enforcement is enforcement
    assert (rule.approval_required, rule.dry_run) == (approval_required, dry_run)


# --- more of the model -------------------------------------------------------------------------


def test_key_alias_expands_to_its_query() -> None:
    rule = only_rule(edit(REFERENCE, f'key: "{REFERENCE_QUERY}"', "keyAlias: PxVolumeUsagePercentage"))
    (expression,) = rule.conditions.expressions
    assert expression.query == REFERENCE_QUERY
    assert expression.alias == "PxVolumeUsagePercentage"
    assert expression.label == "PxVolumeUsagePercentage"


def test_identity_labels_override() -> None:
    rule = only_rule(REFERENCE + "  identityLabels:\n    - [namespace, claim_name]\n    - [pvc]\n")
    assert rule.identity_labels == (("namespace", "claim_name"), ("pvc",))


def test_unquoted_numbers_in_values_and_params_are_read_as_written() -> None:
    source = edit(REFERENCE, '["80"]', "[80]")
    source = edit(source, 'scalepercentage: "100"', "scalepercentage: 100")
    rule = only_rule(source)
    assert rule.conditions.expressions[0].values == ("80",)
    assert rule.actions[0].params == VolumeResizeParams(scale_percentage=Fraction(100), max_bytes=TIB)


# --- discrepancies found (bugs, reported and not fixed here) ----------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param(
            lambda: upto(REFERENCE, "    expressions:") + "    for: 5\n  actions:" + after(REFERENCE, "  actions:"),
            "spec.conditions.expressions",
            id="no expressions",
        ),
        pytest.param(lambda: edit(REFERENCE, "        operator: Gt\n", ""), f"{EXPR}.operator", id="no operator"),
        pytest.param(
            lambda: edit(REFERENCE, "    - name: openstorage.io.action.volume/resize\n      params:", "    - params:"),
            f"{ACTION}.name",
            id="no action name",
        ),
    ],
)
def test_missing_required_field_is_reported_not_raised(text: Callable[[], str], field: str) -> None:
    result = load(text())
    assert result.rules == ()
    assert field in [problem.field for problem in result.problems]


@pytest.mark.parametrize("tail", ["---\n", "---\n# nothing here yet\n"])
def test_empty_trailing_document_is_not_an_error(tail: str) -> None:
    result = load(REFERENCE + tail)
    assert [rule.name for rule in result.rules] == ["kafka-resize"]
    assert result.problems == ()


def test_syntax_error_in_a_later_document_keeps_the_earlier_ones() -> None:
    result = load(REFERENCE + "---\napiVersion: [\n")
    assert [rule.name for rule in result.rules] == ["kafka-resize"]
    assert len(result.problems) == 1


def test_key_alias_under_kubernetes_provider_is_an_error() -> None:
    result = load(edit(NODE_RULE, "key: NodeReady", "keyAlias: OfflinePartitions"))
    assert result.rules == ()
    assert [problem.field for problem in result.problems] == [f"{EXPR}.keyAlias"]


def test_duplicate_key_is_an_error() -> None:
    result = load(REFERENCE + "  pollInterval: 30\n")
    assert result.rules == ()
    assert [problem.field for problem in result.problems] == ["spec.pollInterval"]


@pytest.mark.parametrize("day", ["Monkey", "Sunshine"])
def test_non_weekday_with_a_weekday_prefix_is_an_error(day: str) -> None:
    result = load(REFERENCE + f'  actionWindow:\n    days: [{day}]\n    start: "1:00"\n    end: "2:00"\n')
    assert result.rules == ()
    assert [problem.field for problem in result.problems] == ["spec.actionWindow.days[0]"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param(
            lambda: REFERENCE + "  actionsCoolDownPeriod: [5m]\n", "spec.actionsCoolDownPeriod", id="cooldown"
        ),
        pytest.param(
            lambda: edit(REFERENCE, "    expressions:", "    for: {minutes: 5}\n    expressions:"),
            "spec.conditions.for",
            id="for",
        ),
        pytest.param(
            lambda: edit(REFERENCE, "    expressions:", "    requiredMatches: [1]\n    expressions:"),
            "spec.conditions.requiredMatches",
            id="requiredMatches",
        ),
        pytest.param(
            lambda: REFERENCE + '  actionWindow:\n    days: [{day: Mon}]\n    start: "1:00"\n    end: "2:00"\n',
            "spec.actionWindow.days[0]",
            id="day",
        ),
    ],
)
def test_non_scalar_where_a_scalar_is_expected_is_reported_not_raised(text: Callable[[], str], field: str) -> None:
    result = load(text())
    assert result.rules == ()
    assert field in [problem.field for problem in result.problems]
