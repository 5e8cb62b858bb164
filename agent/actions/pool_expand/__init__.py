"""Expand a storage pool (openstorage.io.action.storagepool/expand).

`spec.py` says, purely, what the action is and how it is planned; `executor.py` carries it out.
"""

from agent.actions.base import Action
from agent.actions.pool_expand import executor, spec

ACTION = Action(spec=spec.SPEC, executor=executor.build_executor)
