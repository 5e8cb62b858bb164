"""A JSON Schema (draft 2020-12) of AutopilotRule documents, so editors can complete and check rules as they are typed.

The loader (agent.core.loader) stays the authority: it reports problems with file:line:column and checks
what a schema cannot express. The schema is built from the loader's own sources, so that adding an
action, a parameter, an operator or an alias changes both at once:

    API versions and kind       agent.core.loader.API_VERSIONS, agent.core.rules.RULE_KIND
    actions and their params    the catalog given, agent.actions.registry.CATALOG (ParamSpec: type, doc, ...)
    operators, value counts     agent.core.operators.Operator, value_count
    keyAlias                    agent.core.aliases.KEY_ALIASES
    kubernetes condition keys   agent.core.loader.KUBERNETES_CONDITION_KEYS
    enforcement, provider       agent.core.rules.Enforcement, ConditionProvider
    names, durations, weekdays  the loader's own patterns; quantities from agent.core.quantity's suffixes

Every mapping the loader checks for unknown fields has `additionalProperties: false`.

Only the loader checks: requiredMatches <= the number of expressions; InRange's low <= high; balanced
parentheses in PromQL; a percentage or size above zero when written as a string; a duration of at least
1s for pollInterval when written as a string; and the cross-field checks of an action's params (e.g.
pool expansion's scalepercentage and scalesize together, brokerlabel's key=value form).

The committed copy is regenerated from the registry of actions with

    python -m agent.actions.registry rule-schema > schema/autopilotrule.schema.json

and a unit test fails when it differs from `rule_json_schema(catalog=CATALOG)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, assert_never

from agent.core.aliases import KEY_ALIASES
from agent.core.catalog import ActionSpec, Catalog, ParamSpec, ParamType
from agent.core.loader import (
    _DNS_SUBDOMAIN,
    _DURATION,
    _WEEKDAYS,
    API_VERSIONS,
    KUBERNETES_CONDITION_KEYS,
)
from agent.core.operators import Operator, value_count
from agent.core.quantity import _BINARY_SUFFIXES, _DECIMAL_SUFFIXES
from agent.core.rules import (
    DEFAULT_COOLDOWN_SECONDS,
    DEFAULT_POLL_INTERVAL_SECONDS,
    RULE_KIND,
    ConditionProvider,
    Enforcement,
    SelectorOperator,
    TargetKind,
)

__all__ = ["JSON_SCHEMA_DRAFT", "render_schema", "rule_json_schema"]

JsonObject = dict[str, Any]

JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"

_SUFFIXES = sorted((*_BINARY_SUFFIXES, *(suffix for suffix in _DECIMAL_SUFFIXES if suffix)), key=lambda s: (-len(s), s))
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_SUFFIX = "(?:" + "|".join(re.escape(suffix) for suffix in _SUFFIXES) + r"|[eE][+-]?[0-9]+)?"
QUANTITY_PATTERN = f"^[+-]?{_NUMBER}{_SUFFIX}$"
"""A Kubernetes quantity, as agent.core.quantity reads it: "80", "0.5", "1e3", "400Gi", "500m"."""
_POSITIVE_QUANTITY = f"^[+]?{_NUMBER}{_SUFFIX}$"
_PERCENTAGE = f"^[+]?{_NUMBER}{_SUFFIX}%?$"
_CLOCK = "^(?:(?:[01]?[0-9]|2[0-3]):[0-5][0-9]|24:00)$"
_WEEKDAY = "^(?:" + "|".join("".join(f"[{c.upper()}{c}]" for c in day) for day in _WEEKDAYS) + ")$"
_BOOLEAN = "^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"


def rule_json_schema(*, catalog: Catalog) -> JsonObject:
    """The JSON Schema of one AutopilotRule document (a multi-document file is checked document by document)."""
    return {
        "$schema": JSON_SCHEMA_DRAFT,
        "title": RULE_KIND,
        "description": "A kafka-autopilot rule: when PromQL (or Kubernetes node) conditions hold for the "
        "objects it selects, take its actions. The vendor's "
        f"{API_VERSIONS[0]} rules are accepted unchanged; our extensions work under either apiVersion.",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": _choices(
                API_VERSIONS,
                "The vendor's API version, or ours.",
                {API_VERSIONS[0]: "The vendor's Autopilot format.", API_VERSIONS[1]: "kafka-autopilot's own."},
            ),
            "kind": {"const": RULE_KIND, "description": f"Always {RULE_KIND}."},
            "metadata": _metadata(),
            "spec": _spec(catalog),
        },
        "$defs": {
            "labelSelector": _label_selector(),
            "expression": _expression(),
            "action": _action(catalog),
            "actionWindow": _action_window(),
        },
    }


def render_schema(*, catalog: Catalog) -> str:
    """The schema as committed: pretty, keys sorted, with a trailing newline."""
    return json.dumps(rule_json_schema(catalog=catalog), indent=2, sort_keys=True) + "\n"


# --- building blocks ---------------------------------------------------------------------------------------


def _choices(values: Iterable[str], description: str, docs: dict[str, str] | None = None) -> JsonObject:
    """One of fixed strings; each documented on its own when `docs` says something about it."""
    docs = docs or {}
    return {
        "description": description,
        "anyOf": [{"const": value, **({"description": docs[value]} if value in docs else {})} for value in values],
    }


def _duration(description: str, *, minimum: int, default: int | None = None) -> JsonObject:
    schema: JsonObject = {
        "description": f"{description} Whole seconds, or a duration such as 90s, 5m or 1h30m.",
        "anyOf": [
            {"type": "integer", "minimum": minimum},
            {"type": "string", "minLength": 1, "pattern": _DURATION.pattern},
        ],
    }
    if default is not None:
        schema["default"] = default
    return schema


def _metadata() -> JsonObject:
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "description": "Standard Kubernetes metadata; only these fields are read.",
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {
                "description": "The rule's name: a DNS subdomain (lowercase letters, digits, '-' and '.'), "
                "unique across all rule files.",
                "type": "string",
                "maxLength": 253,
                "pattern": _DNS_SUBDOMAIN.pattern,
            },
            "namespace": {"type": "string"},
            "labels": string_map,
            "annotations": string_map,
        },
    }


def _spec(catalog: Catalog) -> JsonObject:
    node_actions = [spec.name for spec in catalog.values() if spec.target is TargetKind.NODE]
    targets: dict[TargetKind, list[str]] = {}
    for spec in catalog.values():
        targets.setdefault(spec.target, []).append(spec.name)
    return {
        "description": "What the rule selects, when it fires and what it does.",
        "type": "object",
        "additionalProperties": False,
        "required": ["conditions", "actions"],
        "properties": {
            "selector": {
                "$ref": "#/$defs/labelSelector",
                "description": "Which objects of the actions' kind the rule watches (by their labels); "
                "empty or absent selects them all.",
            },
            "namespaceSelector": {
                "$ref": "#/$defs/labelSelector",
                "description": "Only objects in namespaces whose labels match.",
            },
            "conditions": _conditions(),
            "actions": {
                "description": "What to do, in order, for each object whose conditions hold. All actions of "
                "a rule act on one kind of object, which is what the rule selects.",
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/action"},
            },
            "pollInterval": _duration(
                "How often the conditions are evaluated (at least 1s).",
                minimum=1,
                default=DEFAULT_POLL_INTERVAL_SECONDS,
            ),
            "actionsCoolDownPeriod": _duration(
                "After actions were taken on an object, how long to wait before acting on it again.",
                minimum=0,
                default=DEFAULT_COOLDOWN_SECONDS,
            ),
            "enforcement": {
                **_choices(
                    [choice.value for choice in Enforcement],
                    "How the actions are carried out.",
                    {
                        Enforcement.REQUIRED.value: "Act as soon as the conditions call for it.",
                        Enforcement.PREFERRED.value: "The vendor's value; acts like required.",
                        Enforcement.APPROVAL_REQUIRED.value: "Plan the actions, then wait for an approval.",
                        Enforcement.DRY_RUN.value: "Plan and record the actions, never carry them out (our extension).",
                    },
                ),
                "default": Enforcement.REQUIRED.value,
            },
            "actionWindow": {
                "description": "Actions may start only inside one of these UTC windows (our extension).",
                "anyOf": [
                    {"$ref": "#/$defs/actionWindow"},
                    {"type": "array", "items": {"$ref": "#/$defs/actionWindow"}},
                ],
            },
            "weight": {"description": "The vendor's rule weight; read but not used.", "type": "number"},
            "brokerIdentity": {
                "description": "How a pod's Kafka broker id is read, when not only from the hosts Kafka's brokers "
                "advertise: a label or an annotation whose value is the id, or an offset added to the "
                "StatefulSet pod index (apps.kubernetes.io/pod-index). Kafka still has the last word: an id "
                "it contradicts is unknown (our extension).",
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {
                    "label": {"type": "string", "minLength": 1},
                    "annotation": {"type": "string", "minLength": 1},
                    "ordinalOffset": {"type": "integer", "minimum": 0},
                },
            },
            "identityLabels": {
                "description": "The labels that name an object in the conditions' series, replacing the "
                "defaults of the target kind: alternatives in order of preference, each a label or a list "
                'of labels, e.g. [["namespace", "pvc"], ["volume"]] (our extension).',
                "type": "array",
                "minItems": 1,
                "items": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    ]
                },
            },
        },
        "allOf": [
            {
                "description": "The actions of one rule act on one kind of object.",
                "anyOf": [
                    {"properties": {"actions": {"items": {"properties": {"name": {"enum": names}}}}}}
                    for names in targets.values()
                ],
            },
            {
                "description": "The kubernetes provider has conditions for Nodes only.",
                "if": {
                    "properties": {
                        "conditions": {
                            "properties": {"provider": {"const": ConditionProvider.KUBERNETES.value}},
                            "required": ["provider"],
                        }
                    },
                    "required": ["conditions"],
                },
                "then": {"properties": {"actions": {"items": {"properties": {"name": {"enum": node_actions}}}}}},
            },
        ],
    }


def _label_selector() -> JsonObject:
    label_value = {"type": ["string", "number"]}
    with_values = [SelectorOperator.IN.value, SelectorOperator.NOT_IN.value]
    return {
        "description": "A Kubernetes label selector: every matchLabels pair and every expression must hold.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": label_value},
            "matchExpressions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string"},
                        "operator": {"enum": [operator.value for operator in SelectorOperator]},
                        "values": {"type": "array", "items": label_value},
                    },
                    "if": {"properties": {"operator": {"enum": with_values}}, "required": ["operator"]},
                    "then": {"required": ["values"], "properties": {"values": {"minItems": 1}}},
                    "else": {"properties": {"values": {"maxItems": 0}}},
                },
            },
        },
    }


def _conditions() -> JsonObject:
    providers = {
        ConditionProvider.PROMETHEUS.value: "PromQL expressions, one instant query per distinct expression "
        "per cycle, joined to the objects by their identity labels.",
        ConditionProvider.KUBERNETES.value: "Node state from the Kubernetes watch cache; keys: "
        + ", ".join(KUBERNETES_CONDITION_KEYS)
        + ".",
    }
    return {
        "description": "When the rule fires for an object.",
        "type": "object",
        "additionalProperties": False,
        "required": ["expressions"],
        "properties": {
            "expressions": {
                "description": "The conditions, each tested against the object's sample.",
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/expression"},
            },
            "requiredMatches": {
                "description": "How many expressions must hold; 0 or absent means all of them.",
                "type": "integer",
                "minimum": 0,
                "default": 0,
            },
            "for": _duration(
                "How long the conditions must keep holding before the actions are taken.", minimum=0, default=0
            ),
            "type": {"description": "The only condition type.", "const": "monitoring"},
            "provider": {
                **_choices(
                    [choice.value for choice in ConditionProvider], "Where condition values come from.", providers
                ),
                "default": ConditionProvider.PROMETHEUS.value,
            },
        },
        "if": {
            "properties": {"provider": {"const": ConditionProvider.KUBERNETES.value}},
            "required": ["provider"],
        },
        "then": {
            "properties": {
                "expressions": {
                    "items": {
                        "properties": {
                            "key": _choices(
                                KUBERNETES_CONDITION_KEYS,
                                "A condition key of the kubernetes provider.",
                                dict(KUBERNETES_CONDITION_KEYS),
                            )
                        }
                    }
                }
            }
        },
    }


def _expression() -> JsonObject:
    operator_docs = {operator.value: f"takes {value_count(operator).describe()}" for operator in Operator}
    per_operator = []
    for operator in Operator:
        count = value_count(operator)
        values: JsonObject = {}
        then: JsonObject = {"properties": {"values": values}}
        if count.minimum > 0:
            values["minItems"] = count.minimum
            then["required"] = ["values"]
        if count.maximum is not None:
            values["maxItems"] = count.maximum
        per_operator.append(
            {
                "if": {"properties": {"operator": {"const": operator.value}}, "required": ["operator"]},
                "then": then,
            }
        )
    return {
        "description": "One condition: a PromQL expression (key, or a named keyAlias) and its test.",
        "type": "object",
        "additionalProperties": False,
        "required": ["operator"],
        "properties": {
            "key": {
                "description": "A PromQL expression whose series carry the target's identity labels "
                "(or, with provider kubernetes, a node condition key).",
                "type": "string",
                "pattern": r"\S",
            },
            "keyAlias": _choices(
                KEY_ALIASES,
                "A named PromQL expression (our extension), instead of key.",
                {alias: f"Expands to: {query}" for alias, query in KEY_ALIASES.items()},
            ),
            "operator": _choices(
                [operator.value for operator in Operator], "How the sample is compared with values.", operator_docs
            ),
            "values": {
                "description": "Thresholds: numbers or Kubernetes quantities such as 80, 0.5, 1e3 or 400Gi.",
                "type": "array",
                "items": {"anyOf": [{"type": "string", "pattern": QUANTITY_PATTERN}, {"type": "number"}]},
            },
        },
        "oneOf": [{"required": ["key"]}, {"required": ["keyAlias"]}],
        "allOf": per_operator,
    }


def _param(spec: ParamSpec) -> JsonObject:
    schema: JsonObject
    match spec.type:
        case ParamType.PERCENTAGE:
            schema = {
                "anyOf": [
                    {"type": "string", "pattern": _PERCENTAGE},
                    {"type": "number", "exclusiveMinimum": 0},
                ]
            }
        case ParamType.BYTES:
            schema = {
                "anyOf": [
                    {"type": "string", "pattern": _POSITIVE_QUANTITY},
                    {"type": "number", "exclusiveMinimum": 0},
                ]
            }
        case ParamType.COUNT:
            schema = {
                "anyOf": [{"type": "string", "pattern": "^[0-9]*[1-9][0-9]*$"}, {"type": "integer", "minimum": 1}]
            }
        case ParamType.SECONDS:
            schema = {"anyOf": [{"type": "string", "pattern": "^[0-9]+$"}, {"type": "integer", "minimum": 0}]}
        case ParamType.BOOLEAN:
            schema = {"type": "string", "pattern": _BOOLEAN}
        case ParamType.CHOICE:
            schema = {"enum": list(spec.choices)}
        case ParamType.TEXT:
            schema = {"type": "string"}
        case _:
            assert_never(spec.type)
    kind = f"one of {', '.join(spec.choices)}" if spec.type is ParamType.CHOICE else str(spec.type)
    schema["description"] = f"{spec.doc} Type: {kind}."
    if spec.default is not None:
        schema["default"] = spec.default
    return schema


def _params(spec: ActionSpec) -> JsonObject:
    return {
        "description": f"Parameters of {spec.name}.",
        "type": "object",
        "additionalProperties": False,
        "properties": {param.name: _param(param) for param in spec.params},
    }


def _action(catalog: Catalog) -> JsonObject:
    specs: Sequence[ActionSpec] = list(catalog.values())
    return {
        "description": "One action of the catalog, with its parameters.",
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": _choices(
                [spec.name for spec in specs],
                "The action.",
                {spec.name: f"{spec.doc} Acts on: {spec.target}." for spec in specs},
            ),
            "params": {"type": "object", "description": "The action's parameters; values are strings."},
        },
        "allOf": [
            {
                "if": {"properties": {"name": {"const": spec.name}}, "required": ["name"]},
                "then": {"properties": {"params": _params(spec)}},
            }
            for spec in specs
        ],
    }


def _action_window() -> JsonObject:
    return {
        "description": "A UTC time window; end before start spans midnight.",
        "type": "object",
        "additionalProperties": False,
        "required": ["start", "end"],
        "properties": {
            "days": {
                "description": "Weekdays such as Mon or Saturday; empty or absent means every day.",
                "type": "array",
                "items": {"type": "string", "pattern": _WEEKDAY},
            },
            "start": {"description": 'UTC time "HH:MM".', "type": "string", "pattern": _CLOCK},
            "end": {"description": 'UTC time "HH:MM"; "24:00" is midnight.', "type": "string", "pattern": _CLOCK},
        },
    }
