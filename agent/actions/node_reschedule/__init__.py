"""Move Kafka brokers off a failed node (kafka-autopilot.io.action.node/cordon-reschedule).

`spec.py` says, purely, what the action is and how it is planned; `executor.py` carries it out.
"""

from agent.actions.base import Action
from agent.actions.node_reschedule import executor, spec

ACTION = Action(spec=spec.SPEC, executor=executor.build_executor)
