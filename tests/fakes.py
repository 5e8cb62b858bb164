"""Test doubles shared by the unit tests."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A Clock whose time moves only when something sleeps or waits; every pause is recorded."""

    def __init__(self, *, now: float = 1_700_000_000.0) -> None:
        self._now = now
        self._monotonic = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._monotonic += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)

    async def wait(self, event: asyncio.Event, *, timeout: float) -> bool:
        if not event.is_set():
            await self.sleep(timeout)
        return event.is_set()
