"""The built-in actions' pure specs, and their catalog (`CATALOG`): all the rule and policy loaders, the
engine and the JSON Schemas need of an action.

It exists apart from `agent.actions.registry` (which pairs each spec with its executor) so that the
pure users (`kafka-autopilot lint`, `test`, `explain`, the core's benchmark) load no executor, nor the
Kubernetes and HTTP clients the executors bring. The registry's actions are these specs, in this order
(a unit test checks it).
"""

from __future__ import annotations

from agent.actions.broker_restart import spec as broker_restart
from agent.actions.leader_rebalance import spec as leader_rebalance
from agent.actions.node_reschedule import spec as node_reschedule
from agent.actions.pool_expand import spec as pool_expand
from agent.actions.volume_resize import spec as volume_resize
from agent.core.catalog import Catalog

CATALOG = Catalog(
    [volume_resize.SPEC, pool_expand.SPEC, leader_rebalance.SPEC, node_reschedule.SPEC, broker_restart.SPEC]
)
