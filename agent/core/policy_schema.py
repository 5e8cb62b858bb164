"""A JSON Schema (draft 2020-12) of AutopilotPolicy documents, for editors, built like the rule schema.

The policy loader (agent.core.policy) stays the authority and reports problems at file:line:column; the
schema only helps while typing. Its parts come from the same sources as the loader's checks: action names
from the catalog given (agent.actions.registry.CATALOG), durations, weekdays and clock times from the rule
schema's building blocks.

Only the loader checks: a namespace both allowed and denied, and a duration of at least 1s when written
as a string.

The committed copy is regenerated from the registry of actions with

    python -m agent.actions.registry policy-schema > schema/autopilotpolicy.schema.json

and a unit test fails when it differs from `policy_json_schema(catalog=CATALOG)`.
"""

from __future__ import annotations

import json

from agent.core.catalog import Catalog
from agent.core.rules import API_VERSION, POLICY_KIND
from agent.core.schema import JSON_SCHEMA_DRAFT, JsonObject, _action_window, _choices, _duration, _metadata

__all__ = ["policy_json_schema", "render_policy_schema"]


def policy_json_schema(*, catalog: Catalog) -> JsonObject:
    """The JSON Schema of one AutopilotPolicy document."""
    return {
        "$schema": JSON_SCHEMA_DRAFT,
        "title": POLICY_KIND,
        "description": "A kafka-autopilot guardrail policy: limits that apply to every rule's actions "
        "(kafka-autopilot run --policy FILE).",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"const": API_VERSION, "description": f"Always {API_VERSION}."},
            "kind": {"const": POLICY_KIND, "description": f"Always {POLICY_KIND}."},
            "metadata": _metadata(),
            "spec": _spec(),
        },
        "$defs": {
            "actionNames": _action_names(catalog),
            "rateLimit": _rate_limit(),
            "actionWindow": _action_window(),
            "namespaces": {"type": "array", "items": {"type": "string"}},
        },
    }


def render_policy_schema(*, catalog: Catalog) -> str:
    """The schema as committed: pretty, keys sorted, with a trailing newline."""
    return json.dumps(policy_json_schema(catalog=catalog), indent=2, sort_keys=True) + "\n"


def _count(description: str, *, minimum: int) -> JsonObject:
    return {"description": description, "type": "integer", "minimum": minimum}


def _action_names(catalog: Catalog) -> JsonObject:
    specs = list(catalog.values())
    return {
        "type": "array",
        "items": _choices([spec.name for spec in specs], "An action of the catalog.", {s.name: s.doc for s in specs}),
    }


def _rate_limit() -> JsonObject:
    return {
        "description": "At most `count` actions started within any `period`.",
        "type": "object",
        "additionalProperties": False,
        "required": ["count", "period"],
        "properties": {
            "count": _count("How many actions may start within the period.", minimum=1),
            "period": _duration("The sliding period the actions are counted over.", minimum=1),
        },
    }


def _spec() -> JsonObject:
    return {
        "description": "The guardrails; every field is optional and an empty spec allows everything.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "dryRun": {
                "description": "Plan and record every action, apply none.",
                "type": "boolean",
                "default": False,
            },
            "dryRunActions": {
                "$ref": "#/$defs/actionNames",
                "description": "Only these actions are recorded instead of applied.",
            },
            "approvalRequired": {
                "$ref": "#/$defs/actionNames",
                "description": "A rule with one of these actions waits for an approval before acting.",
            },
            "maxConcurrentActions": _count("Actions in flight at once, all rules together.", minimum=1),
            "rateLimits": {
                "description": "Limits on how many actions start within a period.",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "perObject": {"$ref": "#/$defs/rateLimit", "description": "On one object, by any rule."},
                    "perRule": {"$ref": "#/$defs/rateLimit", "description": "By one rule, on any of its objects."},
                    "overall": {"$ref": "#/$defs/rateLimit", "description": "By all rules together."},
                },
            },
            "namespaces": {
                "description": "Objects outside these namespaces are not acted on (nodes have none and always are).",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "allow": {"$ref": "#/$defs/namespaces", "description": "Absent or empty: every namespace."},
                    "deny": {"$ref": "#/$defs/namespaces", "description": "Wins over allow."},
                },
            },
            "actionWindow": {
                "description": "Actions may start only inside one of these UTC windows, on top of the rules' own.",
                "anyOf": [
                    {"$ref": "#/$defs/actionWindow"},
                    {"type": "array", "items": {"$ref": "#/$defs/actionWindow"}},
                ],
            },
            "maxCordonedNodes": _count("A node action waits while this many other nodes are cordoned.", minimum=0),
            "minResizeInterval": _duration("The least time between two resizes of one volume.", minimum=1),
        },
    }
