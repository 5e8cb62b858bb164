"""The Kafka sandbox is a real KRaft cluster whose JMX exporters serve the metric names our rules use.

Needs the jars from `scripts/fetch-kafka.sh`; the cluster (one controller, brokers 0..3) is shared
by the tests of this module and stopped by the last one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from agent.adapters.kafka import KafkaSettings
from agent.adapters.kafka.producer import event_producer, read_topic
from agent.audit.cloudevents import CloudEventSink
from sandbox.kafka import KafkaCluster, registered_brokers
from sandbox.process import port_is_open

pytestmark = pytest.mark.sandbox

BROKER_METRICS = {
    "kafka_server_replicamanager_underreplicatedpartitions",
    "kafka_server_replicamanager_isrshrinks_total",
    "kafka_server_replicamanager_leadercount",
    "kafka_server_replicamanager_partitioncount",
    "kafka_server_replicamanager_underminisrpartitioncount",
}
CONTROLLER_METRICS = {
    "kafka_controller_kafkacontroller_offlinepartitionscount",
    "kafka_controller_kafkacontroller_activecontrollercount",
    "kafka_controller_kafkacontroller_preferredreplicaimbalancecount",
}
IMBALANCE = "kafka_controller_kafkacontroller_preferredreplicaimbalancecount"


def scrape(target: str) -> dict[str, float]:
    """Sample name (labels dropped) to value, from one exporter's text exposition."""
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series.split("{", 1)[0]] = float(value)
    return samples


def listening_addresses(ports: set[int]) -> dict[int, str]:
    """Port to local address (hex, as in /proc/net/tcp*) of the listening sockets on `ports`."""
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) in ports:
                found[int(port, 16)] = address
    return found


async def describe_partitions(kafka_cluster: KafkaCluster, topic: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap_servers)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert description["error_code"] == 0, description
    partitions: list[dict[str, Any]] = description["partitions"]
    return partitions


async def wait_for_partitions(
    kafka_cluster: KafkaCluster, topic: str, *, condition: str, timeout_seconds: float = 60.0
) -> list[dict[str, Any]]:
    """Poll the topic's metadata until every partition satisfies `condition`."""
    checks: dict[str, Callable[[dict[str, Any]], bool]] = {
        "fully in sync": lambda p: p["leader"] >= 0 and sorted(p["isr"]) == sorted(p["replicas"]),
        "led by other than 0": lambda p: p["leader"] not in (-1, 0),
    }
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            partitions = await describe_partitions(kafka_cluster, topic)
        except (AssertionError, KafkaError):  # topic still being created, or a broker just stopped
            partitions = []
        if partitions and all(checks[condition](p) for p in partitions):
            return partitions
        assert time.monotonic() < deadline, f"{topic} not {condition}: {partitions}"
        await asyncio.sleep(0.5)


def test_four_brokers_are_registered_and_any_process_can_control_them(kafka_cluster: KafkaCluster) -> None:
    brokers = asyncio.run(registered_brokers(bootstrap_servers=kafka_cluster.bootstrap_servers))

    assert brokers == [0, 1, 2, 3]
    assert len(kafka_cluster.bootstrap_servers.split(",")) == 4
    same_cluster_elsewhere = KafkaCluster(work_dir=kafka_cluster.work_dir)
    assert same_cluster_elsewhere.bootstrap_servers == kafka_cluster.bootstrap_servers
    assert all(same_cluster_elsewhere.broker_running(b) for b in brokers)
    assert set(same_cluster_elsewhere.jvm_pids()) == {
        "kafka-controller",
        *(f"kafka-broker-{b}" for b in brokers),
    }


def test_every_process_listens_on_loopback_only(kafka_cluster: KafkaCluster) -> None:
    ports = {
        int(t.rsplit(":", 1)[1])
        for t in [*kafka_cluster.metrics_targets.values(), kafka_cluster.controller_metrics_target]
    }
    ports |= {int(a.rsplit(":", 1)[1]) for a in kafka_cluster.bootstrap_servers.split(",")}
    ports.add(kafka_cluster.layout.controller_port)

    addresses = listening_addresses(ports)

    assert set(addresses) == ports
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    assert {port: a for port, a in addresses.items() if a not in loopback} == {}


def test_brokers_export_the_replica_manager_metrics(kafka_cluster: KafkaCluster) -> None:
    for broker_id, target in kafka_cluster.metrics_targets.items():
        names = set(scrape(target))

        assert names >= BROKER_METRICS, f"broker {broker_id} lacks {BROKER_METRICS - names}"
        assert not CONTROLLER_METRICS & names, "in KRaft these belong to the controller process"


def test_controller_exports_the_kafka_controller_metrics(kafka_cluster: KafkaCluster) -> None:
    samples = scrape(kafka_cluster.controller_metrics_target)

    assert set(samples) >= CONTROLLER_METRICS
    assert samples["kafka_controller_kafkacontroller_activecontrollercount"] == 1.0
    assert samples["kafka_controller_kafkacontroller_offlinepartitionscount"] == 0.0


async def test_restarted_broker_keeps_its_data_and_leadership_stays_off_its_preferred_replica(
    kafka_cluster: KafkaCluster,
) -> None:
    topic = "sandbox-imbalance"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap_servers)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, num_partitions=8, replication_factor=3)])
    finally:
        await admin.close()
    assert [error for _, error, *_ in response.topic_errors] == [0]
    before = await wait_for_partitions(kafka_cluster, topic, condition="fully in sync")
    assert len(before) == 8
    assert all(len(p["replicas"]) == 3 for p in before)
    preferred_on_0 = {p["partition"] for p in before if p["replicas"][0] == 0}
    assert preferred_on_0, f"broker 0 is no partition's preferred replica: {before}"

    producer = AIOKafkaProducer(bootstrap_servers=kafka_cluster.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for partition in range(8):
            await producer.send_and_wait(topic, b"kept across restarts", partition=partition)
    finally:
        await producer.stop()
    replicas_on_0 = {p["partition"] for p in before if 0 in p["replicas"]}
    segments = {n: kafka_cluster.broker_log_dir(0) / f"{topic}-{n}" / "00000000000000000000.log" for n in replicas_on_0}
    inodes = {n: os.stat(path).st_ino for n, path in segments.items()}

    await asyncio.to_thread(kafka_cluster.stop_broker, 0)
    assert not kafka_cluster.broker_running(0)
    assert not port_is_open(int(kafka_cluster.broker_address(0).rsplit(":", 1)[1]))
    await wait_for_partitions(kafka_cluster, topic, condition="led by other than 0")
    await asyncio.to_thread(kafka_cluster.start_broker, 0)
    assert kafka_cluster.broker_running(0)

    after = await wait_for_partitions(kafka_cluster, topic, condition="fully in sync")
    assert all(p["leader"] != p["replicas"][0] for p in after if p["partition"] in preferred_on_0)
    assert {n: os.stat(path).st_ino for n, path in segments.items()} == inodes
    assert all(path.stat().st_size > 0 for path in segments.values())

    deadline = time.monotonic() + 30
    while (imbalance := scrape(kafka_cluster.controller_metrics_target)[IMBALANCE]) < len(preferred_on_0):
        assert time.monotonic() < deadline, f"{IMBALANCE} stayed at {imbalance}"
        await asyncio.sleep(0.5)
    assert imbalance > 0


async def test_the_decision_stream_reaches_a_consumer_as_cloudevents(kafka_cluster: KafkaCluster) -> None:
    """`run --events-topic`'s sink with the real idempotent producer: each record arrives once, keyed by its
    object, as a structured CloudEvent."""
    topic = "autopilot-decisions"
    settings = KafkaSettings(bootstrap_servers=kafka_cluster.bootstrap_servers)
    sink = CloudEventSink(
        topic=topic, source="kafka-autopilot/test/agent-0", producer_factory=lambda: event_producer(settings)
    )
    records = [
        {"time": "2027-01-15T08:00:00.000Z", "event": "transition", "rule": "kafka-resize",
         "object": "kafka/data-kafka-0", "from": "Normal", "to": "Triggered", "dry_run": False},
        {"time": "2027-01-15T08:00:01.000Z", "event": "action-verified", "rule": "kafka-resize",
         "object": "kafka/data-kafka-0", "before": "400Gi", "after": "800Gi", "dry_run": False},
        {"time": "2027-01-15T08:00:02.000Z", "event": "action-dry-run", "rule": "kafka-resize",
         "object": "kafka/data-kafka-1", "before": "400Gi", "after": "800Gi", "dry_run": True},
    ]  # fmt: skip
    sending = asyncio.create_task(sink.run())
    for record in records:
        sink.offer(record)
    try:
        await asyncio.wait_for(sink.drained(), 60)
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
    received = await read_topic(settings, topic)
    events = sorted((json.loads(value) for _, value in received), key=lambda event: event["time"])
    assert [event["data"] for event in events] == records
    assert [event["type"] for event in events] == [
        "io.kafka-autopilot.transition",
        "io.kafka-autopilot.action.verified",
        "io.kafka-autopilot.action.dry-run",
    ]
    assert all(event["specversion"] == "1.0" and event["source"] == "kafka-autopilot/test/agent-0" for event in events)
    assert [event["dryrun"] for event in events] == [False, False, True]
    assert len({event["id"] for event in events}) == 3
    assert sorted(key for key, _ in received) == [
        b"kafka/data-kafka-0",
        b"kafka/data-kafka-0",
        b"kafka/data-kafka-1",
    ]
    command = [sys.executable, "-m", "agent.cli", "report", "--events-topic", topic, "--json"]
    reported = await asyncio.to_thread(
        subprocess.run, [*command, "--kafka", settings.bootstrap_servers], capture_output=True, text=True, timeout=120
    )
    assert reported.returncode == 0, reported.stderr
    assert json.loads(reported.stdout)["actions_by_rule_and_outcome"] == {"kafka-resize": {"dry-run": 1, "verified": 1}}


def test_stop_leaves_no_process_and_no_open_port(kafka_cluster: KafkaCluster) -> None:
    jvms = kafka_cluster.jvm_pids()
    ports = [int(a.rsplit(":", 1)[1]) for a in kafka_cluster.bootstrap_servers.split(",")]
    ports += [int(t.rsplit(":", 1)[1]) for t in kafka_cluster.metrics_targets.values()]
    ports += [kafka_cluster.layout.controller_port, int(kafka_cluster.controller_metrics_target.rsplit(":", 1)[1])]
    assert len(jvms) == 5

    kafka_cluster.stop()

    assert [name for name, pid in jvms.items() if Path(f"/proc/{pid}").exists()] == []
    assert [port for port in ports if port_is_open(port)] == []
    assert not kafka_cluster.controller_running()
    assert not any(kafka_cluster.broker_running(b) for b in kafka_cluster.broker_ids)
    assert list((kafka_cluster.work_dir / "run").glob("*.pid")) == []
