"""The SRE documentation keeps up with the code: docs/rule-authoring.md names every field, operator,
alias, action and parameter the loader knows, and its rule examples load; docs/operations.md and
docs/architecture.md exist and name what they must.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.actions.registry import CATALOG
from agent.cli import build_parser
from agent.core.aliases import KEY_ALIASES
from agent.core.loader import KUBERNETES_CONDITION_KEYS, parse_rules
from agent.core.operators import Operator
from agent.core.policy import _SPEC_FIELDS as POLICY_FIELDS
from agent.core.policy import parse_policies
from agent.core.rules import Enforcement, SelectorOperator
from agent.core.states import RuleState

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
AUTHORING = (DOCS / "rule-authoring.md").read_text()
OPERATIONS = (DOCS / "operations.md").read_text()
CHART_README = (REPO / "helm" / "kafka-autopilot" / "README.md").read_text()
SPEC_FIELDS = (
    "selector",
    "namespaceSelector",
    "conditions",
    "actions",
    "pollInterval",
    "actionsCoolDownPeriod",
    "enforcement",
    "actionWindow",
    "weight",
    "identityLabels",
)
CONDITION_FIELDS = ("expressions", "requiredMatches", "for", "provider", "type", "key", "keyAlias", "values")


def test_every_spec_and_condition_field_is_documented() -> None:
    for name in (*SPEC_FIELDS, *CONDITION_FIELDS):
        assert f"`{name}`" in AUTHORING or f"`spec.{name}`" in AUTHORING, name


def test_every_operator_alias_and_kubernetes_key_is_documented_with_an_example() -> None:
    for operator in Operator:
        assert re.search(rf"operator: {operator.value}[,}}]", AUTHORING), f"no example of {operator.value}"
    for alias in KEY_ALIASES:
        assert f"keyAlias: {alias}," in AUTHORING, f"no example of keyAlias {alias}"
    for key in KUBERNETES_CONDITION_KEYS:
        assert f"`{key}`" in AUTHORING, key
    for value in [*Enforcement, *SelectorOperator]:
        assert f"`{value.value}`" in AUTHORING, value.value


def test_every_action_and_parameter_is_documented_with_an_example() -> None:
    for name, spec in CATALOG.items():
        section = AUTHORING.split(f"### {name} ", 1)
        assert len(section) == 2, f"no section for action {name}"
        body = section[1].split("\n### ", 1)[0]
        assert f"- name: {name}" in body, f"no example for {name}"
        for param in spec.params:
            assert f"`{param.name}`" in body, f"{name}: parameter {param.name} not documented"


def rule_examples() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", AUTHORING, flags=re.DOTALL)
    return [block for block in blocks if "kind: AutopilotRule" in block]


@pytest.mark.parametrize("example", rule_examples())
def test_the_rule_examples_load_without_problems(example: str) -> None:
    result = parse_rules(example, file="docs/rule-authoring.md", catalog=CATALOG)
    assert result.rules and not result.problems, result.problems


def test_the_fragments_are_valid_yaml() -> None:
    for block in re.findall(r"```yaml\n(.*?)```", AUTHORING, flags=re.DOTALL):
        yaml.safe_load(block)


@pytest.mark.parametrize(
    ("page", "musts"),
    [
        ("operations.md", ["helm install", "helm upgrade", "dryRun", "approve", "decline", "--policy", "/rules"]),
        ("operations.md", ["AutopilotRuleObject", "kafka_autopilot_rule_healthy", "leader", "Events"]),
        ("architecture.md", ["agent/core", "agent/adapters", "agent/actions", "agent/runtime", "Applier"]),
    ],
)
def test_the_operations_and_architecture_pages_cover_their_subjects(page: str, musts: list[str]) -> None:
    text = (DOCS / page).read_text()
    missing = [must for must in musts if must not in text]
    assert not missing, f"docs/{page} does not mention {missing}"


def cli_commands() -> dict[str, set[str]]:
    """Each `kafka-autopilot` command -> its long options."""
    (subparsers,) = [a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    commands = {}
    for name, parser in subparsers.choices.items():  # type: ignore[attr-defined]
        options = {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")}
        commands[name] = options
    return commands


def test_every_flag_the_docs_name_exists() -> None:
    """A `--flag` in the docs or the chart's README is an option of some `kafka-autopilot` command
    (or of helm/kubectl, listed here), so renamed or removed flags do not linger in the docs."""
    known = set().union(*cli_commands().values())
    others = {"--namespace", "--create-namespace", "--set", "--set-file", "--reuse-values", "--values"}
    others |= {"--field-selector", "--format", "--timeline", "--aliases", "--no-promql", "--all", "--json"}
    for name, text in [*((p.name, p.read_text()) for p in DOCS.glob("*.md")), ("chart README", CHART_README)]:
        named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", text))
        stale = sorted(named - known - others)
        assert not stale, f"{name} names flags no command has: {stale}"


@pytest.mark.parametrize("page", ["strimzi.md", "bitnami.md", "cloud-volumes.md"])
def test_the_rules_and_policies_the_guides_show_load_without_problems(page: str) -> None:
    """Every AutopilotRule and AutopilotPolicy shown whole in a guide is one the agent takes as it is."""
    blocks = re.findall(r"```yaml\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)
    documents = [block for block in blocks if re.search(r"^kind: Autopilot(Rule|Policy)$", block, flags=re.M)]
    assert documents, f"{page} shows no rule or policy"
    for block in documents:
        rules = parse_rules(block, file=page, catalog=CATALOG)
        policies = parse_policies(block, file=page, catalog=CATALOG)
        assert [str(problem) for problem in (*rules.problems, *policies.problems)] == []
        assert len(rules.rules) + len(policies.policies) == 1


def test_every_run_and_approval_flag_is_documented() -> None:
    commands = cli_commands()
    documented = OPERATIONS + CHART_README
    for command in ("run", "approve", "decline", "approvals"):
        missing = sorted(flag for flag in commands[command] - {"--help"} if flag not in documented)
        assert not missing, f"`kafka-autopilot {command}` flags no page documents: {missing}"
    for command in ("approvals", "approve", "decline", "lint", "test"):
        assert f"kafka-autopilot {command}" in OPERATIONS + AUTHORING, command


def test_every_state_policy_field_and_exit_code_is_documented() -> None:
    for state in RuleState:
        assert f"`{state.value}`" in AUTHORING, f"rule-authoring.md lacks the state {state.value}"
    for field in POLICY_FIELDS:
        assert f"`{field}`" in OPERATIONS, f"operations.md lacks the policy field {field}"
    exits = OPERATIONS.split("## Exit codes", 1)[1]
    for code in ("0", "1", "2", "70", "75"):
        assert f"| {code} |" in exits, f"operations.md lacks exit code {code}"
    assert "75 lost leadership" in build_parser().format_help().replace("\n", " ")


def test_no_file_in_the_checkout_keeps_a_merge_conflict_marker() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.md", "*.py", "*.yaml", "*.sh", "Makefile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    marker = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)
    conflicted = [name for name in tracked if marker.search((REPO / name).read_text(errors="replace"))]
    assert tracked and conflicted == []
