"""The one error tree of every adapter: what failed, on which system, and whether trying again may help.

Why this module exists: the runtime and the executors handle failures of four external systems the
same way (hold with the reason, retry later if that may help), so they test one thing everywhere:
`error.temporary`. Every adapter raises a subclass of `AdapterError`, names the system and the
server in its message, and chains the client library's own error (`raise ... from error`).
`retry_after` (seconds) is the server's own hint (an HTTP Retry-After), None when it gave none;
`agent.adapters.retry` waits at least that long before the next try.

    AdapterError                    .system .server .temporary .retry_after
    ├── KubeError                   kube-apiserver: .verb .resource .namespace .name .status .reason
    │   │                           temporary: no answer (refused, reset, timed out), 429, 5xx
    │   ├── NotFoundError           404: the object (or the resource type) does not exist
    │   ├── ConflictError           409: a failed precondition (uid, resourceVersion), or it exists already
    │   │   ├── StateConflictError  the state store: another writer moved the state a change was based on
    │   │   │   └── ActionInFlightError   an action is already recorded in flight for the pair
    │   │   └── AnswerConflictError       an ActionApproval was answered already, or no longer waits
    │   └── StateDecodeError        a stored AutopilotRuleObject status this agent cannot read (also a ValueError)
    ├── PrometheusQueryError        an instant query: .expr .reason .status
    │                               temporary: unreachable, 429, 5xx; permanent: bad PromQL (400),
    │                               execution error (422), timeout, an answer that is not a vector
    ├── KafkaAdminError             Kafka (aiokafka): .bootstrap_servers .reason
    │   ├── KafkaUnavailableError   temporary: nothing reachable, timed out, every broker failed
    │   └── KafkaResponseError      a broker answered with an error code; temporary as Kafka classifies it
    └── StoragePoolError            the storage API: .what .reason .status
        │                           temporary: unreachable, timeout, 429, 5xx
        ├── PoolNotFoundError       404, or no pool with that uuid / node and name
        └── PoolBusyError           409: a resize is already running on the pool (temporary)
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "ActionInFlightError",
    "AdapterError",
    "AnswerConflictError",
    "ConflictError",
    "KafkaAdminError",
    "KafkaResponseError",
    "KafkaUnavailableError",
    "KubeError",
    "NotFoundError",
    "PoolBusyError",
    "PoolNotFoundError",
    "PrometheusQueryError",
    "StateConflictError",
    "StateDecodeError",
    "StoragePoolError",
]

KUBE_APISERVER: Final = "kube-apiserver"
PROMETHEUS: Final = "prometheus"
KAFKA: Final = "kafka"
STORAGE_API: Final = "storage API"


class AdapterError(Exception):
    """A call to an external system failed; the message names the system, the server and the cause."""

    def __init__(
        self, message: str, *, system: str, server: str, temporary: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.system = system
        self.server = server
        self.temporary = temporary
        """True when the same call may succeed later (no answer, throttled, a server error)."""
        self.retry_after = retry_after
        """Seconds the server asked to wait before the next try, None when it said nothing."""


# --- Kubernetes -----------------------------------------------------------------------------------------


class KubeError(AdapterError):
    """A request to the apiserver failed, as in "kube-apiserver https://…: PATCH persistentvolumeclaims
    kafka/data-kafka-0: 403 Forbidden: …"."""

    def __init__(
        self,
        message: str,
        *,
        server: str,
        verb: str,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        temporary: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, system=KUBE_APISERVER, server=server, temporary=temporary, retry_after=retry_after)
        self.verb = verb
        self.resource = resource
        self.namespace = namespace
        self.name = name
        self.status = status
        """The HTTP status, or None when no answer came (connection refused, timeout)."""
        self.reason = reason
        """The API's Status reason ("Forbidden", "Conflict", "Expired", ...) when it gave one."""


class NotFoundError(KubeError):
    """404: the object (or the resource type) does not exist."""


class ConflictError(KubeError):
    """409: a precondition (uid, resourceVersion) failed, or the object already exists."""


class StateConflictError(ConflictError):
    """The stored state is no longer the one the state store based its change on: another replica (or
    an earlier life of this agent) moved it. The caller must not act on its decision."""

    def __init__(self, message: str, *, rule: str, object_key: str, server: str = "") -> None:
        super().__init__(
            f"{rule}: {object_key}: {message}",
            server=server,
            verb="PUT",
            resource="autopilotruleobjects/status",
            status=409,
        )
        self.rule = rule
        self.object_key = object_key


class ActionInFlightError(StateConflictError):
    """An action is already recorded in flight for the pair: verify it, do not apply another.

    `in_flight` is the record found (an `agent.adapters.kubernetes.statuscodec.InFlight`)."""

    def __init__(self, message: str, *, rule: str, object_key: str, in_flight: Any, server: str = "") -> None:
        super().__init__(message, rule=rule, object_key=object_key, server=server)
        self.in_flight = in_flight


class AnswerConflictError(ConflictError):
    """The ActionApproval was already answered differently, or no longer waits (cancelled, used)."""

    def __init__(self, message: str, *, server: str, namespace: str, name: str, status: int | None) -> None:
        super().__init__(
            message,
            server=server,
            verb="PATCH",
            resource="actionapprovals",
            namespace=namespace,
            name=name,
            status=status,
        )


class StateDecodeError(KubeError, ValueError):
    """A stored status this agent cannot read; never treated as "no state"."""

    def __init__(self, message: str, *, server: str = "") -> None:
        super().__init__(message, server=server, verb="DECODE", resource="autopilotruleobjects/status")


# --- Prometheus -----------------------------------------------------------------------------------------


class PrometheusQueryError(AdapterError):
    """An instant query failed; the message names the server URL, the expression and the cause."""

    def __init__(
        self,
        *,
        url: str,
        expr: str,
        reason: str,
        temporary: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            f"prometheus {url}: {reason}", system=PROMETHEUS, server=url, temporary=temporary, retry_after=retry_after
        )
        self.url = url
        self.expr = expr
        self.reason = reason
        self.status = status


# --- Kafka ----------------------------------------------------------------------------------------------


class KafkaAdminError(AdapterError):
    """A question to Kafka went unanswered; the message names the bootstrap servers and the cause."""

    def __init__(self, *, bootstrap_servers: str, reason: str, temporary: bool = True) -> None:
        super().__init__(
            f"kafka {bootstrap_servers}: {reason}", system=KAFKA, server=bootstrap_servers, temporary=temporary
        )
        self.bootstrap_servers = bootstrap_servers
        self.reason = reason


class KafkaUnavailableError(KafkaAdminError):
    """No broker answered in time: unreachable, refused, timed out, or every broker failed."""

    def __init__(self, *, bootstrap_servers: str, reason: str) -> None:
        super().__init__(bootstrap_servers=bootstrap_servers, reason=reason, temporary=True)


class KafkaResponseError(KafkaAdminError):
    """A broker answered with an error code, e.g. an unknown topic or a denied authorization."""


# --- storage pools --------------------------------------------------------------------------------------


class StoragePoolError(AdapterError):
    """A call to the storage API failed; the message names the server, the call and the cause."""

    def __init__(self, *, server: str, what: str, reason: str, temporary: bool, status: int | None = None) -> None:
        super().__init__(
            f"storage API {server}: {what}: {reason}", system=STORAGE_API, server=server, temporary=temporary
        )
        self.what = what
        self.reason = reason
        self.status = status


class PoolNotFoundError(StoragePoolError):
    """The pool (or its node) does not exist."""


class PoolBusyError(StoragePoolError):
    """The pool is being resized already."""
