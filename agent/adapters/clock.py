"""The one way time reaches the agent: every reading of the clock, sleep and timeout goes through a Clock.

Why: the shell (rule loops, action runner, executors, retries, leader election) waits a lot, and its
tests must not. Production code is given `WallClock`; tests give a fake that moves time on command,
so a 5-minute verify timeout or a cooldown costs no wall time. Nothing else in `agent/` calls
`time.time`, `time.monotonic`, `asyncio.sleep`, `asyncio.wait_for` or `asyncio.timeout` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall time, as stored in the API and the audit trail)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps, for measuring how long something took or has left."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, *, timeout: float) -> bool:
        """Wait until `event` is set (True) or `timeout` seconds pass (False)."""
        ...

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        """`async with clock.timeout(s):` cancels the block and raises TimeoutError after `s` seconds."""
        ...


class WallClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, *, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=timeout)
        return event.is_set()

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(seconds)
