"""Leader election against a real kube-apiserver: two electors in one process, one Lease.

Only the control plane runs. The apiserver's optimistic concurrency (resourceVersion, 409) decides
who wins a race; the electors' own clocks decide when a silent leader's Lease has expired. A short
lease (4 s: renew deadline 2.7 s, retry period 0.53 s) keeps the tests quick; each test uses a
Lease of its own in one namespace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.adapters.clock import WallClock
from agent.adapters.kubernetes import ConflictError, KubeClient, connect
from agent.audit.trail import AuditRecord, AuditTrail
from agent.core.leadership import LeaseRecord, Timing
from agent.runtime.leadership import ElectionSettings, LeaderElector, LeaseNamespaceMissingError
from agent.runtime.telemetry import Telemetry
from sandbox.kube import KubeApi, KubeControlPlane, ensure_binaries

pytestmark = pytest.mark.sandbox

NAMESPACE = "ha-test"
TIMING = Timing.for_lease(4)
SLACK = 3.0
"""Seconds allowed on top of the protocol's bounds, for a loaded 2-core machine."""


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    control_plane = KubeControlPlane(
        work_dir=tmp_path_factory.mktemp("kube"), binaries=ensure_binaries(build=False), node_count=1, ttl_seconds=900
    )
    control_plane.start()
    try:
        control_plane.api().create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        yield control_plane
    finally:
        control_plane.stop()


@pytest.fixture
def api(plane: KubeControlPlane) -> KubeApi:
    return plane.api()


@pytest.fixture
async def clients(plane: KubeControlPlane) -> AsyncIterator[tuple[KubeClient, KubeClient]]:
    first = await connect(kubeconfig=plane.kubeconfig_path, clock=WallClock())
    second = await connect(kubeconfig=plane.kubeconfig_path, clock=WallClock())
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


class Replica:
    """One elector with its own connection, audit records and metrics."""

    def __init__(self, kube: KubeClient, *, identity: str, lease: str, namespace: str = NAMESPACE) -> None:
        self.records: list[AuditRecord] = []
        self.telemetry = Telemetry()
        self.elector = LeaderElector(
            leases=kube,
            settings=ElectionSettings(namespace=namespace, lease_name=lease, identity=identity, timing=TIMING),
            clock=WallClock(),
            trail=AuditTrail(stream=open("/dev/null", "w"), listener=self.records.append),  # noqa: SIM115
            telemetry=self.telemetry,
        )
        self.lost: list[str] = []
        self.lost_at: list[float] = []
        """When each loss was noticed (the step-down itself, not when a test got round to looking)."""

    def outcomes(self) -> list[str]:
        return [record["outcome"] for record in self.records if record["event"] == "leadership"]

    def keep(self) -> asyncio.Task[str]:
        return asyncio.create_task(self.elector.keep(on_lost=self._on_lost))

    def _on_lost(self, reason: str) -> None:
        self.lost_at.append(time.time())
        self.lost.append(reason)


def lease_spec(api: KubeApi, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{name}")["spec"]
    return spec


def epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def first_to_lead(a: Replica, b: Replica) -> tuple[Replica, Replica, asyncio.Task[None]]:
    """Both try; returns (leader, standby, the standby's still-running acquire task)."""
    tasks = {asyncio.create_task(a.elector.acquire()): a, asyncio.create_task(b.elector.acquire()): b}
    done, pending = await asyncio.wait(tasks, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1, f"{len(done)} replicas acquired the Lease at once"
    (won,) = done
    won.result()
    (other,) = pending
    return tasks[won], tasks[other], other


async def test_exactly_one_of_two_leads_and_keeps_renewing(
    clients: tuple[KubeClient, KubeClient], api: KubeApi
) -> None:
    a = Replica(clients[0], identity="replica-a", lease="one-leader")
    b = Replica(clients[1], identity="replica-b", lease="one-leader")
    leader, standby, waiting = await first_to_lead(a, b)
    keeping = leader.keep()
    try:
        first = lease_spec(api, "one-leader")
        await asyncio.sleep(TIMING.lease_duration * 2)
        assert not waiting.done(), "the standby took a Lease that was being renewed"
        assert not keeping.done()
        spec = lease_spec(api, "one-leader")
        assert spec["holderIdentity"] == leader.elector.settings.identity
        assert spec["leaseDurationSeconds"] == 4
        assert spec.get("leaseTransitions", 0) == 0  # the apiserver omits a 0
        assert spec["acquireTime"] == first["acquireTime"]
        assert epoch(spec["renewTime"]) > epoch(first["renewTime"])
        assert leader.elector.leading and not standby.elector.leading
        assert leader.telemetry.value("kafka_autopilot_leader") == 1
        assert standby.telemetry.value("kafka_autopilot_leader") == 0
        assert "kafka_autopilot_leader 1" in leader.telemetry.render()
        assert leader.outcomes() == ["acquired"]
        assert standby.outcomes() == ["standby"]
        assert standby.records[0]["to"] == leader.elector.settings.identity
    finally:
        keeping.cancel()
        waiting.cancel()
        await asyncio.gather(keeping, waiting, return_exceptions=True)


async def test_the_standby_takes_over_within_the_lease_duration_when_the_leader_stops_renewing(
    clients: tuple[KubeClient, KubeClient], api: KubeApi
) -> None:
    a = Replica(clients[0], identity="replica-a", lease="takeover")
    b = Replica(clients[1], identity="replica-b", lease="takeover")
    leader, standby, waiting = await first_to_lead(a, b)
    keeping = leader.keep()
    await asyncio.sleep(TIMING.retry_period * 3)
    keeping.cancel()  # the leader falls silent, as a killed process
    await asyncio.gather(keeping, return_exceptions=True)
    silent_at = time.time()
    last_renewal = epoch(lease_spec(api, "takeover")["renewTime"])
    await asyncio.wait_for(waiting, timeout=TIMING.lease_duration + TIMING.retry_period + SLACK + 10)
    took_over = time.time() - silent_at
    print(f"\nTAKEOVER after the leader fell silent: {took_over:.2f}s (lease duration {TIMING.lease_duration:g}s)")
    assert standby.elector.leading
    assert standby.elector.acquired_at is not None
    assert standby.elector.acquired_at - last_renewal >= TIMING.lease_duration - 0.05, "took over a live Lease"
    assert took_over <= TIMING.lease_duration + TIMING.retry_period + SLACK
    spec = lease_spec(api, "takeover")
    assert spec["holderIdentity"] == standby.elector.settings.identity
    assert spec["leaseTransitions"] == 1
    assert epoch(spec["acquireTime"]) >= last_renewal
    assert standby.outcomes() == ["standby", "acquired"]
    # The old leader wakes up (a paused process): its first look shows someone else holds the Lease.
    reason = await asyncio.wait_for(leader.elector.keep(on_lost=leader.lost.append), timeout=10)
    assert "replica-b" in reason or "renew deadline" in reason
    assert leader.lost == [reason]
    assert not leader.elector.leading
    assert leader.outcomes() == ["acquired", "lost"]
    assert leader.telemetry.value("kafka_autopilot_leader") == 0


async def test_a_conflicting_write_loses_cleanly(clients: tuple[KubeClient, KubeClient], api: KubeApi) -> None:
    now = time.time()
    first = await clients[0].create_lease(
        namespace=NAMESPACE,
        name="conflict",
        record=LeaseRecord(holder="ghost", duration_seconds=4, acquire_time=now, renew_time=now, transitions=0),
    )
    await clients[1].replace_lease(first, LeaseRecord(holder="replica-b", duration_seconds=4, renew_time=now))
    with pytest.raises(ConflictError) as refused:
        await clients[0].replace_lease(first, LeaseRecord(holder="replica-a", duration_seconds=4, renew_time=now))
    assert refused.value.status == 409
    assert "PUT leases ha-test/conflict" in str(refused.value)
    assert lease_spec(api, "conflict")["holderIdentity"] == "replica-b"
    with pytest.raises(ConflictError):
        await clients[0].create_lease(namespace=NAMESPACE, name="conflict", record=LeaseRecord(holder="replica-a"))


async def test_two_replicas_racing_for_an_abandoned_lease_make_one_transition(
    clients: tuple[KubeClient, KubeClient], api: KubeApi
) -> None:
    long_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api.create(
        f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases",
        {
            "metadata": {"name": "race"},
            "spec": {
                "holderIdentity": "ghost",
                "leaseDurationSeconds": 4,
                "acquireTime": long_ago,
                "renewTime": long_ago,
                "leaseTransitions": 7,
            },
        },
    )
    a = Replica(clients[0], identity="replica-a", lease="race")
    b = Replica(clients[1], identity="replica-b", lease="race")
    leader, standby, waiting = await first_to_lead(a, b)
    keeping = leader.keep()
    try:
        await asyncio.sleep(TIMING.lease_duration * 1.5)
        assert not waiting.done()
        spec = lease_spec(api, "race")
        assert spec["holderIdentity"] == leader.elector.settings.identity
        assert spec["leaseTransitions"] == 8
        assert not standby.elector.leading
        assert standby.outcomes()[-1] == "standby"
    finally:
        keeping.cancel()
        waiting.cancel()
        await asyncio.gather(keeping, waiting, return_exceptions=True)


async def test_a_released_lease_is_taken_over_at_the_next_look(
    clients: tuple[KubeClient, KubeClient], api: KubeApi
) -> None:
    a = Replica(clients[0], identity="replica-a", lease="release")
    b = Replica(clients[1], identity="replica-b", lease="release")
    leader, standby, waiting = await first_to_lead(a, b)
    await asyncio.sleep(TIMING.retry_period * 2)
    released_at = time.time()
    assert await leader.elector.release()
    await asyncio.wait_for(waiting, timeout=TIMING.lease_duration)
    handed_over = time.time() - released_at
    print(f"\nHANDOVER after a release: {handed_over:.2f}s")
    assert handed_over < TIMING.retry_period + SLACK
    spec = lease_spec(api, "release")
    assert spec["holderIdentity"] == standby.elector.settings.identity
    assert spec["leaseTransitions"] == 1
    assert leader.outcomes() == ["acquired", "released"]


async def test_a_missing_namespace_is_named(clients: tuple[KubeClient, KubeClient]) -> None:
    replica = Replica(clients[0], identity="replica-a", lease="nowhere", namespace="no-such-namespace")
    with pytest.raises(LeaseNamespaceMissingError, match="namespace 'no-such-namespace' does not exist"):
        await asyncio.wait_for(replica.elector.acquire(), timeout=20)
    assert await clients[0].ensure_namespace("made-by-the-agent") is True
    assert await clients[0].ensure_namespace("made-by-the-agent") is False


async def test_a_leader_cut_off_from_the_apiserver_stops_within_the_renew_deadline(
    plane: KubeControlPlane, clients: tuple[KubeClient, KubeClient]
) -> None:
    leader = Replica(clients[0], identity="replica-a", lease="cut-off")
    await asyncio.wait_for(leader.elector.acquire(), timeout=20)
    keeping = leader.keep()
    await asyncio.sleep(TIMING.retry_period * 2)
    try:
        # kube-apiserver keeps answering for a while during its graceful shutdown, and the leader keeps
        # renewing then: the deadline runs from its last successful renewal, not from the stop.
        await asyncio.to_thread(plane.stop_apiserver)
        gone_at = time.time()
        reason = await asyncio.wait_for(keeping, timeout=TIMING.renew_deadline + TIMING.retry_period + SLACK + 10)
        assert "renew deadline" in reason
        assert leader.lost == [reason]
        stepped_down_at = leader.lost_at[0]
        print(f"\nSTEP-DOWN after the apiserver was gone: {stepped_down_at - gone_at:.2f}s")
        assert stepped_down_at - gone_at <= TIMING.renew_deadline + SLACK
        assert not leader.elector.leading
        assert leader.outcomes() == ["acquired", "lost"]
    finally:
        keeping.cancel()
        await asyncio.to_thread(plane.start_apiserver)
    api = plane.api()
    last_renewed = await asyncio.to_thread(lambda: epoch(lease_spec(api, "cut-off")["renewTime"]))
    print(
        f"STEP-DOWN after its last renewal: {stepped_down_at - last_renewed:.2f}s (deadline {TIMING.renew_deadline:g}s)"
    )
    assert 0 < stepped_down_at - last_renewed <= TIMING.renew_deadline + SLACK
