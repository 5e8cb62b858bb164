"""The built-in actions, listed once. Everything that needs to know the actions gets them from here.

`CATALOG` (name -> pure spec) goes to the rule and policy loaders, the engine's policy checks, the
in-flight codec and the JSON Schemas (agent.core never imports an action); `build_executors` gives the
runtime one executor per action whose dependencies it has. Adding an action: a folder next to this
file (see docs/architecture.md, "Adding an action") and one line in `ACTIONS`.

The committed JSON Schemas are generated from the catalog (unit tests fail when they drift):

    python -m agent.actions.registry rule-schema > schema/autopilotrule.schema.json
    python -m agent.actions.registry policy-schema > schema/autopilotpolicy.schema.json
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from agent.actions import broker_restart, leader_rebalance, node_reschedule, pool_expand, volume_resize
from agent.actions.base import Action, Dependencies, Executor
from agent.actions.mutations import Applier
from agent.core.catalog import Catalog
from agent.core.policy_schema import render_policy_schema
from agent.core.schema import render_schema

ACTIONS: tuple[Action, ...] = (
    volume_resize.ACTION,
    pool_expand.ACTION,
    leader_rebalance.ACTION,
    node_reschedule.ACTION,
    broker_restart.ACTION,
)

CATALOG = Catalog(action.spec for action in ACTIONS)


def build_executors(*, dependencies: Dependencies, applier_for: Callable[[str], Applier]) -> dict[str, Executor]:
    """Action name -> executor on the applier `applier_for(name)` gives; an action whose factory lacks a
    dependency (or that has no executor yet) is left out, and the runtime holds it with "no executor"."""
    executors: dict[str, Executor] = {}
    for action in ACTIONS:
        executor = action.executor(dependencies, applier_for(action.spec.name))
        if executor is not None:
            executors[action.spec.name] = executor
    return executors


SCHEMAS: dict[str, Callable[[], str]] = {
    "rule-schema": lambda: render_schema(catalog=CATALOG),
    "policy-schema": lambda: render_policy_schema(catalog=CATALOG),
}


if __name__ == "__main__":
    if sys.argv[1:] not in ([name] for name in SCHEMAS):
        sys.exit(f"usage: python -m agent.actions.registry {{{','.join(SCHEMAS)}}}")
    print(SCHEMAS[sys.argv[1]](), end="")
