"""Reading the agent's /metrics text in tests: the sum of a metric's samples whose labels include the
given ones. Every series exists at 0 from load, so a test that an event was counted asks for more than 0,
never only for the series' presence."""

from __future__ import annotations

import re

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_total(text: str, name: str, /, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        found = SAMPLE.match(line)
        if found is None or found["name"] != name:
            continue
        pairs = dict(LABEL.findall(found["labels"] or ""))
        if all(pairs.get(key) == value for key, value in labels.items()):
            total += float(found["value"])
    return total
