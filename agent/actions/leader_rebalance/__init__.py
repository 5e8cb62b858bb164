"""Give a broker back the leadership it is preferred for (kafka-autopilot.io.action.kafka/rebalance-leaders).

`spec.py` says, purely, what the action is and how it is planned; `executor.py` carries it out.
"""

from agent.actions.base import Action
from agent.actions.leader_rebalance import executor, spec

ACTION = Action(spec=spec.SPEC, executor=executor.build_executor)
