"""The shape of metric data as the core sees it: one instant vector per expression per cycle.

Adapters turn whatever a query endpoint returns into these; the core never sees HTTP or JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One series of an instant vector: its labels and its value at the query time."""

    labels: Mapping[str, str] = field(default_factory=dict)
    value: float

    @property
    def has_data(self) -> bool:
        """NaN and infinities are not data: the agent never acts on them."""
        return math.isfinite(self.value)


InstantVector = tuple[Sample, ...]
