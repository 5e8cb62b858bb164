"""Fixtures shared by the test modules: each module that asks gets its own real environment.

Missing binaries fail the test with the installer to run: a skipped test never counts as passing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from sandbox.environment import Sandbox
from sandbox.kafka import KafkaCluster, KafkaDistribution
from sandbox.process import SandboxProcessError

# Fixtures that start or build a real program: a test that uses one is marked `sandbox`, so the fast
# selection (`-m "not sandbox and not prometheus"`) never waits for Kafka or an image build.
REAL_ENVIRONMENT_FIXTURES = frozenset({"sandbox", "shaped_sandbox", "kafka_cluster", "built"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_ENVIRONMENT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.sandbox)


def timed_progress() -> Callable[[str], None]:
    """Print each bring-up step with the seconds since the first, so slow steps show in the test log."""
    started = time.monotonic()
    return lambda message: print(f"[sandbox +{time.monotonic() - started:5.1f}s] {message}", flush=True)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The whole sandbox (Kubernetes + KWOK, Kafka, Prometheus, storage twin), up for one module."""
    os.environ.setdefault("KAFKA_AUTOPILOT_SANDBOX_TTL", "3600")
    environment = Sandbox(work_dir=tmp_path_factory.mktemp("sandbox"))
    try:
        environment.up(progress=timed_progress())
        yield environment
    finally:
        environment.down(progress=lambda message: None)


@pytest.fixture(scope="module")
def shaped_sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The whole sandbox in the shape given by indirect parametrization (`statefulset`, `strimzi`,
    `bitnami`), up for one module and shape: `@pytest.mark.parametrize("shaped_sandbox", [...],
    indirect=True, scope="module")`."""
    os.environ.setdefault("KAFKA_AUTOPILOT_SANDBOX_TTL", "3600")
    shape: str = request.param
    environment = Sandbox(work_dir=tmp_path_factory.mktemp(f"sandbox-{shape}"), shape=shape)
    try:
        environment.up(progress=timed_progress())
        yield environment
    finally:
        environment.down(progress=lambda message: None)


@pytest.fixture(scope="module")
def kafka_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A real KRaft cluster (controller + brokers 0-3) without Kubernetes, up for one module; with the
    TLS listener (client certificates required) when the module sets `KAFKA_TLS_LISTENER = True`."""
    try:
        KafkaDistribution.from_cache()
    except SandboxProcessError as missing:
        pytest.fail(f"{missing} (run scripts/fetch-kafka.sh, or `make test`)")
    kafka = KafkaCluster(
        work_dir=tmp_path_factory.mktemp("kafka"),
        ttl_seconds=1800,
        tls_listener=getattr(request.module, "KAFKA_TLS_LISTENER", False),
    )
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.stop()
