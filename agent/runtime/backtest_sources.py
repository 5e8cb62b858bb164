"""Where `kafka-autopilot backtest` gets what it replays, besides Prometheus: the cluster's objects, and
a progress bar on stderr for long windows.

Objects are listed once, as the agent's inventory lists them (`agent.runtime.inventory.Inventory`), for
each target kind the rules have. Without Kafka a broker's id is known only as the rule states it, so a
broker rule's actions on other brokers show as held (IdentityUnknown); give `--objects` with broker ids
instead. Storage pools need the storage API, which a backtest does not ask: give them in `--objects`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from agent.adapters.clock import WallClock
from agent.adapters.kubernetes.client import connect
from agent.adapters.prometheus import PrometheusClient
from agent.core.matching import TargetObject
from agent.core.rules import Rule, TargetKind
from agent.runtime.inventory import Inventory


async def cluster_objects(kubeconfig: Path | None, rules: Sequence[Rule]) -> list[TargetObject]:
    """The cluster's objects of every target kind the rules have, but storage pools (see the docstring)."""
    clock = WallClock()
    unused = PrometheusClient(url="http://unused.invalid", clock=clock)  # the inventory lists, never queries
    found: dict[str, TargetObject] = {}
    async with await connect(kubeconfig=kubeconfig, clock=clock) as kube:
        inventory = Inventory(cluster=kube, prometheus=unused)
        listed: set[TargetKind] = set()
        for rule in rules:
            # Broker objects depend on the rule (its selector, its stated identity): listed per rule.
            already = rule.target in listed and rule.target is not TargetKind.BROKER
            if rule.target is TargetKind.STORAGE_POOL or already:
                continue
            listed.add(rule.target)
            for obj in await inventory.objects(rule):
                found.setdefault(obj.key, obj)
    unused.close()
    return list(found.values())


@dataclass
class ProgressBar:
    """`[#####.....] 50% (1440/2880 steps)` on one line of a terminal, redrawn in place; silent elsewhere."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    width: int = 30
    shown: bool = False

    def show(self, done: int, total: int) -> None:
        if not self.stream.isatty() or total <= 0:
            return
        filled = self.width * done // total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {100 * done // total:3d}% ({done}/{total} steps)")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
