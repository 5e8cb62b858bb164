"""Restart a broker (kafka-autopilot.io.action.broker/restart): planned, not executed yet.

`spec.py` says, purely, what the action is and how it is planned; `executor.py` carries it out.
"""

from agent.actions.base import Action
from agent.actions.broker_restart import executor, spec

ACTION = Action(spec=spec.SPEC, executor=executor.build_executor)
