"""Preferred-leader rebalance end to end: the shipped rule, the agent as a subprocess, real Kafka.

The sandbox's brokers run with auto.leader.rebalance.enable=false, so a broker stopped and started
again (the sandbox's stop-broker / start-broker faults) leads none of the partitions it is preferred
for. With `rules/kafka-leader-rebalance.yaml` as shipped, the agent learns each pod's broker id from
Kafka (the brokers advertise their pod's IP), sees that broker's leader count far below the mean while
the controller reports an imbalance, and elects its preferred partitions.

- live, three times (brokers 1, 2, 3: each its own object, so no cooldown is in the way): Kafka's
  metadata ends with every partition led by its first replica and the controller's
  PreferredReplicaImbalanceCount back at 0. The time from "imbalance visible" (the broker back in
  the ISR of its partitions and Prometheus showing the imbalance) to "balanced" (both of the
  former) is printed per run, with the median (pytest -s shows it);
- dry-run (broker 0): the audit trail shows the planned election, the leaders stay where they are,
  no broker receives an ElectLeaders request (the brokers' own request meters, with a positive
  control afterwards), and the agent mutates nothing in Kubernetes but its own objects.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from e2e_support import (
    AGENTS_OWN_RESOURCES,
    RULES,
    AgentProcess,
    agent_mutations,
    audit_log_entries,
)
from elect_metrics import elect_requests
from helpers import eventually

from agent.adapters.clock import WallClock
from agent.adapters.kafka import KafkaAdmin, KafkaSettings
from agent.adapters.prometheus import PrometheusClient
from agent.core.kafka_safety import ClusterView, preferred_leader_candidates
from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.scenarios import (
    IMBALANCE,
    away_from_preferred,
    create_topic,
    imbalance,
    restart_broker,
    view,
    wait_for_visible_imbalance,
)

pytestmark = pytest.mark.sandbox

SHIPPED_RULE = RULES / "kafka-leader-rebalance.yaml"
TOPIC = "rebalance-e2e"
PARTITIONS = 12
# Partition n prefers broker n % 4: each broker is the preferred leader of three partitions.
ASSIGNMENT = {n: [n % 4, (n + 1) % 4, (n + 2) % 4] for n in range(PARTITIONS)}

balance_times: list[float] = []


def leaders(current: ClusterView) -> dict[str, int | None]:
    return {p.name: p.leader for p in current.partitions}


@pytest.fixture(scope="module")
def prometheus(sandbox: Sandbox) -> PrometheusClient:
    return PrometheusClient(url=sandbox.prometheus_url, clock=WallClock())


@pytest.fixture(scope="module")
def topic(sandbox: Sandbox, prometheus: PrometheusClient) -> str:
    create_topic(sandbox, TOPIC, ASSIGNMENT)
    eventually(
        lambda: (
            sum(1 for p in view(sandbox).partitions if p.topic == TOPIC) == PARTITIONS
            and not away_from_preferred(view(sandbox))
        ),
        timeout=60,
        what=f"{TOPIC} created and led by its preferred replicas",
    )
    eventually(lambda: imbalance(prometheus) == 0, timeout=60, what=f"{IMBALANCE} at 0 before any restart")
    return TOPIC


@pytest.fixture(scope="module")
def rule_files() -> list[Path]:
    """The shipped rule, unchanged."""
    return [SHIPPED_RULE]


@pytest.fixture(scope="module")
def agent(
    sandbox: Sandbox, topic: str, rule_files: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    with AgentProcess(
        sandbox=sandbox, rules=rule_files, audit_path=tmp_path_factory.mktemp("agent") / "audit.jsonl"
    ) as process:
        yield process


@pytest.mark.parametrize("broker", [1, 2, 3])
def test_the_agent_restores_preferred_leaders_after_a_restart(
    sandbox: Sandbox, prometheus: PrometheusClient, agent: AgentProcess, broker: int
) -> None:
    restart_broker(sandbox, broker)
    before = wait_for_visible_imbalance(sandbox, prometheus, broker, topic=TOPIC)
    visible_at = time.monotonic()
    assert {(TOPIC, n) for n in ASSIGNMENT if n % 4 == broker} <= set(
        preferred_leader_candidates(before, broker_id=broker)
    )

    eventually(
        lambda: not away_from_preferred(view(sandbox)),
        timeout=150,
        what="every partition led by its first replica",
        interval=0.2,
    )
    metadata_at = time.monotonic()
    eventually(lambda: imbalance(prometheus) == 0, timeout=60, what=f"{IMBALANCE} back at 0", interval=0.2)
    balanced_at = time.monotonic()

    balance_times.append(balanced_at - visible_at)
    print(
        f"\nREBALANCE broker {broker}: imbalance visible -> metadata balanced {metadata_at - visible_at:.1f}s, "
        f"-> {IMBALANCE} 0 {balanced_at - visible_at:.1f}s"
    )
    verified = eventually(
        lambda: [
            r
            for r in agent.records()
            if r["event"] == "action-verified" and r["object"] == f"{workload.NAMESPACE}/{workload.pod_name(broker)}"
        ],
        timeout=30,
        what=f"the election for broker {broker} verified in the audit trail",
    )
    print(f"REBALANCE broker {broker} outcome: {verified[-1]['reason']}")
    assert f"broker {broker} leads its" in verified[-1]["reason"], verified[-1]
    assert all(p.leader == p.preferred_leader for p in view(sandbox).partitions)


def test_the_median_time_to_balance_is_reported() -> None:
    assert len(balance_times) == 3, balance_times
    print(
        f"\nREBALANCE imbalance visible -> balanced, median of {balance_times}: {statistics.median(balance_times):.1f}s"
    )


def test_dry_run_plans_the_election_and_changes_nothing(
    sandbox: Sandbox, prometheus: PrometheusClient, agent: AgentProcess, rule_files: list[Path], tmp_path: Path
) -> None:
    agent.stop()
    broker = 0
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    requests_before = elect_requests(sandbox.kafka)
    dry = AgentProcess(sandbox=sandbox, rules=rule_files, audit_path=tmp_path / "dry.jsonl", dry_run=True)
    dry.start()
    try:
        restart_broker(sandbox, broker)
        before = wait_for_visible_imbalance(sandbox, prometheus, broker, topic=TOPIC)
        planned = eventually(
            lambda: [
                r for r in dry.records() if r["event"] == "mutation-recorded" and r["action"] == "ElectPreferredLeaders"
            ],
            timeout=90,
            what="the planned election in the dry-run audit trail",
        )
        print(f"\nDRY-RUN recorded: {planned[0]['after']}")
        assert planned[0]["after"].startswith(f"elect preferred leader (broker {broker}) of"), planned[0]
        for n in (0, 4, 8):
            assert f"{TOPIC}-{n}" in planned[0]["after"]
        assert eventually(
            lambda: [
                r
                for r in dry.records()
                if r["event"] == "action-dry-run" and r["object"] == f"{workload.NAMESPACE}/{workload.pod_name(broker)}"
            ],
            timeout=30,
            what="the dry-run outcome",
        )
        time.sleep(5)  # an election would have shown by now
        after = view(sandbox)
        assert leaders(after) == leaders(before)
        assert away_from_preferred(after), "the leaders stayed away from broker 0"
        assert (imbalance(prometheus) or 0) > 0
        # Broker 0's meters restarted from nothing with it; the others' must not have moved.
        requests_after = elect_requests(sandbox.kafka)
        unchanged = {key: value for key, value in requests_before.items() if key[0] != broker and value > 0}
        assert {key: value for key, value in requests_after.items() if value > 0} == unchanged, (
            requests_before,
            requests_after,
        )
        time.sleep(2)
        touched = {
            entry["objectRef"].get("resource") for entry in agent_mutations(audit_log_entries(sandbox), since=since)
        }
        assert touched <= AGENTS_OWN_RESOURCES, touched
    finally:
        dry.stop()

    # Positive control: the same meters do count an election, so their silence above was real.
    candidates = preferred_leader_candidates(view(sandbox), broker_id=broker)
    asyncio.run(_elect(sandbox.kafka.bootstrap_servers, candidates))
    counted = eventually(
        lambda: sum(elect_requests(sandbox.kafka).values()) > sum(requests_after.values()),
        timeout=30,
        what="the ElectLeaders meters counting our own request",
    )
    assert counted
    eventually(lambda: not away_from_preferred(view(sandbox)), timeout=60, what="balanced after the control election")


async def _elect(bootstrap: str, partitions: list[tuple[str, int]]) -> None:
    async with KafkaAdmin(settings=KafkaSettings(bootstrap_servers=bootstrap)) as kafka:
        results = await kafka.elect_preferred_leaders(partitions)
    assert all(r.done for r in results), [r.describe() for r in results]
