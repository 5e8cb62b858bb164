"""The one way an adapter tries a call again: tenacity, with jittered exponential backoff, through the Clock.

Why this module exists: every adapter meets the same transient failures (a server restarting,
throttling, a connection reset), and each used to write its own loop. Here is the one policy:
retry only an `AdapterError` whose `temporary` is True, never a permanent one (a bad query, a 403);
wait `base * 2**(n-1)` seconds capped at `max` plus up to `jitter` seconds at random (so replicas
that failed together do not come back together), and at least the server's `retry_after`; stop
after `attempts` tries or once `deadline` seconds have passed, whichever comes first, and raise the
last error itself. Sleeps go through the given `Clock`, so tests spend no wall time.

    async for attempt in retrying(QUERY_RETRY, clock=clock):
        with attempt:
            return await call()

Build one `retrying(...)` per operation: its deadline counts from the moment it is built.
`retrying_blocking` is the same policy (by attempts) for blocking code without an event loop (the
rule tester's Prometheus queries): there the pauses block the calling thread.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from agent.adapters.clock import Clock
from agent.adapters.errors import AdapterError

__all__ = ["RetryPolicy", "backoff_seconds", "is_temporary", "retrying", "retrying_blocking"]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently to try again. `attempts` None: no limit by count;
    `deadline_seconds` None: no limit by time (with neither, it tries until it succeeds)."""

    attempts: int | None = 3
    deadline_seconds: float | None = None
    base_seconds: float = 0.2
    max_seconds: float = 2.0
    jitter_seconds: float = 0.2

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if min(self.base_seconds, self.max_seconds, self.jitter_seconds) < 0:
            raise ValueError("backoff and jitter must not be negative")


def is_temporary(error: BaseException) -> bool:
    """The one test for "may retry"."""
    return isinstance(error, AdapterError) and error.temporary


def backoff_seconds(policy: RetryPolicy, *, attempt: int, error: BaseException | None, draw: float) -> float:
    """The pause after failed try number `attempt` (1, 2, ...), with `draw` in [0, 1) choosing the jitter."""
    exponential = policy.base_seconds * 2.0 ** max(0, min(attempt - 1, 30))
    delay = min(policy.max_seconds, exponential) + policy.jitter_seconds * draw
    if isinstance(error, AdapterError) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay


def retrying(
    policy: RetryPolicy,
    *,
    clock: Clock,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    draw: Callable[[], float] = random.random,
    retry_on: Callable[[BaseException], bool] = is_temporary,
) -> AsyncRetrying:
    """A tenacity AsyncRetrying for `policy` that sleeps with `sleep` (default `clock.sleep`) and
    re-raises the last error when it gives up. `retry_on`: which errors are tried again (the temporary
    ones, unless the caller knows better: a watch refused for good is tried again on a long pause)."""
    started = clock.monotonic()

    def stop(state: RetryCallState) -> bool:
        if policy.attempts is not None and state.attempt_number >= policy.attempts:
            return True
        return policy.deadline_seconds is not None and clock.monotonic() - started >= policy.deadline_seconds

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return backoff_seconds(policy, attempt=state.attempt_number, error=error, draw=draw())

    return AsyncRetrying(
        sleep=sleep or clock.sleep,
        stop=stop,
        wait=wait,
        retry=retry_if_exception(retry_on),
        reraise=True,
    )


def retrying_blocking(policy: RetryPolicy, *, draw: Callable[[], float] = random.random) -> Retrying:
    """The same policy for blocking code (no Clock, no event loop): tries `policy.attempts` times
    (once when None), pausing the calling thread between tries."""

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return backoff_seconds(policy, attempt=state.attempt_number, error=error, draw=draw())

    return Retrying(
        stop=stop_after_attempt(policy.attempts or 1),
        wait=wait,
        retry=retry_if_exception(is_temporary),
        reraise=True,
    )
