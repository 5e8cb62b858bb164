"""What the core knows of a storage pool: its shape, and the ways it can grow.

A pool is N drives of one size, as in the OpenStorage SDK: it grows by adding drives of the existing
size (add-disk) or by growing every drive equally (resize-disk); auto lets the planner choose. The
inventory reads the shape (agent.adapters.storagepools), the matcher carries it on the target object,
and the pool expansion action (agent.actions.pool_expand) plans with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["PoolShape", "ScaleType"]


class ScaleType(StrEnum):
    ADD_DISK = "add-disk"
    RESIZE_DISK = "resize-disk"
    AUTO = "auto"


@dataclass(frozen=True, kw_only=True)
class PoolShape:
    """A storage pool of drive_count drives of drive_size_bytes each, total_bytes usable."""

    total_bytes: int
    drive_count: int
    drive_size_bytes: int
