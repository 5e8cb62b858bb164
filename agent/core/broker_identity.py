"""Which Kafka broker a pod is: learned from what Kafka and the Kubernetes API say, never from a pod's name.

A pod's name says nothing reliable about its broker id: with Strimzi node pools the ids come from the
pool (`my-cluster-brokers-10`), with the Bitnami chart `broker.minId: 100` makes `kafka-broker-0`
broker 100. Acting on the wrong id is the worst mistake the agent can make: a live broker's pod
force-deleted because another id was found fenced. So an id is known only from:

- **Kafka**: each broker registers the host it advertises (Metadata / DescribeCluster). A pod is that
  broker when the host is the pod's IP, its hostname, or its FQDN `hostname.subdomain.namespace.svc[...]`;
- **what the rule states** (`spec.brokerIdentity`): a label or an annotation whose value is the id, or
  an offset added to the StatefulSet pod index (the `apps.kubernetes.io/pod-index` label the API sets).

Both are checked when both are there: a rule's id that Kafka contradicts is not trusted. An identity
that is missing, not a number, or ambiguous (one address for two brokers, one broker at two pods) is
`Unknown`, with the reason, and whoever asked must hold. Pure: no I/O; the caller passes what it read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
"""Set by the StatefulSet controller (Kubernetes 1.28+) on each pod: its ordinal."""


@dataclass(frozen=True, kw_only=True)
class BrokerEndpoint:
    """One broker as Kafka registers it: id and advertised address; `fenced` when the controller fenced it."""

    broker_id: int
    host: str
    port: int
    fenced: bool = False


@dataclass(frozen=True, kw_only=True)
class PodAddress:
    """What the API says about a pod that may run a broker."""

    namespace: str
    name: str
    ips: tuple[str, ...] = ()
    """status.podIPs (status.podIP first)."""
    hostname: str | None = None
    """spec.hostname; Kubernetes uses the pod's name when it is unset."""
    subdomain: str | None = None
    """spec.subdomain (a StatefulSet's serviceName): with it the pod has the FQDN hostname.subdomain.ns.svc."""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def answers_to(self, host: str) -> bool:
        """Whether `host` (as a broker advertises it) names this pod: its IP, hostname or FQDN."""
        host = host.strip().rstrip(".").lower()
        if not host:
            return False
        if host in self.ips:
            return True
        short = (self.hostname or self.name).lower()
        if host == short:
            return True
        if not self.subdomain:
            return False
        fqdn = f"{short}.{self.subdomain.lower()}.{self.namespace.lower()}.svc"
        return host == fqdn or host.startswith(fqdn + ".")


@dataclass(frozen=True, kw_only=True)
class StatedIdentity:
    """How a rule says to read a pod's broker id (`spec.brokerIdentity`); at most one way, none = Kafka only."""

    label: str | None = None
    annotation: str | None = None
    ordinal_offset: int | None = None

    def __post_init__(self) -> None:
        given = [way for way in (self.label, self.annotation, self.ordinal_offset) if way is not None]
        if len(given) > 1:
            raise ValueError("brokerIdentity takes one of label, annotation or ordinalOffset")

    @property
    def stated(self) -> bool:
        return self.label is not None or self.annotation is not None or self.ordinal_offset is not None

    def describe(self) -> str:
        if self.label is not None:
            return f"label {self.label}"
        if self.annotation is not None:
            return f"annotation {self.annotation}"
        if self.ordinal_offset is not None:
            return f"{POD_INDEX_LABEL} + {self.ordinal_offset}"
        return "Kafka's advertised addresses"


KAFKA_ONLY = StatedIdentity()


@dataclass(frozen=True, kw_only=True)
class Identified:
    broker_id: int
    how: str
    """Where the id came from, for the audit record: "Kafka advertises broker 10 at 10.0.0.7", ..."""


@dataclass(frozen=True, kw_only=True)
class Unknown:
    reason: str
    not_a_broker: bool = False
    """Kafka listed its brokers' addresses and none is this pod's: as far as Kafka knows, no broker runs
    here. Every other Unknown (no answer, ambiguous, contradicted) may still be a broker."""


BrokerIdentity = Identified | Unknown


def identify_brokers(
    pods: Sequence[PodAddress],
    *,
    endpoints: Sequence[BrokerEndpoint] | None,
    stated: StatedIdentity = KAFKA_ONLY,
) -> dict[tuple[str, str], BrokerIdentity]:
    """Each pod's broker identity, keyed by (namespace, name).

    `endpoints` are every broker Kafka knows (fenced ones included when Kafka can say), or None when
    Kafka could not be asked: then only a stated identity can be known, and a Kafka-only rule knows none.
    """
    from_kafka = _from_kafka(pods, endpoints)
    result: dict[tuple[str, str], BrokerIdentity] = {}
    for pod in pods:
        kafka_says = from_kafka[pod.key]
        if not stated.stated:
            result[pod.key] = kafka_says
            continue
        rule_says = _from_rule(pod, stated)
        if (
            isinstance(rule_says, Identified)
            and isinstance(kafka_says, Identified)
            and rule_says.broker_id != kafka_says.broker_id
        ):
            result[pod.key] = Unknown(
                reason=f"{stated.describe()} says broker {rule_says.broker_id}, but {kafka_says.how}"
            )
            continue
        result[pod.key] = rule_says
    return result


def _from_kafka(
    pods: Sequence[PodAddress], endpoints: Sequence[BrokerEndpoint] | None
) -> dict[tuple[str, str], BrokerIdentity]:
    if endpoints is None:
        return {pod.key: Unknown(reason="Kafka could not be asked which broker runs here") for pod in pods}
    if not endpoints:
        return {pod.key: Unknown(reason="Kafka listed no broker addresses") for pod in pods}
    matches = {pod.key: [e for e in endpoints if pod.answers_to(e.host)] for pod in pods}
    pods_per_broker: dict[int, list[str]] = {}
    for pod in pods:
        for endpoint in matches[pod.key]:
            pods_per_broker.setdefault(endpoint.broker_id, []).append(f"{pod.namespace}/{pod.name}")
    result: dict[tuple[str, str], BrokerIdentity] = {}
    for pod in pods:
        found = matches[pod.key]
        ids = sorted({e.broker_id for e in found})
        if not ids:
            result[pod.key] = Unknown(
                reason=f"no broker Kafka knows advertises this pod's address ({_addresses(pod)})", not_a_broker=True
            )
        elif len(ids) > 1:
            result[pod.key] = Unknown(
                reason=f"Kafka lists brokers {', '.join(map(str, ids))} at this pod's address: ambiguous"
            )
        elif len(pods_per_broker[ids[0]]) > 1:
            result[pod.key] = Unknown(
                reason=f"broker {ids[0]}'s address matches pods {', '.join(sorted(pods_per_broker[ids[0]]))}: ambiguous"
            )
        else:
            endpoint = found[0]
            fenced = " (fenced)" if endpoint.fenced else ""
            result[pod.key] = Identified(
                broker_id=endpoint.broker_id,
                how=f"Kafka advertises broker {endpoint.broker_id}{fenced} at {endpoint.host}:{endpoint.port}",
            )
    return result


def _from_rule(pod: PodAddress, stated: StatedIdentity) -> BrokerIdentity:
    if stated.label is not None:
        return _number(pod.labels.get(stated.label), what=f"label {stated.label}", offset=0)
    if stated.annotation is not None:
        return _number(pod.annotations.get(stated.annotation), what=f"annotation {stated.annotation}", offset=0)
    offset = stated.ordinal_offset or 0
    return _number(pod.labels.get(POD_INDEX_LABEL), what=f"label {POD_INDEX_LABEL}", offset=offset)


def _number(value: str | None, *, what: str, offset: int) -> BrokerIdentity:
    if value is None:
        return Unknown(reason=f"the pod has no {what}")
    text = value.strip()
    if not text.isdigit():
        return Unknown(reason=f"the pod's {what} is {value!r}, not a broker id")
    broker_id = int(text) + offset
    plus = f" + {offset}" if offset else ""
    return Identified(broker_id=broker_id, how=f"{what} {text}{plus}")


def _addresses(pod: PodAddress) -> str:
    names = [*pod.ips, pod.hostname or pod.name]
    if pod.subdomain:
        names.append(f"{pod.hostname or pod.name}.{pod.subdomain}.{pod.namespace}.svc")
    return ", ".join(names)
