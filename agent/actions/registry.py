"""The built-in actions, listed once. Everything that needs to know the actions gets them from here.

`CATALOG` (name -> pure spec, from `agent.actions.specs`) goes to the rule and policy loaders, the
engine's policy checks, the in-flight codec and the JSON Schemas (agent.core never imports an action);
`build_executors` gives the runtime one executor per action whose dependencies it has. Adding an
action: a folder next to this file (see docs/architecture.md, "Adding an action"), its spec in
`agent.actions.specs` and its executor module here, at the same place in both lists.

The committed JSON Schemas are generated from the catalog (unit tests fail when they drift):

    python -m agent.actions.registry rule-schema > schema/autopilotrule.schema.json
    python -m agent.actions.registry policy-schema > schema/autopilotpolicy.schema.json
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from agent.actions.base import Action, Dependencies, Executor
from agent.actions.broker_restart import executor as broker_restart
from agent.actions.leader_rebalance import executor as leader_rebalance
from agent.actions.mutations import Applier
from agent.actions.node_reschedule import executor as node_reschedule
from agent.actions.pool_expand import executor as pool_expand
from agent.actions.specs import CATALOG
from agent.actions.volume_resize import executor as volume_resize
from agent.core.policy_schema import render_policy_schema
from agent.core.schema import render_schema

__all__ = ["ACTIONS", "CATALOG", "build_executors"]

ACTIONS: tuple[Action, ...] = tuple(
    Action(spec=spec, executor=executors.build_executor)
    for spec, executors in zip(
        CATALOG.values(),
        (volume_resize, pool_expand, leader_rebalance, node_reschedule, broker_restart),
        strict=True,
    )
)
"""Each spec of the catalog, in its order, with the factory of its executor."""


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
