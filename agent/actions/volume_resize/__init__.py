"""Grow a PersistentVolumeClaim (openstorage.io.action.volume/resize).

`spec.py` says, purely, what the action is and how it is planned; `executor.py` carries it out.
"""

from agent.actions.base import Action
from agent.actions.volume_resize import executor, spec

ACTION = Action(spec=spec.SPEC, executor=executor.build_executor)
