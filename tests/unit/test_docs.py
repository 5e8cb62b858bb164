"""The SRE documentation keeps up with the code: docs/rule-authoring.md names every field, operator,
alias, action and parameter the loader knows, and its rule examples load; docs/operations.md and
docs/architecture.md exist and name what they must.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agent.core import catalog
from agent.core.aliases import KEY_ALIASES
from agent.core.loader import KUBERNETES_CONDITION_KEYS, parse_rules
from agent.core.operators import Operator
from agent.core.rules import Enforcement, SelectorOperator

DOCS = Path(__file__).resolve().parents[2] / "docs"
AUTHORING = (DOCS / "rule-authoring.md").read_text()
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
    for name, spec in catalog.ACTIONS.items():
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
    result = parse_rules(example, file="docs/rule-authoring.md")
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
