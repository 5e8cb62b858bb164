"""The shape of metric data as the core sees it: one instant vector per expression per cycle.

A backtest reads a window of history at once: one range series per series of a range query, from
which it takes the instant vector at each step (`vector_at`).

Adapters turn whatever a query endpoint returns into these; the core never sees HTTP or JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True, slots=True)
class Sample:
    """One series of an instant vector: its labels and its value at the query time. Slotted: a cycle
    holds one per series of every query (70,000 at 10,000 volumes)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    value: float

    @property
    def has_data(self) -> bool:
        """NaN and infinities are not data: the agent never acts on them."""
        return math.isfinite(self.value)


InstantVector = tuple[Sample, ...]


@dataclass(frozen=True, kw_only=True)
class RangeSeries:
    """One series of a range query: its labels and its value at each evaluation time (Unix seconds)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    points: tuple[tuple[float, float], ...] = ()


def vectors_by_time(series: Iterable[RangeSeries]) -> dict[float, InstantVector]:
    """The instant vector at each time the series have a point: what an instant query there returns."""
    found: dict[float, list[Sample]] = {}
    for one in series:
        for at, value in one.points:
            found.setdefault(at, []).append(Sample(labels=one.labels, value=value))
    return {at: tuple(samples) for at, samples in found.items()}
