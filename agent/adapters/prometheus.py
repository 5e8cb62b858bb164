"""Ask a Prometheus server for instant vectors: the one way rule conditions reach metric data.

`range_query` (for `kafka-autopilot backtest`) asks for a window of history instead, in chunks small
enough for the server's 11,000-points-per-series limit.

Rule tests and the runtime both evaluate a condition as an instant query at an explicit time, so
the real Prometheus engine does all PromQL. This adapter hides HTTP and JSON from the core: it
returns `Sample`s, or raises `PrometheusQueryError` naming the server, the expression and what
failed, in Prometheus' own words where it gave any.

Retries: `query` (the agent's) tries a temporary failure again through `agent.adapters.retry`,
sleeping on the client's Clock; `instant_query` (blocking, for the rule tester, which has no event
loop) follows the same policy through `retrying_blocking`, pausing its thread.

Errors (`agent.adapters.errors`):

    PrometheusQueryError          .temporary: tried again a few times before it is raised
    ├── unreachable               temporary
    ├── HTTP 5xx, 429             temporary
    ├── timeout                   permanent (a query that slow will be as slow again)
    ├── HTTP 400 bad PromQL       permanent, carries the parser's message
    ├── HTTP 422 execution error  permanent (e.g. many-to-many matching)
    └── other HTTP, bad response  permanent
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from agent.adapters.clock import Clock
from agent.adapters.errors import PrometheusQueryError
from agent.adapters.retry import RetryPolicy, retrying, retrying_blocking
from agent.core.samples import InstantVector, RangeSeries, Sample

RANGE_CHUNK_STEPS = 1000
"""Evaluation steps per range request: well under Prometheus' 11,000 points per series, and small
enough that a long window shows its progress."""

DEFAULT_ATTEMPTS = 3
"""Tries per query when the failure is temporary (unreachable, 429, 5xx); a bad query is tried once."""


class _HttpStatusError(Exception):
    """A non-200 answer, raised from inside the HTTP session before the client library sees it."""

    def __init__(self, *, status: int, body: str):
        super().__init__(status)
        self.status = status
        self.body = body


def _raise_for_status(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if response.status_code != 200:
        raise _HttpStatusError(status=response.status_code, body=response.text)


class PrometheusClient:
    """Instant queries against one Prometheus server; safe to share between threads and tasks."""

    def __init__(
        self,
        *,
        url: str,
        headers: Mapping[str, str] | None = None,
        clock: Clock,
        timeout_seconds: float = 10.0,
        verify_tls: bool | str = True,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.attempts = max(1, attempts)
        self._clock = clock
        self._policy = RetryPolicy(attempts=self.attempts, base_seconds=0.2, max_seconds=2.0, jitter_seconds=0.2)
        session = requests.Session()
        session.verify = verify_tls
        # The library would report a non-200 answer only as text; this hook keeps status and body.
        session.hooks["response"].append(_raise_for_status)
        self._session = session
        self._connect = PrometheusConnect(
            url=self.url,
            headers=dict(headers) if headers else None,
            session=session,
            # Retries are ours (tenacity), so that a bad query is never repeated.
            retry=Retry(total=0, raise_on_status=False),
            timeout=timeout_seconds,
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def query(self, expr: str, *, at: float | None = None) -> InstantVector:
        """`instant_query`, each try in a worker thread (the event loop never waits on HTTP), the pauses
        between tries on the client's Clock."""
        try:
            async for attempt in retrying(self._policy, clock=self._clock):
                with attempt:
                    return await asyncio.to_thread(self._query_once, expr, at)
        except PrometheusQueryError as error:
            raise self._exhausted(error) from error.__cause__
        raise AssertionError("unreachable: tenacity returns or raises")

    def instant_query(self, expr: str, *, at: float | None = None) -> InstantVector:
        """The instant vector `expr` yields at `at` (Unix seconds; the server's now if None), blocking.

        A scalar result becomes one sample without labels. Series keep their `__name__` label. For
        callers without an event loop (the rule tester): the pauses between tries block the thread.
        """
        try:
            return retrying_blocking(self._policy)(self._query_once, expr, at)
        except PrometheusQueryError as error:
            raise self._exhausted(error) from error.__cause__

    def _exhausted(self, error: PrometheusQueryError) -> PrometheusQueryError:
        """A temporary error after the last try says how often it was tried; a permanent one is as it was."""
        if not error.temporary:
            return error
        return PrometheusQueryError(
            url=self.url,
            expr=error.expr,
            reason=f"{error.reason} (tried {self.attempts} times)",
            temporary=True,
            status=error.status,
        )

    def range_query(
        self,
        expr: str,
        *,
        start: int,
        end: int,
        step: int,
        on_chunk: Callable[[int], None] | None = None,
    ) -> tuple[RangeSeries, ...]:
        """`expr` evaluated at start, start + step, ... up to end (whole Unix seconds), blocking.

        Asked in chunks of `RANGE_CHUNK_STEPS` steps on the same grid; each chunk is tried again like an
        instant query, and `on_chunk` is told how many steps each chunk covered. A series' points from
        every chunk are joined into one `RangeSeries`.
        """
        if step <= 0 or end < start:
            raise ValueError(f"a range needs step > 0 and end >= start, got {start}..{end} step {step}")
        points: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        chunk_start = start
        while chunk_start <= end:
            chunk_end = min(end, chunk_start + (RANGE_CHUNK_STEPS - 1) * step)
            try:
                result = retrying_blocking(self._policy)(self._range_once, expr, chunk_start, chunk_end, step)
            except PrometheusQueryError as error:
                raise self._exhausted(error) from error.__cause__
            for labels, values in result:
                points.setdefault(tuple(sorted(labels.items())), []).extend(values)
            if on_chunk is not None:
                on_chunk((chunk_end - chunk_start) // step + 1)
            chunk_start = chunk_end + step
        return tuple(RangeSeries(labels=dict(labels), points=tuple(values)) for labels, values in points.items())

    def _range_once(
        self, expr: str, start: int, end: int, step: int
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        result = self._ask(
            expr,
            lambda: self._connect.custom_query_range(
                query=expr,
                start_time=datetime.fromtimestamp(start, UTC),
                end_time=datetime.fromtimestamp(end, UTC),
                step=str(step),
            ),
        )
        try:
            return [
                (
                    {str(k): str(v) for k, v in item["metric"].items()},
                    [(float(at), float(value)) for at, value in item["values"]],
                )
                for item in result
            ]
        except (ValueError, KeyError, TypeError, IndexError) as error:
            reason = f"`{expr}` gave a range result that is not a matrix: {result!r:.200}"
            raise self._error(expr, reason, False) from error

    def _query_once(self, expr: str, at: float | None) -> InstantVector:
        params = {} if at is None else {"time": f"{at:.3f}"}
        return self._samples(expr, self._ask(expr, lambda: self._connect.custom_query(query=expr, params=params)))

    def _ask(self, expr: str, request: Callable[[], Any]) -> Any:
        """The answer to one HTTP request about `expr`, or the PrometheusQueryError that says why not."""
        try:
            return request()
        except _HttpStatusError as answer:
            raise self._http_error(expr, answer) from None
        except requests.ConnectionError as error:
            raise self._error(expr, f"unreachable while querying `{expr}`: {_root_cause(error)}", True) from error
        except requests.Timeout as error:
            reason = f"no answer within {self.timeout_seconds:g}s to `{expr}`"
            raise self._error(expr, reason, False) from error
        except (requests.RequestException, ValueError, KeyError, TypeError) as error:
            raise self._error(expr, f"unexpected response to `{expr}`: {error!r}", False) from error

    def _samples(self, expr: str, result: Any) -> InstantVector:
        try:
            if isinstance(result, list) and all(isinstance(item, dict) for item in result):
                if any("values" in item for item in result):
                    reason = f"`{expr}` returns a range vector; a condition needs an instant vector or scalar"
                    raise self._error(expr, reason, False)
                # One object per distinct label value (job, namespace, node...), not one per series: at
                # 10,000 volumes a vector's labels take 40% less memory.
                shared: dict[str, str] = {}
                share = shared.setdefault
                return tuple(
                    Sample(
                        labels={
                            str(k): share(v, v) if isinstance(v, str) else str(v) for k, v in item["metric"].items()
                        },
                        value=float(item["value"][1]),
                    )
                    for item in result
                )
            _, value = result
            return (Sample(labels={}, value=float(value)),)
        except (ValueError, KeyError, TypeError, IndexError) as error:
            reason = f"`{expr}` gave a result that is neither a vector nor a scalar: {result!r:.200}"
            raise self._error(expr, reason, False) from error

    def _http_error(self, expr: str, answer: _HttpStatusError) -> PrometheusQueryError:
        error_type, message = _error_fields(answer.body)
        if answer.status == 400 and error_type == "bad_data":
            message = message.removeprefix('invalid parameter "query": ')
            reason = f"bad PromQL in `{expr}`: {message}"
        elif answer.status == 422:
            reason = f"query `{expr}` failed: {error_type}: {message}"
        else:
            detail = f"{error_type}: {message}" if error_type else message
            reason = f"HTTP {answer.status} for `{expr}`: {detail}"
        temporary = answer.status >= 500 or answer.status == 429
        return PrometheusQueryError(url=self.url, expr=expr, reason=reason, temporary=temporary, status=answer.status)

    def _error(self, expr: str, reason: str, temporary: bool) -> PrometheusQueryError:
        return PrometheusQueryError(url=self.url, expr=expr, reason=reason, temporary=temporary)


def _error_fields(body: str) -> tuple[str, str]:
    """Prometheus' `errorType` and `error` from an error body, or the body itself if not JSON."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and "error" in document:
        return str(document.get("errorType", "")), str(document["error"])
    return "", body.strip()[:300] or "(empty body)"


def _root_cause(error: BaseException) -> str:
    """The innermost reason of a connection error, e.g. `[Errno 111] Connection refused`."""
    text = str(error)
    match = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    return match.group().strip() if match else text
