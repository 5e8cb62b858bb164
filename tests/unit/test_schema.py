"""The JSON Schema for editors: the committed copy cannot drift, and it agrees with the loader.

`jsonschema` is not a dependency, so documents are checked here by a small validator that knows exactly
the keywords the schema uses and refuses any other: it can fail a test, never pass one by ignoring a
part of the schema. Each case below is also loaded by the real loader, so the two are compared on the
same text.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.actions.registry import CATALOG
from agent.core.aliases import KEY_ALIASES
from agent.core.loader import API_VERSIONS, KUBERNETES_CONDITION_KEYS, parse_rules
from agent.core.operators import Operator
from agent.core.rules import ConditionProvider, Enforcement, SelectorOperator
from agent.core.schema import JSON_SCHEMA_DRAFT, render_schema, rule_json_schema

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "schema" / "autopilotrule.schema.json"
RULE_FILES = sorted((ROOT / "rules").glob("*.yaml"))

# --- a validator for the keywords this schema uses ------------------------------------------------------

_ANNOTATIONS = {"$schema", "$defs", "title", "description", "default"}
_TYPES = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
}


def errors(instance: Any, schema: Any, *, root: Any, path: str = "") -> list[str]:
    """Every way `instance` fails `schema` (empty when it is valid)."""
    if schema is True:
        return []
    if schema is False:
        return [f"{path or '/'}: not allowed"]
    found: list[str] = []
    where = path or "/"
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS or keyword in ("then", "else"):
            continue
        if keyword == "$ref":
            assert value.startswith("#/$defs/"), value
            found += errors(instance, root["$defs"][value.removeprefix("#/$defs/")], root=root, path=path)
        elif keyword == "type":
            kinds = value if isinstance(value, list) else [value]
            if not any(_TYPES[kind](instance) for kind in kinds):
                found.append(f"{where}: {instance!r} is not of type {value}")
        elif keyword == "enum":
            if instance not in value:
                found.append(f"{where}: {instance!r} is not one of {value}")
        elif keyword == "const":
            if instance != value:
                found.append(f"{where}: {instance!r} is not {value!r}")
        elif keyword == "if":
            branch = "else" if errors(instance, value, root=root, path=path) else "then"
            if branch in schema:
                found += errors(instance, schema[branch], root=root, path=path)
        elif keyword in ("allOf", "anyOf", "oneOf", "not"):
            found += _combine(keyword, instance, value, root=root, path=path)
        elif isinstance(instance, dict) and keyword in ("properties", "required", "additionalProperties"):
            found += _object(keyword, instance, schema, root=root, path=path)
        elif isinstance(instance, list) and keyword in ("items", "minItems", "maxItems"):
            found += _array(keyword, instance, value, root=root, path=path)
        elif isinstance(instance, str) and keyword in ("pattern", "minLength", "maxLength"):
            ok = _string_holds(keyword, value, instance)
            if not ok:
                found.append(f"{where}: {instance!r} fails {keyword} {value!r}")
        elif _TYPES["number"](instance) and keyword in ("minimum", "exclusiveMinimum"):
            if instance < value or (keyword == "exclusiveMinimum" and instance == value):
                found.append(f"{where}: {instance!r} fails {keyword} {value!r}")
        elif keyword not in {
            "properties",
            "required",
            "additionalProperties",
            "items",
            "minItems",
            "maxItems",
            "pattern",
            "minLength",
            "maxLength",
            "minimum",
            "exclusiveMinimum",
        }:
            raise AssertionError(f"the test validator does not know the keyword {keyword!r}")
    return found


def _string_holds(keyword: str, value: Any, instance: str) -> bool:
    if keyword == "pattern":
        return re.search(value, instance) is not None
    return len(instance) >= value if keyword == "minLength" else len(instance) <= value


def _combine(keyword: str, instance: Any, value: Any, *, root: Any, path: str) -> list[str]:
    if keyword == "not":
        return [] if errors(instance, value, root=root, path=path) else [f"{path or '/'}: matches a `not`"]
    results = [errors(instance, branch, root=root, path=path) for branch in value]
    passed = sum(1 for result in results if not result)
    if keyword == "allOf":
        return [error for result in results for error in result]
    if keyword == "anyOf" and passed == 0:
        return [f"{path or '/'}: none of anyOf holds: {results}"]
    if keyword == "oneOf" and passed != 1:
        return [f"{path or '/'}: {passed} of oneOf hold, not exactly one"]
    return []


def _object(keyword: str, instance: dict[str, Any], schema: Any, *, root: Any, path: str) -> list[str]:
    properties = schema.get("properties", {})
    if keyword == "properties":
        return [
            error
            for name, sub in properties.items()
            if name in instance
            for error in errors(instance[name], sub, root=root, path=f"{path}/{name}")
        ]
    if keyword == "required":
        return [f"{path or '/'}: missing {name!r}" for name in schema["required"] if name not in instance]
    return [
        error
        for name, item in instance.items()
        if name not in properties
        for error in errors(item, schema["additionalProperties"], root=root, path=f"{path}/{name}")
    ]


def _array(keyword: str, instance: list[Any], value: Any, *, root: Any, path: str) -> list[str]:
    if keyword == "items":
        return [
            error
            for index, item in enumerate(instance)
            for error in errors(item, value, root=root, path=f"{path}/{index}")
        ]
    if (keyword == "minItems" and len(instance) < value) or (keyword == "maxItems" and len(instance) > value):
        return [f"{path or '/'}: {len(instance)} items fails {keyword} {value}"]
    return []


def schema_errors(document: Any) -> list[str]:
    schema = rule_json_schema(catalog=CATALOG)
    return errors(document, schema, root=schema)


def loader_errors(text: str) -> list[str]:
    return [str(problem) for problem in parse_rules(text, file="case.yaml", catalog=CATALOG).errors]


# --- the committed file ----------------------------------------------------------------------------------


def test_committed_schema_is_generated_output() -> None:
    assert COMMITTED.read_text() == render_schema(catalog=CATALOG), (
        "schema/autopilotrule.schema.json is stale: "
        "python -m agent.actions.registry rule-schema > schema/autopilotrule.schema.json"
    )


def test_rendering_is_pretty_sorted_and_ends_with_a_newline() -> None:
    text = render_schema(catalog=CATALOG)
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert json.loads(text)["$schema"] == JSON_SCHEMA_DRAFT == "https://json-schema.org/draft/2020-12/schema"


# --- built from the loader's sources of truth --------------------------------------------------------------


def test_every_catalog_action_and_param_is_described() -> None:
    schema = rule_json_schema(catalog=CATALOG)
    action = schema["$defs"]["action"]
    names = [choice["const"] for choice in action["properties"]["name"]["anyOf"]]
    assert names == list(CATALOG)
    by_name = {branch["if"]["properties"]["name"]["const"]: branch["then"] for branch in action["allOf"]}
    assert list(by_name) == list(CATALOG)
    for name, spec in CATALOG.items():
        params = by_name[name]["properties"]["params"]
        assert params["additionalProperties"] is False
        assert list(params["properties"]) == [param.name for param in spec.params]
        for param in spec.params:
            described = params["properties"][param.name]
            assert param.doc in described["description"]
            assert described.get("default") == param.default
            if param.choices:
                assert described["enum"] == list(param.choices)


def test_operators_aliases_and_enums_come_from_the_core() -> None:
    schema = rule_json_schema(catalog=CATALOG)
    expression = schema["$defs"]["expression"]["properties"]
    assert [choice["const"] for choice in expression["operator"]["anyOf"]] == [op.value for op in Operator]
    assert [choice["const"] for choice in expression["keyAlias"]["anyOf"]] == list(KEY_ALIASES)
    spec = schema["properties"]["spec"]["properties"]
    assert [choice["const"] for choice in spec["enforcement"]["anyOf"]] == [choice.value for choice in Enforcement]
    conditions = spec["conditions"]
    providers = conditions["properties"]["provider"]["anyOf"]
    assert [choice["const"] for choice in providers] == [choice.value for choice in ConditionProvider]
    keys = conditions["then"]["properties"]["expressions"]["items"]["properties"]["key"]["anyOf"]
    assert [choice["const"] for choice in keys] == list(KUBERNETES_CONDITION_KEYS)
    assert [choice["const"] for choice in schema["properties"]["apiVersion"]["anyOf"]] == list(API_VERSIONS)
    selector = schema["$defs"]["labelSelector"]["properties"]["matchExpressions"]["items"]
    assert selector["properties"]["operator"]["enum"] == [choice.value for choice in SelectorOperator]


# --- documents: the schema and the loader agree ---------------------------------------------------------------


@pytest.mark.parametrize("path", RULE_FILES, ids=[path.name for path in RULE_FILES])
def test_shipped_rules_validate(path: Path) -> None:
    text = path.read_text()
    assert loader_errors(text) == []
    documents = [document for document in yaml.safe_load_all(text) if document is not None]
    assert documents
    for document in documents:
        assert schema_errors(document) == []


GOOD = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: good
  labels: {team: storage}
spec:
  selector:
    matchLabels: {app: kafka}
    matchExpressions:
      - {key: tier, operator: In, values: [hot]}
      - {key: autopilot, operator: DoesNotExist}
  namespaceSelector:
    matchLabels: {env: prod}
  pollInterval: 1m
  actionsCoolDownPeriod: 600
  enforcement: dryRun
  weight: 2
  identityLabels: [[namespace, pvc], volume]
  actionWindow:
    - days: [Sat, sunday]
      start: "22:00"
      end: "24:00"
  conditions:
    for: 1h30m
    requiredMatches: 1
    expressions:
      - keyAlias: VolumeUsagePercentage
        operator: InRange
        values: ["80", 100]
      - key: "kubelet_volume_stats_available_bytes"
        operator: Lt
        values: ["10Gi"]
  actions:
    - name: openstorage.io.action.volume/resize
      params:
        scalepercentage: "50%"
        maxsize: 2Ti
        minstep: "10Gi"
"""

NODE_RULE = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: node
spec:
  conditions:
    provider: kubernetes
    expressions:
      - key: NodeReady
        operator: Lt
        values: ["1"]
  actions:
    - name: kafka-autopilot.io.action.node/cordon-reschedule
      params:
        grace: 40
        mode: out-of-service-taint
        deletevolumeattachments: "false"
"""


@pytest.mark.parametrize("text", [GOOD, NODE_RULE], ids=["every-extension", "kubernetes-provider"])
def test_valid_documents_pass_both(text: str) -> None:
    assert loader_errors(text) == []
    assert schema_errors(yaml.safe_load(text)) == []


BAD = [
    ("unknown top-level field", GOOD, "kind: AutopilotRule", "kind: AutopilotRule\nstatus: {}"),
    ("unknown apiVersion", GOOD, "kafka-autopilot.io/v1alpha1", "kafka-autopilot.io/v1"),
    ("wrong kind", GOOD, "kind: AutopilotRule", "kind: Rule"),
    ("bad name", GOOD, "name: good", "name: Good_Rule"),
    ("unknown metadata field", GOOD, "  labels:", "  uid: x\n  labels:"),
    ("unknown spec field", GOOD, "  weight: 2", "  weight: 2\n  priority: 1"),
    ("unknown selector operator", GOOD, "operator: DoesNotExist}", "operator: Absent}"),
    ("In without values", GOOD, "{key: tier, operator: In, values: [hot]}", "{key: tier, operator: In}"),
    ("Exists with values", GOOD, "operator: DoesNotExist}", "operator: DoesNotExist, values: [x]}"),
    ("bad duration", GOOD, "pollInterval: 1m", "pollInterval: 1min"),
    ("pollInterval 0", GOOD, "pollInterval: 1m", "pollInterval: 0"),
    ("bad enforcement", GOOD, "enforcement: dryRun", "enforcement: dryrun"),
    ("bad weekday", GOOD, "[Sat, sunday]", "[Sat, Funday]"),
    ("truncated weekday", GOOD, "[Sat, sunday]", "[Sat, sund]"),
    ("bad clock", GOOD, 'end: "24:00"', 'end: "24:30"'),
    ("unknown conditions field", GOOD, "    for: 1h30m", "    for: 1h30m\n    every: 5m"),
    ("bad condition type", GOOD, "    for: 1h30m", "    for: 1h30m\n    type: alerting"),
    (
        "no expressions",
        NODE_RULE,
        '      - key: NodeReady\n        operator: Lt\n        values: ["1"]\n',
        "      []\n",
    ),
    ("unknown keyAlias", GOOD, "keyAlias: VolumeUsagePercentage", "keyAlias: VolumeUsage"),
    (
        "key and keyAlias",
        GOOD,
        "keyAlias: VolumeUsagePercentage",
        "keyAlias: VolumeUsagePercentage\n        key: up",
    ),
    ("unknown operator", GOOD, "operator: Lt", "operator: LessThan"),
    ("Lt with two values", GOOD, 'values: ["10Gi"]', 'values: ["1", "2"]'),
    ("InRange with one value", GOOD, 'values: ["80", 100]', 'values: ["80"]'),
    ("non-numeric threshold", GOOD, 'values: ["10Gi"]', 'values: ["ten"]'),
    ("unknown action", GOOD, "volume/resize", "volume/grow"),
    ("unknown action param", GOOD, '        minstep: "10Gi"', '        minstep: "10Gi"\n        step: "1Gi"'),
    ("bad size", GOOD, "maxsize: 2Ti", "maxsize: 2TB"),
    ("unquoted boolean param", NODE_RULE, 'deletevolumeattachments: "false"', "deletevolumeattachments: false"),
    ("bad choice param", NODE_RULE, "mode: out-of-service-taint", "mode: drain"),
    ("bad seconds param", NODE_RULE, "grace: 40", "grace: 40s"),
    ("unknown kubernetes key", NODE_RULE, "key: NodeReady", "key: NodeDiskPressure"),
    (
        "kubernetes provider on PVCs",
        NODE_RULE,
        "    - name: kafka-autopilot.io.action.node/cordon-reschedule\n      params:\n        grace: 40\n"
        '        mode: out-of-service-taint\n        deletevolumeattachments: "false"\n',
        "    - name: openstorage.io.action.volume/resize\n",
    ),
    (
        "actions on two kinds",
        NODE_RULE,
        "  actions:\n",
        "  actions:\n    - name: kafka-autopilot.io.action.broker/restart\n",
    ),
]


@pytest.mark.parametrize(("base", "old", "new"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_invalid_documents_fail_both(base: str, old: str, new: str) -> None:
    assert base.count(old) == 1, f"the case's anchor {old!r} must occur once"
    text = base.replace(old, new)
    assert loader_errors(text), "the loader accepts it"
    assert schema_errors(yaml.safe_load(text)), "the schema accepts it"


def test_validator_rejects_what_it_does_not_know() -> None:
    with pytest.raises(AssertionError, match="does not know"):
        errors(1, {"multipleOf": 2}, root={})
    assert errors(math.inf, {"type": "number", "minimum": 0}, root={}) == []
