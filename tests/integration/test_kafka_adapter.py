"""The Kafka adapter against a real KRaft cluster: Kafka's view, fencing of a killed broker, and errors.

The cluster-backed tests share one sandbox cluster (controller + brokers 0..3) for the module and
run in file order: a healthy view, the same over the TLS listener that requires a client certificate
(with the certificate it answers, to the admin, the events producer, a consumer and the real
`kafka-autopilot report`;
without it, a clear error at once, naming the server and TLS), broker 1 killed until Kafka
fences it (and still lists its address, marked fenced), broker 1 back. The
settings tests and the unreachable-bootstrap tests need no cluster.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from agent.adapters.kafka import KafkaAdmin, KafkaResponseError, KafkaSettings, KafkaUnavailableError
from agent.adapters.kafka.producer import event_producer, read_topic
from agent.core.broker_identity import BrokerEndpoint
from agent.core.kafka_safety import (
    ClusterView,
    PartitionState,
    brokers_seen_alive,
    min_isr_violations,
    preferred_leader_candidates,
)
from sandbox.kafka import KafkaCluster
from sandbox.process import free_port

TOPIC = "orders"
DEFAULT_TOPIC = "audit"  # no min.insync.replicas of its own: the broker default (2 in the sandbox)
STRICT_TOPIC = "payments"  # min.insync.replicas=3 on the topic
KILLED = 1
FENCE_TIMEOUT_SECONDS = 60.0
KAFKA_TLS_LISTENER = True
"""The module's cluster also has its TLS listener with client authentication (tests/conftest.py)."""


@pytest.fixture
async def kafka(kafka_cluster: KafkaCluster) -> AsyncIterator[KafkaAdmin]:
    async with KafkaAdmin(settings=KafkaSettings(bootstrap_servers=kafka_cluster.bootstrap_servers)) as admin:
        yield admin


def of_topic(view: ClusterView, topic: str) -> list[PartitionState]:
    return [p for p in view.partitions if p.topic == topic]


def fully_in_sync(view: ClusterView, topic: str) -> bool:
    partitions = of_topic(view, topic)
    return bool(partitions) and all(p.leader is not None and set(p.isr) == set(p.replicas) for p in partitions)


async def wait_for_view(
    kafka: KafkaAdmin, condition: Callable[[ClusterView], bool], *, what: str, timeout_seconds: float = 60.0
) -> tuple[ClusterView, float]:
    """Poll the view until `condition` holds; the view and the seconds it took."""
    started = time.monotonic()
    view: ClusterView | None = None
    while True:
        try:
            view = await kafka.cluster_view()
        except KafkaUnavailableError:  # a broker just went away: ask again
            view = None
        if view is not None and condition(view):
            return view, time.monotonic() - started
        assert time.monotonic() - started < timeout_seconds, f"not {what} after {timeout_seconds:.0f}s: {view}"
        await asyncio.sleep(0.5)


# --- settings (no cluster) ----------------------------------------------------------------------


def test_plaintext_settings_give_plain_client_kwargs() -> None:
    kwargs = KafkaSettings(bootstrap_servers="k:9092", request_timeout_ms=3000).client_kwargs()

    assert kwargs["bootstrap_servers"] == "k:9092"
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert kwargs["request_timeout_ms"] == 3000
    assert "ssl_context" not in kwargs
    assert "sasl_mechanism" not in kwargs


def test_sasl_ssl_settings_build_an_ssl_context_and_hide_the_password() -> None:
    settings = KafkaSettings(
        bootstrap_servers="k:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="autopilot",
        sasl_password="s3cret",
    )

    kwargs = settings.client_kwargs()

    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].check_hostname
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "autopilot",
        "s3cret",
    )
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bootstrap_servers": " "}, "bootstrap_servers is empty"),
        ({"bootstrap_servers": "k:9092", "security_protocol": "TLS"}, "security_protocol 'TLS'"),
        ({"bootstrap_servers": "k:9092", "request_timeout_ms": 0}, "request_timeout_ms must be positive"),
        (
            {"bootstrap_servers": "k:9092", "security_protocol": "SASL_PLAINTEXT", "sasl_username": "u"},
            "SASL_PLAINTEXT with PLAIN needs a username and password",
        ),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaSettings(**kwargs)  # type: ignore[arg-type]


# --- unreachable Kafka (no cluster) -------------------------------------------------------------


@pytest.mark.sandbox
async def test_a_refused_bootstrap_server_raises_quickly_naming_it() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()

    with pytest.raises(KafkaUnavailableError) as raised:
        async with KafkaAdmin(settings=KafkaSettings(bootstrap_servers=address)) as admin:
            await admin.cluster_view()

    assert time.monotonic() - started < 15
    assert address in str(raised.value)
    assert "connecting to a bootstrap server" in str(raised.value)
    assert raised.value.temporary


@pytest.mark.sandbox
async def test_a_silent_bootstrap_server_cannot_make_it_hang() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, host="127.0.0.1", port=0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    started = time.monotonic()
    try:
        with pytest.raises(KafkaUnavailableError) as raised:
            async with KafkaAdmin(settings=KafkaSettings(bootstrap_servers=address, request_timeout_ms=1500)):
                pass
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()

    assert time.monotonic() - started < 5
    assert accepted, "the client never connected"
    assert address in str(raised.value)


# --- the real cluster, in order ------------------------------------------------------------------


@pytest.mark.sandbox
async def test_view_of_a_healthy_cluster(kafka_cluster: KafkaCluster, kafka: KafkaAdmin) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap_servers, request_timeout_ms=20000)
    await admin.start()
    try:
        created = await admin.create_topics(
            [
                NewTopic(TOPIC, num_partitions=8, replication_factor=3, topic_configs={"min.insync.replicas": "2"}),
                NewTopic(DEFAULT_TOPIC, num_partitions=2, replication_factor=3),
                NewTopic(
                    STRICT_TOPIC, num_partitions=2, replication_factor=3, topic_configs={"min.insync.replicas": "3"}
                ),
            ]
        )
        assert [error for _, error, *_ in created.topic_errors] == [0, 0, 0]
        # Looking up a group's coordinator makes Kafka create its internal __consumer_offsets topic.
        deadline = time.monotonic() + 60
        while True:
            try:
                await admin.find_coordinator("kafka-autopilot-test")
                break
            except KafkaError:
                assert time.monotonic() < deadline, "__consumer_offsets was never created"
                await asyncio.sleep(0.5)
    finally:
        await admin.close()

    view, _ = await wait_for_view(
        kafka,
        lambda v: all(fully_in_sync(v, t) for t in (TOPIC, DEFAULT_TOPIC, STRICT_TOPIC, "__consumer_offsets")),
        what="fully in sync",
    )

    assert view.brokers_registered == frozenset({0, 1, 2, 3})
    orders = of_topic(view, TOPIC)
    assert [p.partition for p in orders] == list(range(8))
    for p in orders:
        assert len(p.replicas) == 3 and len(set(p.replicas)) == 3, p
        assert set(p.replicas) <= {0, 1, 2, 3}, p
        assert sorted(p.isr) == sorted(p.replicas), p
        assert p.leader == p.replicas[0], p  # a new topic is led by its preferred replicas
        assert p.min_insync == 2, p
    assert {p.min_insync for p in of_topic(view, DEFAULT_TOPIC)} == {2}
    assert {p.min_insync for p in of_topic(view, STRICT_TOPIC)} == {3}
    assert of_topic(view, "__consumer_offsets"), "internal topics belong in the view"
    assert all(reasons for reasons in brokers_seen_alive(view, [0, 1, 2, 3]).values())
    assert min_isr_violations(view, removing=frozenset({KILLED})) == [
        f"{p.name}: ISR [{','.join(map(str, p.isr))}] minus [{KILLED}] leaves 2 < min.insync.replicas 3"
        for p in of_topic(view, STRICT_TOPIC)
        if KILLED in p.isr
    ]
    assert preferred_leader_candidates(view) == []

    only = await kafka.cluster_view(topics=[TOPIC])
    assert {p.topic for p in only.partitions} == {TOPIC}

    every_broker = tuple(
        BrokerEndpoint(broker_id=b, host=host, port=int(port), fenced=False)
        for b in kafka_cluster.broker_ids
        for host, _, port in [kafka_cluster.broker_address(b).rpartition(":")]
    )
    assert view.endpoints == every_broker
    assert await kafka.broker_endpoints() == every_broker


def tls_settings(kafka_cluster: KafkaCluster, *, client_certificate: bool) -> KafkaSettings:
    files = kafka_cluster.tls_files
    return KafkaSettings(
        bootstrap_servers=kafka_cluster.tls_bootstrap_servers,
        security_protocol="SSL",
        ssl_cafile=str(files.ca_file),
        ssl_certfile=str(files.cert_file) if client_certificate else None,
        ssl_keyfile=str(files.key_file) if client_certificate else None,
        request_timeout_ms=5000,
    )


@pytest.mark.sandbox
async def test_the_tls_listener_answers_a_client_with_its_certificate(kafka_cluster: KafkaCluster) -> None:
    settings = tls_settings(kafka_cluster, client_certificate=True)

    async with KafkaAdmin(settings=settings) as admin:
        endpoints = await admin.broker_endpoints()
        view = await admin.cluster_view()
    producer = event_producer(settings)  # the decision stream's producer, as `run --events-topic` makes it
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait("decisions-over-mtls", b"an event", key=b"kafka/data-0"), 60)
    finally:
        await producer.stop()
    published = await read_topic(settings, "decisions-over-mtls", timeout_seconds=30)

    tls_ports = {int(address.rpartition(":")[2]) for address in kafka_cluster.tls_bootstrap_servers.split(",")}
    assert {endpoint.port for endpoint in endpoints} == tls_ports
    assert view.brokers_registered == frozenset(kafka_cluster.broker_ids)
    assert published == [(b"kafka/data-0", b"an event")]


@pytest.mark.sandbox
async def test_the_tls_listener_refuses_a_client_without_certificate_at_once_saying_why(
    kafka_cluster: KafkaCluster,
) -> None:
    settings = tls_settings(kafka_cluster, client_certificate=False)
    first_server = kafka_cluster.tls_bootstrap_servers.split(",")[0]
    started = time.monotonic()

    with pytest.raises(KafkaUnavailableError) as raised:
        async with KafkaAdmin(settings=settings) as admin:
            await admin.cluster_view()

    assert time.monotonic() - started < settings.operation_timeout_seconds
    assert f"TLS with {first_server}: the broker requires a client certificate and none was given" in str(raised.value)
    assert str(raised.value).startswith(f"kafka {kafka_cluster.tls_bootstrap_servers}: ")


@pytest.mark.sandbox
@pytest.mark.parametrize("client_certificate", [True, False], ids=["with-certificate", "without"])
def test_the_real_cli_reads_the_decision_stream_over_mtls_only_with_its_certificate(
    kafka_cluster: KafkaCluster, client_certificate: bool
) -> None:
    files = kafka_cluster.tls_files
    certificate = ["--kafka-cert-file", str(files.cert_file), "--kafka-key-file", str(files.key_file)]
    done = subprocess.run(
        [
            sys.executable, "-m", "agent.cli", "report", "--json", "--events-topic", "no-decisions-yet",
            "--kafka", kafka_cluster.tls_bootstrap_servers, "--kafka-security-protocol", "SSL",
            "--kafka-ca-file", str(files.ca_file), *(certificate if client_certificate else []),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    if client_certificate:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["skipped_lines"] == 0
    else:
        assert done.returncode == 2
        first_server = kafka_cluster.tls_bootstrap_servers.split(",")[0]
        assert f"TLS with {first_server}: the broker requires a client certificate and none was given" in done.stderr


@pytest.mark.sandbox
async def test_an_unknown_topic_is_a_permanent_error(kafka: KafkaAdmin) -> None:
    with pytest.raises(KafkaResponseError, match=r"no-such-topic.*no such topic") as raised:
        await kafka.cluster_view(topics=["no-such-topic"])

    assert not raised.value.temporary


@pytest.mark.sandbox
async def test_a_killed_broker_is_seen_alive_until_kafka_fences_it(
    kafka_cluster: KafkaCluster, kafka: KafkaAdmin
) -> None:
    started = time.monotonic()
    await asyncio.to_thread(kafka_cluster.stop_broker, KILLED, kill=True)
    killed_after = time.monotonic() - started

    view, waited = await wait_for_view(
        kafka,
        lambda v: brokers_seen_alive(v, [KILLED])[KILLED] == [],
        what=f"broker {KILLED} fenced",
        timeout_seconds=FENCE_TIMEOUT_SECONDS,
    )
    fenced_after = killed_after + waited
    print(f"broker {KILLED}: SIGKILL done after {killed_after:.1f}s, fenced in Kafka's view after {fenced_after:.1f}s")

    assert fenced_after > 3, "fenced faster than the 6s broker.session.timeout.ms allows"
    assert view.brokers_registered == frozenset({0, 2, 3})
    orders = of_topic(view, TOPIC)
    assert all(KILLED not in p.isr and p.leader != KILLED for p in orders)
    assert any(KILLED in p.replicas for p in orders), "the fenced broker keeps its replica assignments"
    # Broker 1 already left every ISR: rescheduling its pod takes nothing away.
    assert min_isr_violations(view, removing=frozenset({KILLED})) == []
    # Taking a second, live broker away would leave some partitions with one in-sync replica.
    for live in (0, 2, 3):
        violations = [v for v in min_isr_violations(view, removing=frozenset({KILLED, live})) if v.startswith(TOPIC)]
        assert violations, f"removing broker {live} too should violate min.insync.replicas"
        assert all(f"minus [{live}] leaves 1 < min.insync.replicas 2" in v for v in violations), violations
    assert brokers_seen_alive(view, [KILLED, 0])[0][0] == "registered in cluster metadata"
    # DescribeCluster v2 still lists the fenced broker, with the address it advertised: its pod stays identifiable.
    host, _, port = kafka_cluster.broker_address(KILLED).rpartition(":")
    fenced = BrokerEndpoint(broker_id=KILLED, host=host, port=int(port), fenced=True)
    assert fenced in view.endpoints, view.endpoints
    assert [e.broker_id for e in view.endpoints if not e.fenced] == [0, 2, 3]
    assert fenced in await kafka.broker_endpoints()


@pytest.mark.sandbox
async def test_a_restarted_broker_is_seen_alive_and_its_leaderships_can_move_back(
    kafka_cluster: KafkaCluster, kafka: KafkaAdmin
) -> None:
    await asyncio.to_thread(kafka_cluster.start_broker, KILLED)

    view, _ = await wait_for_view(
        kafka,
        lambda v: KILLED in v.brokers_registered and all(fully_in_sync(v, t) for t in (TOPIC, STRICT_TOPIC)),
        what=f"broker {KILLED} back in every ISR",
    )

    reasons = brokers_seen_alive(view, [KILLED])[KILLED]
    assert reasons[0] == "registered in cluster metadata"
    assert any(r.startswith("in the ISR of") for r in reasons), reasons
    preferred_by_killed = {(p.topic, p.partition) for p in of_topic(view, TOPIC) if p.replicas[0] == KILLED}
    assert preferred_by_killed, "broker 1 is no partition's preferred replica"
    candidates = preferred_leader_candidates(view, broker_id=KILLED)
    # No automatic rebalance in the sandbox: leadership stays away from the returned broker.
    assert candidates
    assert preferred_by_killed <= set(candidates)
    assert set(candidates) <= set(preferred_leader_candidates(view))
    assert min_isr_violations(view, removing=frozenset({KILLED})) == [
        f"{p.name}: ISR [{','.join(map(str, p.isr))}] minus [{KILLED}] leaves 2 < min.insync.replicas 3"
        for p in of_topic(view, STRICT_TOPIC)
        if KILLED in p.isr
    ]
