"""Ask a Prometheus server for instant vectors: the one way rule conditions reach metric data.

Rule tests and the runtime both evaluate a condition as an instant query at an explicit time, so
the real Prometheus engine does all PromQL. This adapter hides HTTP and JSON from the core: it
returns `Sample`s, or raises `PrometheusQueryError` naming the server, the expression and what
failed, in Prometheus' own words where it gave any.

Errors:

    PrometheusQueryError          .transient: retried a few times before it is raised
    ├── unreachable, timeout      transient
    ├── HTTP 5xx                  transient
    ├── HTTP 400 bad PromQL       permanent, carries the parser's message
    ├── HTTP 422 execution error  permanent (e.g. many-to-many matching)
    └── other HTTP, bad response  permanent
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential
from urllib3.util.retry import Retry

from agent.core.samples import InstantVector, Sample

DEFAULT_ATTEMPTS = 3
"""Tries per query when the failure is transient (unreachable, 5xx); a bad query is tried once."""


class PrometheusQueryError(Exception):
    """An instant query failed; the message names the server URL, the expression and the cause."""

    def __init__(self, *, url: str, expr: str, reason: str, transient: bool, status: int | None = None):
        super().__init__(f"prometheus {url}: {reason}")
        self.url = url
        self.expr = expr
        self.reason = reason
        self.transient = transient
        self.status = status


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
        timeout_seconds: float = 10.0,
        verify_tls: bool | str = True,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.attempts = max(1, attempts)
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
        """`instant_query` in a worker thread, so the event loop never waits on HTTP."""
        return await asyncio.to_thread(self.instant_query, expr, at=at)

    def instant_query(self, expr: str, *, at: float | None = None) -> InstantVector:
        """The instant vector `expr` yields at `at` (Unix seconds; the server's now if None).

        A scalar result becomes one sample without labels. Series keep their `__name__` label.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception(lambda error: isinstance(error, PrometheusQueryError) and error.transient),
        )
        try:
            return retrying(self._query_once, expr, at)
        except RetryError as exhausted:
            last = exhausted.last_attempt.exception()
            assert isinstance(last, PrometheusQueryError)
            raise PrometheusQueryError(
                url=self.url,
                expr=expr,
                reason=f"{last.reason} (tried {self.attempts} times)",
                transient=True,
                status=last.status,
            ) from last.__cause__

    def _query_once(self, expr: str, at: float | None) -> InstantVector:
        params = {} if at is None else {"time": f"{at:.3f}"}
        try:
            result = self._connect.custom_query(query=expr, params=params)
        except _HttpStatusError as answer:
            raise self._http_error(expr, answer) from None
        except requests.ConnectionError as error:
            raise self._error(expr, f"unreachable while querying `{expr}`: {_root_cause(error)}", True) from error
        except requests.Timeout as error:
            reason = f"no answer within {self.timeout_seconds:g}s to `{expr}`"
            raise self._error(expr, reason, False) from error
        except (requests.RequestException, ValueError, KeyError, TypeError) as error:
            raise self._error(expr, f"unexpected response to `{expr}`: {error!r}", False) from error
        return self._samples(expr, result)

    def _samples(self, expr: str, result: Any) -> InstantVector:
        try:
            if isinstance(result, list) and all(isinstance(item, dict) for item in result):
                if any("values" in item for item in result):
                    reason = f"`{expr}` returns a range vector; a condition needs an instant vector or scalar"
                    raise self._error(expr, reason, False)
                return tuple(
                    Sample(
                        labels={str(k): str(v) for k, v in item["metric"].items()},
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
        transient = answer.status >= 500 or answer.status == 429
        return PrometheusQueryError(url=self.url, expr=expr, reason=reason, transient=transient, status=answer.status)

    def _error(self, expr: str, reason: str, transient: bool) -> PrometheusQueryError:
        return PrometheusQueryError(url=self.url, expr=expr, reason=reason, transient=transient)


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
