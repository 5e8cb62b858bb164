"""Executor for `kafka-autopilot.io.action.broker/restart`: none yet.

The factory builds nothing, so the runtime finds no executor for the action and holds it with "no
executor for ... in this agent yet": rules may name it and see it planned, and nothing is restarted.
"""

from __future__ import annotations

from agent.actions.base import Dependencies
from agent.actions.mutations import Applier


def build_executor(dependencies: Dependencies, applier: Applier) -> None:
    return None
