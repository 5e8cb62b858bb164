"""Read Kafka's own view of the cluster: the one way the guardrails in `agent.core.kafka_safety` get data.

Before the agent force-deletes a broker pod, or takes any step that moves replicas out of service,
it must ask Kafka, not Kubernetes, whether that broker is gone and whether the step would leave a
partition below `min.insync.replicas`. This adapter turns Kafka's wire protocol (through aiokafka)
into a `ClusterView`, and every failure into one of our own errors naming the bootstrap servers
and what failed (with TLS, a failed connection also says what the TLS session ended with:
`tls_probe`). No call can hang: each request and the whole operation are bounded by a timeout.

One view comes from one broker: the Metadata response (unfenced brokers, and every partition's
leader, replicas and ISR, internal topics included), the DescribeCluster v2 response (every broker's
advertised address, fenced ones included and marked so) and the DescribeConfigs response for
`min.insync.replicas` (each topic, plus that broker's own default for topics without an
override) are all asked of the same broker, so the view is one broker's consistent picture. A broker
that does not offer DescribeCluster v2 (before Kafka 4.0), or does not let us describe the cluster,
gives the Metadata brokers as endpoints instead: the unfenced ones only, so a fenced broker's pod is
identified by nobody (and whoever needed it holds).
When that broker does not answer, the next known broker is asked, within the time budget.
Both requests are the protocol classes aiokafka's admin client uses, sent through
`AIOKafkaClient`, which lets us choose the broker and fall back to another.

Errors:

    KafkaAdminError                 .bootstrap_servers, .reason, .temporary (agent.adapters.errors)
    ├── KafkaUnavailableError       temporary: nothing reachable, timed out, every broker failed
    └── KafkaResponseError          Kafka answered with an error code; .temporary from Kafka's
                                    own classification (e.g. unknown topic: permanent here)
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import IncompatibleBrokerVersion, KafkaError, UnknownTopicOrPartitionError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.admin import ApiVersionRequest, DescribeConfigsRequest
from aiokafka.protocol.metadata import MetadataRequest

from agent.adapters.clock import Clock, WallClock
from agent.adapters.errors import KafkaAdminError, KafkaResponseError, KafkaUnavailableError
from agent.adapters.kafka.describe_cluster import DescribeClusterRequest, endpoints_from
from agent.adapters.kafka.elect import ELECT_LEADERS_KEY, IMPLEMENTED_VERSIONS, ElectLeadersRequest, parse_answer
from agent.adapters.kafka.tls_probe import tls_failure
from agent.core.broker_identity import BrokerEndpoint
from agent.core.elections import PartitionElection, error_name
from agent.core.kafka_safety import ClusterView, PartitionState

__all__ = [
    "KafkaAdmin",
    "KafkaAdminError",
    "KafkaResponseError",
    "KafkaSettings",
    "KafkaUnavailableError",
]

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MIN_INSYNC = "min.insync.replicas"
KAFKA_DEFAULT_MIN_INSYNC = 1
"""Kafka's built-in default, used only when neither the topic nor the broker reports a value."""

_TOPIC_RESOURCE = 2  # DescribeConfigs resource types, as in aiokafka's ConfigResourceType
_BROKER_RESOURCE = 4
_TOPIC_CONFIG_SOURCE = 1  # DescribeConfigs v1+ config_source: set on the topic itself
_CLIENT_ID = "kafka-autopilot"

_CLUSTER_AUTHORIZATION_FAILED = 31
_RETRIABLE_ELECTION_ERRORS = (7, 41)  # REQUEST_TIMED_OUT, NOT_CONTROLLER: another broker may do better

_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """How to reach the Kafka cluster. `request_timeout_ms` bounds each request; an operation
    (connecting, or one `cluster_view`) gets twice that, so one slow broker can be skipped."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    request_timeout_ms: int = 10000

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ValueError("bootstrap_servers is empty")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"security_protocol {self.security_protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.request_timeout_ms <= 0:
            raise ValueError(f"request_timeout_ms must be positive, not {self.request_timeout_ms}")
        password_mechanism = self.sasl_mechanism in (None, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
        if self.uses_sasl and password_mechanism and (self.sasl_username is None or self.sasl_password is None):
            raise ValueError(
                f"{self.security_protocol} with {self.sasl_mechanism or 'PLAIN'} needs a username and password"
            )

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def operation_timeout_seconds(self) -> float:
        return 2 * self.request_timeout_ms / 1000

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's clients (`AIOKafkaClient`, `AIOKafkaAdminClient`, ...).

        With TLS an `ssl.SSLContext` is built from the CA, certificate and key files (hostname
        checked); with SASL the mechanism defaults to PLAIN.
        """
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": _CLIENT_ID,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.uses_tls:
            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text and text != name else name


def _is_topic_override(entry: dict[str, Any]) -> bool:
    """Whether a DescribeConfigs entry was set on the topic itself (v1+: its source; v0: not default)."""
    if "config_source" in entry:
        return bool(entry["config_source"] == _TOPIC_CONFIG_SOURCE)
    return not entry.get("is_default", True)


class KafkaAdmin:
    """Read-only questions to Kafka, as an async context manager:

        async with KafkaAdmin(settings=settings) as kafka:
            view = await kafka.cluster_view()

    Entering connects (bounded by the operation timeout) and raises `KafkaUnavailableError`
    when no bootstrap server answers; leaving closes every connection.

    With `lazily=True` (the agent's way), entering connects nothing: each question connects first
    when there is no connection, and a failed connection is retried no sooner than a backoff that
    doubles from `RECONNECT_FIRST_SECONDS` to `RECONNECT_MAX_SECONDS`; meanwhile the question fails
    at once with the last error. So Kafka being away at start-up fails only what needs Kafka.
    """

    RECONNECT_FIRST_SECONDS = 1.0
    RECONNECT_MAX_SECONDS = 30.0

    def __init__(self, *, settings: KafkaSettings, clock: Clock | None = None, lazily: bool = False) -> None:
        self.settings = settings
        self.clock: Clock = clock or WallClock()
        self.lazily = lazily
        self._client: Any = None
        self._entered = False
        self._last_failure: KafkaUnavailableError | None = None
        self._retry_at = 0.0
        self._backoff = self.RECONNECT_FIRST_SECONDS
        self.last_election_version: int | None = None

    async def __aenter__(self) -> Self:
        self._entered = True
        if not self.lazily:
            await self._connect()
        return self

    async def _connect(self) -> Any:
        kwargs = self.settings.client_kwargs()
        client = AIOKafkaClient(**kwargs)
        try:
            await self._bounded(client.bootstrap(), what="connecting to a bootstrap server")
        except KafkaUnavailableError as error:
            await self._close(client)
            if not self.settings.uses_tls:
                raise
            why = await tls_failure(
                self.settings.bootstrap_servers,
                kwargs["ssl_context"],
                client_certificate=self.settings.ssl_certfile is not None,
                timeout_seconds=self.settings.request_timeout_ms / 1000,
            )
            if why is None:
                raise
            raise KafkaUnavailableError(
                bootstrap_servers=self.settings.bootstrap_servers, reason=f"{error.reason}; {why}"
            ) from error
        except BaseException:
            await self._close(client)
            raise
        self._client = client
        return client

    async def _connected(self, method: str) -> Any:
        """The connection, made now if there is none (lazily, with the backoff above)."""
        if not self._entered:
            raise RuntimeError(f"KafkaAdmin.{method}() outside `async with KafkaAdmin(...)`")
        if self._client is not None:
            return self._client
        if self._last_failure is not None and self.clock.monotonic() < self._retry_at:
            raise self._last_failure
        try:
            client = await self._connect()
        except KafkaUnavailableError as error:
            self._last_failure = error
            self._retry_at = self.clock.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.RECONNECT_MAX_SECONDS)
            raise
        self._last_failure, self._backoff = None, self.RECONNECT_FIRST_SECONDS
        return client

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        client, self._client = self._client, None
        self._entered = False
        if client is not None:
            await self._close(client)

    async def cluster_view(self, *, topics: Sequence[str] | None = None) -> ClusterView:
        """Kafka's view: unfenced brokers and, for `topics` (None: every topic, internal ones
        included), each partition's leader, replicas, ISR and effective `min.insync.replicas`.

        Asks one broker at a time, in random order, until one answers both requests; the whole
        call is bounded by the operation timeout. Raises `KafkaUnavailableError` when none does
        in time, `KafkaResponseError` when a topic is unknown or another topic-level error is
        answered (a view missing a topic could hide a violation, so there is no partial view).
        """
        client = await self._connected("cluster_view")
        return await self._ask_any_broker(
            client,
            lambda node: self._view_from(client, node=node, topics=topics),
            what="reading the cluster view",
        )

    async def broker_endpoints(self) -> tuple[BrokerEndpoint, ...]:
        """Every broker Kafka knows, with the address it advertises, fenced ones marked so (see the
        module docstring for brokers without DescribeCluster v2). Asks one broker at a time, bounded by
        the operation timeout; `KafkaUnavailableError` when no broker answers."""
        client = await self._connected("broker_endpoints")

        async def ask(node: int) -> tuple[BrokerEndpoint, ...]:
            metadata = (await self._send(client, node, MetadataRequest([]))).to_object()
            return await self._endpoints_from(client, node=node, metadata=metadata)

        return await self._ask_any_broker(client, ask, what="reading the brokers' addresses")

    async def elect_preferred_leaders(
        self, partitions: Sequence[tuple[str, int]], *, version: int | None = None
    ) -> tuple[PartitionElection, ...]:
        """Ask Kafka to make each partition's preferred replica (its first) its leader: one
        ElectLeaders request (type PREFERRED), one result per partition, in the order given.

        A result `done` (elected, or ELECTION_NOT_NEEDED) means the preferred replica leads; any
        other code (e.g. PREFERRED_LEADER_NOT_AVAILABLE: it is not in the ISR) is that partition's
        alone. The request goes to one broker (in KRaft any broker forwards it to the controller),
        the next one when it cannot be reached or answers NOT_CONTROLLER / REQUEST_TIMED_OUT.
        `version` forces an ElectLeaders version; by default the highest the broker accepts.
        `last_election_version` records the version sent. Raises `KafkaResponseError` on a
        top-level error (e.g. CLUSTER_AUTHORIZATION_FAILED), `KafkaUnavailableError` when no broker
        answers within the operation timeout.
        """
        client = await self._connected("elect_preferred_leaders")
        if not partitions:
            return ()

        async def ask(node: int) -> tuple[PartitionElection, ...]:
            request = ElectLeadersRequest(
                partitions=partitions, timeout_ms=max(1000, self.settings.request_timeout_ms // 2), version=version
            )
            try:
                response = (await self._send(client, node, request)).to_object()
            except IncompatibleBrokerVersion as error:
                raise KafkaResponseError(
                    bootstrap_servers=self.settings.bootstrap_servers, reason=f"broker {node}: {error}", temporary=False
                ) from error
            answer = parse_answer(response, asked=partitions)
            if answer.error_code in _RETRIABLE_ELECTION_ERRORS:
                raise KafkaResponseError(
                    bootstrap_servers=self.settings.bootstrap_servers, reason=error_name(answer.error_code)
                )
            if answer.error_code:
                raise KafkaResponseError(
                    bootstrap_servers=self.settings.bootstrap_servers,
                    reason=f"ElectLeaders v{request.chosen_version} on broker {node}: {error_name(answer.error_code)}",
                    temporary=False,
                )
            self.last_election_version = request.chosen_version
            return answer.partitions

        return await self._ask_any_broker(client, ask, what="electing preferred leaders")

    async def elect_leaders_versions(self) -> tuple[int, ...]:
        """The ElectLeaders versions both a broker (from its ApiVersions answer) and this agent speak."""
        client = await self._connected("elect_leaders_versions")

        async def ask(node: int) -> tuple[int, ...]:
            answer = (await self._send(client, node, ApiVersionRequest())).to_object()
            ranges = [
                (v["min_version"], v["max_version"])
                for v in answer["api_versions"]
                if v["api_key"] == ELECT_LEADERS_KEY
            ]
            if not ranges:
                return ()
            low, high = ranges[0]
            return tuple(v for v in IMPLEMENTED_VERSIONS if low <= v <= high)

        return await self._ask_any_broker(client, ask, what="reading ApiVersions")

    # -- internals -------------------------------------------------------------------------------

    async def _ask_any_broker(self, client: Any, ask: Callable[[int], Awaitable[_T]], *, what: str) -> _T:
        """The first answer of `ask(node)` from the known brokers, one at a time in random order, the
        whole bounded by the operation timeout. A broker that cannot be reached, times out or answers a
        temporary error is passed over and named in the error if none answers (`KafkaUnavailableError`);
        a permanent `KafkaResponseError` is raised at once."""
        failures: list[str] = []

        async def each_broker() -> _T:
            nodes = [broker.nodeId for broker in client.cluster.brokers()]
            random.shuffle(nodes)
            for node in nodes:
                try:
                    return await ask(node)
                except KafkaResponseError as error:
                    if not error.temporary:
                        raise
                    failures.append(f"broker {node}: {error.reason}")
                except (KafkaError, OSError, TimeoutError) as error:
                    failures.append(f"broker {node}: {_describe(error)}")
            raise KafkaUnavailableError(
                bootstrap_servers=self.settings.bootstrap_servers,
                reason=f"{what} failed on every known broker: " + ("; ".join(failures) or "no broker in the metadata"),
            )

        return await self._bounded(each_broker(), what=what, failures=failures)

    async def _send(self, client: Any, node: int, request: Any) -> Any:
        """One request to one broker, bounded by the request timeout."""
        async with self.clock.timeout(self.settings.request_timeout_ms / 1000):
            return await client.send(node, request)

    async def _view_from(self, client: Any, *, node: int, topics: Sequence[str] | None) -> ClusterView:
        request = MetadataRequest(list(topics) if topics is not None else None, allow_auto_topic_creation=False)
        metadata = (await self._send(client, node, request)).to_object()
        described = [self._check_topic(t) for t in metadata["topics"]]
        names = sorted(t["topic"] for t in described)
        resources = [(_TOPIC_RESOURCE, name, [MIN_INSYNC]) for name in names]
        resources.append((_BROKER_RESOURCE, str(node), [MIN_INSYNC]))
        configs = (await self._send(client, node, DescribeConfigsRequest(resources, False))).to_object()
        min_insync = self._min_insync(configs["resources"], topics=names)
        partitions = tuple(
            PartitionState(
                topic=t["topic"],
                partition=p["partition"],
                leader=p["leader"] if p["leader"] >= 0 else None,
                replicas=tuple(p["replicas"]),
                isr=tuple(p["isr"]),
                min_insync=min_insync[t["topic"]],
            )
            for t in sorted(described, key=lambda t: t["topic"])
            for p in sorted(t["partitions"], key=lambda p: p["partition"])
        )
        return ClusterView(
            brokers_registered=frozenset(b["node_id"] for b in metadata["brokers"]),
            partitions=partitions,
            endpoints=await self._endpoints_from(client, node=node, metadata=metadata),
        )

    async def _endpoints_from(self, client: Any, *, node: int, metadata: dict[str, Any]) -> tuple[BrokerEndpoint, ...]:
        """DescribeCluster v2 of the broker that gave `metadata`; its Metadata brokers when it cannot say."""
        try:
            described = (await self._send(client, node, DescribeClusterRequest())).to_object()
        except IncompatibleBrokerVersion:
            return endpoints_from(described=None, metadata=metadata)
        code = described["error_code"]
        if code == _CLUSTER_AUTHORIZATION_FAILED:
            return endpoints_from(described=None, metadata=metadata)
        if code:
            error = for_code(code)
            message = described.get("error_message") or ""
            raise KafkaResponseError(
                bootstrap_servers=self.settings.bootstrap_servers,
                reason=f"DescribeCluster on broker {node}: {error.__name__} {message}".rstrip(),
                temporary=bool(error.retriable),
            )
        return endpoints_from(described=described, metadata=metadata)

    def _check_topic(self, topic: dict[str, Any]) -> dict[str, Any]:
        code = topic["error_code"]
        if code:
            error = for_code(code)
            unknown = error is UnknownTopicOrPartitionError
            raise KafkaResponseError(
                bootstrap_servers=self.settings.bootstrap_servers,
                reason=f"metadata of topic {topic['topic']!r}: {error.__name__}"
                + (" (no such topic)" if unknown else ""),
                temporary=bool(error.retriable) and not unknown,
            )
        return topic

    def _min_insync(self, resources: list[dict[str, Any]], *, topics: list[str]) -> dict[str, int]:
        """Each topic's override, else the answering broker's default, else Kafka's built-in one."""
        overrides: dict[str, int] = {}
        reported: dict[str, int] = {}
        broker_default: int | None = None
        for resource in resources:
            name = resource["resource_name"]
            if resource["error_code"]:
                error = for_code(resource["error_code"])
                raise KafkaResponseError(
                    bootstrap_servers=self.settings.bootstrap_servers,
                    reason=f"configs of {'broker' if resource['resource_type'] == _BROKER_RESOURCE else 'topic'}"
                    f" {name!r}: {error.__name__} {resource.get('error_message') or ''}".rstrip(),
                    temporary=bool(error.retriable),
                )
            for entry in resource["config_entries"]:
                if entry["config_names"] != MIN_INSYNC or entry["config_value"] is None:
                    continue
                value = int(entry["config_value"])
                if resource["resource_type"] == _BROKER_RESOURCE:
                    broker_default = value
                elif _is_topic_override(entry):
                    overrides[name] = value
                else:
                    reported[name] = value
        effective: dict[str, int] = {}
        for name in topics:
            for candidate in (overrides.get(name), broker_default, reported.get(name), KAFKA_DEFAULT_MIN_INSYNC):
                if candidate is not None:
                    effective[name] = candidate
                    break
        return effective

    async def _bounded(self, awaitable: Awaitable[_T], *, what: str, failures: Sequence[str] = ()) -> _T:
        """Await with the operation timeout; turn client failures into `KafkaUnavailableError`.

        `failures` are what went wrong before the time ran out, added to the message."""
        seconds = self.settings.operation_timeout_seconds
        try:
            async with self.clock.timeout(seconds):
                return await awaitable
        except KafkaAdminError:
            raise
        except TimeoutError as error:
            earlier = f" (before that: {'; '.join(failures)})" if failures else ""
            raise KafkaUnavailableError(
                bootstrap_servers=self.settings.bootstrap_servers,
                reason=f"{what}: no answer within {seconds:g}s{earlier}",
            ) from error
        except (KafkaError, OSError) as error:
            raise KafkaUnavailableError(
                bootstrap_servers=self.settings.bootstrap_servers, reason=f"{what}: {_describe(error)}"
            ) from error

    async def _close(self, client: Any) -> None:
        try:
            async with self.clock.timeout(self.settings.operation_timeout_seconds):
                await client.close()
        except (TimeoutError, KafkaError, OSError):
            pass  # closing is best effort: the connections die with the client anyway
