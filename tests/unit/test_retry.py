"""The one retry helper: temporary errors again (with jitter, at least retry_after), permanent ones never,
and every pause on the given Clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from fakes import FakeClock

from agent.adapters.errors import AdapterError, KubeError, PrometheusQueryError
from agent.adapters.retry import RetryPolicy, backoff_seconds, is_temporary, retrying, retrying_blocking


def temporary(retry_after: float | None = None) -> AdapterError:
    return AdapterError("down", system="test", server="s", temporary=True, retry_after=retry_after)


def permanent() -> AdapterError:
    return AdapterError("refused", system="test", server="s", temporary=False)


async def call_through(
    policy: RetryPolicy, clock: FakeClock, failures: list[BaseException], draw: Callable[[], float] = random.random
) -> tuple[str, int]:
    """Fail with each of `failures` in turn, then answer "ok"; returns the answer and the number of calls."""
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return "ok"

    async for attempt in retrying(policy, clock=clock, draw=draw):
        with attempt:
            return await call(), calls
    raise AssertionError("unreachable")


def test_temporary_errors_are_tried_again_with_exponential_jittered_pauses_on_the_clock() -> None:
    clock = FakeClock()
    policy = RetryPolicy(attempts=5, base_seconds=1.0, max_seconds=3.0, jitter_seconds=0.5)
    draws = iter([0.0, 0.5, 1.0 - 1e-9])
    answer, calls = asyncio.run(
        call_through(policy, clock, [temporary(), temporary(), temporary()], lambda: next(draws))
    )
    assert (answer, calls) == ("ok", 4)
    assert clock.sleeps == pytest.approx([1.0, 2.25, 3.5])  # 1, 2, 4 capped at 3; plus jitter drawn 0, .5, ~1
    assert clock.monotonic() == pytest.approx(sum(clock.sleeps))


def test_jitter_spreads_the_pauses_of_replicas_that_failed_together() -> None:
    policy = RetryPolicy(attempts=2, base_seconds=1.0, max_seconds=1.0, jitter_seconds=1.0)
    pauses = set()
    for seed in range(5):
        clock = FakeClock()
        asyncio.run(call_through(policy, clock, [temporary()], random.Random(seed).random))
        (pause,) = clock.sleeps
        assert 1.0 <= pause < 2.0
        pauses.add(pause)
    assert len(pauses) == 5


def test_retry_after_is_a_lower_bound_on_the_pause() -> None:
    clock = FakeClock()
    policy = RetryPolicy(attempts=3, base_seconds=0.1, max_seconds=1.0, jitter_seconds=0.0)
    answer, calls = asyncio.run(call_through(policy, clock, [temporary(retry_after=7.0), temporary()]))
    assert (answer, calls) == ("ok", 3)
    assert clock.sleeps == [7.0, 0.2]


def test_a_permanent_error_is_raised_at_once_without_a_pause() -> None:
    clock = FakeClock()
    error = permanent()
    with pytest.raises(AdapterError) as raised:
        asyncio.run(call_through(RetryPolicy(attempts=5), clock, [error]))
    assert raised.value is error
    assert clock.sleeps == []


def test_other_exceptions_are_never_retried() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError):
        asyncio.run(call_through(RetryPolicy(attempts=5), clock, [ValueError("bug")]))
    assert clock.sleeps == []


def test_the_last_temporary_error_itself_is_raised_after_the_last_attempt() -> None:
    clock = FakeClock()
    last = temporary()
    with pytest.raises(AdapterError) as raised:
        asyncio.run(call_through(RetryPolicy(attempts=3, jitter_seconds=0.0), clock, [temporary(), temporary(), last]))
    assert raised.value is last
    assert len(clock.sleeps) == 2


def test_a_deadline_stops_on_the_clock() -> None:
    clock = FakeClock()
    policy = RetryPolicy(attempts=None, deadline_seconds=10.0, base_seconds=4.0, max_seconds=4.0, jitter_seconds=0.0)
    with pytest.raises(AdapterError):
        asyncio.run(call_through(policy, clock, [temporary() for _ in range(100)]))
    assert clock.sleeps == [4.0, 4.0, 4.0]  # tries at 0, 4, 8 and 12: past the deadline, no more
    assert clock.monotonic() == 12.0


def test_backoff_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_seconds=0.5, max_seconds=10.0, jitter_seconds=0.0)
    assert [backoff_seconds(policy, attempt=n, error=None, draw=0.0) for n in range(1, 7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
    ]
    assert backoff_seconds(policy, attempt=1, error=temporary(retry_after=3.0), draw=0.0) == 3.0


def test_every_adapter_error_says_temporary_the_same_way() -> None:
    kube = KubeError("x", server="s", verb="GET", resource="nodes", status=503, temporary=True, retry_after=2.0)
    query = PrometheusQueryError(url="u", expr="up", reason="bad PromQL", temporary=False, status=400)
    assert is_temporary(kube) and kube.retry_after == 2.0 and kube.system == "kube-apiserver"
    assert not is_temporary(query) and query.system == "prometheus"
    assert not is_temporary(RuntimeError("not an adapter error"))


def test_a_policy_without_attempts_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_the_blocking_variant_follows_the_same_policy() -> None:
    failures = [temporary(), permanent()]
    calls = 0

    def call() -> str:
        nonlocal calls
        calls += 1
        raise failures.pop(0)

    policy = RetryPolicy(attempts=3, base_seconds=0.0, max_seconds=0.0, jitter_seconds=0.0)
    with pytest.raises(AdapterError) as raised:
        retrying_blocking(policy)(call)
    assert not raised.value.temporary
    assert calls == 2  # the temporary error was tried again, the permanent one was not
