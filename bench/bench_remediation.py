"""Benchmark the agent's remediation latency in each deployment shape of the sandbox (issue 11's figures).

Why this exists: the agent's worth on a failed node or a lost leadership is how soon Kafka is whole again,
and that must hold in the shapes users run (`statefulset`, `strimzi`, `bitnami`), not only in the default.
Speed is measured here, never in a timed test.

    .venv/bin/python bench/bench_remediation.py [--shapes statefulset,strimzi,bitnami] [--runs 3]

Per shape, one sandbox (real Kubernetes with KWOK, Kafka, Prometheus) and one live agent, started as the
end-to-end tests start it (sandbox.scenarios.AgentProcess) with the shape's shipped rules
`kafka-node-failure.yaml` and `kafka-leader-rebalance.yaml` unchanged. Then `--runs` times each:

- leader rebalance: a topic with a known assignment (8 partitions, replication 3, each broker preferred
  for 2), a broker restarted (another one each run); measured from the imbalance being visible (the
  broker back in the ISR, leading none of its preferred partitions, the controller's imbalance count in
  Prometheus) until every partition is led by its preferred replica. Baseline: from the broker's start
  to the imbalance being visible, what Kafka and Prometheus take before anyone can act (with the agent
  stopped the measure itself is unbounded: the sandbox turns auto.leader.rebalance off).
- node failure: the node of another broker each run fails (heartbeat stopped, its broker killed);
  measured from the node being seen NotReady until the broker's pod is Running on another node.
  Baseline: from the heartbeat stop to NotReady, what Kubernetes itself takes to notice. Then the node is
  recovered, and the next run waits until it is schedulable again and the broker registered in Kafka.

Both moments are seen by polling the apiserver (every 0.2 s), as the tests see them. Ratios are taken per
run, then their median is printed. Exit 0 when every run completed, 1 when a run timed out or failed (each
named), 2 when a sandbox or the agent could not be set up (and on bad arguments, as argparse does). The
sandbox and the agent are always stopped, whatever happens.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.adapters.clock import WallClock
from agent.adapters.prometheus import PrometheusClient
from sandbox import shapes
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi
from sandbox.scenarios import (
    AgentProcess,
    away_from_preferred,
    create_topic,
    fail_node_until_broker_moves,
    imbalance,
    poll,
    restart_broker,
    schedulable_within,
    view,
    wait_for_visible_imbalance,
)

RULE_FILES = ("kafka-node-failure.yaml", "kafka-leader-rebalance.yaml")
TOPIC = "bench-rebalance"
PARTITIONS = 8
MOVE_TIMEOUT = 240.0
BALANCE_TIMEOUT = 150.0
RECOVERY_TIMEOUT = 120.0

Say = Callable[[str], None]


# --- what a run measures, and the table (pure) ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Measure:
    """What is timed and what it is set against, as the table names them."""

    name: str
    baseline: str


NODE_FAILURE = Measure(name="node NotReady -> broker Running elsewhere", baseline="heartbeat stop -> NotReady")
REBALANCE = Measure(name="imbalance visible -> balanced", baseline="broker restart -> imbalance visible")
MEASURES = (NODE_FAILURE, REBALANCE)


@dataclass(frozen=True, kw_only=True)
class Timing:
    """One completed run: the measure and its baseline, in seconds."""

    seconds: float
    baseline: float

    @property
    def ratio(self) -> float:
        return self.seconds / self.baseline if self.baseline > 0 else float("inf")


@dataclass(kw_only=True)
class ShapeResult:
    shape: str
    timings: dict[str, list[Timing]] = field(default_factory=lambda: {m.name: [] for m in MEASURES})
    failures: list[str] = field(default_factory=list)
    """Each run that timed out or failed, named: shape, measure, run and why."""


@dataclass(frozen=True, kw_only=True)
class Options:
    shapes: tuple[str, ...]
    runs: int


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--shapes",
        default=",".join(shapes.SHAPE_NAMES),
        help=f"comma-separated deployment shapes (default {','.join(shapes.SHAPE_NAMES)})",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each measure per shape (default 3)")
    options = parser.parse_args(argv)
    chosen = tuple(name.strip() for name in options.shapes.split(",") if name.strip())
    unknown = [name for name in chosen if name not in shapes.SHAPE_NAMES]
    if not chosen or unknown:
        parser.error(
            f"--shapes: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(shapes.SHAPE_NAMES)}"
        )
    if len(set(chosen)) != len(chosen):
        parser.error("--shapes: a shape is named twice")
    if options.runs < 1:
        parser.error("--runs must be at least 1")
    return Options(shapes=chosen, runs=options.runs)


def summary_row(shape: str, measure: Measure, timings: Sequence[Timing], *, wanted: int) -> list[str]:
    """One table row: median, min and max of the measure, the baseline's median, the median ratio."""
    runs = f"{len(timings)}/{wanted}"
    if not timings:
        return [shape, measure.name, runs, "-", "-", "-", "-", "-"]
    seconds = [timing.seconds for timing in timings]
    return [
        shape,
        measure.name,
        runs,
        f"{statistics.median(seconds):.1f}",
        f"{min(seconds):.1f}",
        f"{max(seconds):.1f}",
        f"{statistics.median(timing.baseline for timing in timings):.1f}",
        f"{statistics.median(timing.ratio for timing in timings):.2f}x",
    ]


def aligned(rows: Sequence[Sequence[str]]) -> Iterator[str]:
    """Rows as columns: the first two left-aligned (names), the rest right-aligned (figures)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        yield "  ".join(cells).rstrip()


def report(results: Sequence[ShapeResult], *, runs: int) -> list[str]:
    """The closing table, its legend and every failed run."""
    rows = [["shape", "measure", "runs", "median s", "min s", "max s", "baseline median s", "ratio"]]
    for result in results:
        rows += [summary_row(result.shape, m, result.timings[m.name], wanted=runs) for m in MEASURES]
    lines = list(aligned(rows))
    lines.append("")
    lines += [f"baseline of `{m.name}`: {m.baseline}" for m in MEASURES]
    lines.append("ratio: measure / baseline per run, median over the runs")
    failures = [failure for result in results for failure in result.failures]
    if failures:
        lines.append("")
        lines.append(f"{len(failures)} run(s) did not complete:")
        lines += [f"  {failure}" for failure in failures]
    return lines


def exit_code(results: Sequence[ShapeResult], *, setup_failed: bool) -> int:
    if setup_failed:
        return 2
    return 1 if any(result.failures for result in results) else 0


def broker_alone_on_its_node(brokers: Sequence[dict[str, Any]], *, used: set[int]) -> dict[str, Any] | None:
    """The lowest-id broker not failed yet whose node runs no other broker (failing it fails only it)."""
    per_node: dict[str, int] = {}
    for broker in brokers:
        per_node[broker["node"]] = per_node.get(broker["node"], 0) + 1
    for broker in sorted(brokers, key=lambda found: int(found["broker_id"])):
        if broker["broker_id"] not in used and per_node[broker["node"]] == 1:
            return broker
    return None


# --- the runs (against a live sandbox) -------------------------------------------------------------------


class SetupError(RuntimeError):
    """A sandbox or the agent could not be brought up: no figure of that shape can be trusted."""


def failed(result: ShapeResult, run: str, error: Exception, say: Say) -> None:
    """Name a run that timed out or failed, in the report and as it happens."""
    failure = f"{result.shape} {run}: {type(error).__name__}: {error}"
    result.failures.append(failure)
    say(f"FAILED {failure}")


def rebalance_runs(sandbox: Sandbox, runs: int, result: ShapeResult, say: Say) -> None:
    ids = sorted(int(broker["broker_id"]) for broker in sandbox.status()["brokers"])
    prometheus = PrometheusClient(url=sandbox.prometheus_url, clock=WallClock())
    create_topic(sandbox, TOPIC, {n: [ids[(n + k) % len(ids)] for k in range(3)] for n in range(PARTITIONS)})
    for run in range(1, runs + 1):
        broker = ids[(run - 1) % len(ids)]
        try:
            poll(
                lambda: not away_from_preferred(view(sandbox)), timeout=BALANCE_TIMEOUT, what="balanced before the run"
            )
            poll(lambda: imbalance(prometheus) == 0, timeout=60, what="the controller's imbalance at 0 before the run")
            started_at = restart_broker(sandbox, broker)
            wait_for_visible_imbalance(sandbox, prometheus, broker, topic=TOPIC)
            visible_at = time.monotonic()
            poll(
                lambda: not away_from_preferred(view(sandbox)),
                timeout=BALANCE_TIMEOUT,
                what="every partition led by its preferred replica",
                interval=0.2,
            )
            timing = Timing(seconds=time.monotonic() - visible_at, baseline=visible_at - started_at)
        except Exception as error:
            failed(result, f"rebalance run {run}/{runs} (broker {broker})", error, say)
            return
        result.timings[REBALANCE.name].append(timing)
        say(
            f"{result.shape}: rebalance run {run}/{runs}, broker {broker} restarted: "
            f"imbalance visible after {timing.baseline:.1f}s, balanced {timing.seconds:.1f}s later"
        )


def node_failure_runs(sandbox: Sandbox, api: KubeApi, runs: int, result: ShapeResult, say: Say) -> None:
    used: set[int] = set()
    for run in range(1, runs + 1):
        broker = broker_alone_on_its_node(sandbox.status()["brokers"], used=used)
        if broker is None:
            result.failures.append(f"{result.shape} node-failure run {run}: no broker left alone on its node")
            return
        broker_id, node = int(broker["broker_id"]), str(broker["node"])
        used.add(broker_id)
        try:
            try:
                failure = fail_node_until_broker_moves(
                    sandbox, api, node=node, pod=broker["pod"], namespace=broker["namespace"], timeout=MOVE_TIMEOUT
                )
            finally:
                sandbox.fault("recover-node", node)
            timing = Timing(seconds=failure.not_ready_to_running, baseline=failure.heartbeat_to_not_ready)
            say(
                f"{result.shape}: node-failure run {run}/{runs}, {node} (broker {broker_id}): NotReady after "
                f"{timing.baseline:.1f}s, broker Running on {failure.moved['spec']['nodeName']} "
                f"{timing.seconds:.1f}s later"
            )
            schedulable_within(api, node, seconds=RECOVERY_TIMEOUT, what=f"{node} schedulable again")
            poll(
                functools.partial(sandbox.kafka.broker_running, broker_id),
                timeout=RECOVERY_TIMEOUT,
                what=f"broker {broker_id} running",
            )
            sandbox.kafka.wait_for_brokers([broker_id], timeout_seconds=RECOVERY_TIMEOUT)
        except Exception as error:
            failed(result, f"node-failure run {run}/{runs} ({node}, broker {broker_id})", error, say)
            return
        result.timings[NODE_FAILURE.name].append(timing)


def bench_shape(shape: str, *, runs: int, work_dir: Path, say: Say) -> ShapeResult:
    result = ShapeResult(shape=shape)
    sandbox = Sandbox(work_dir=work_dir / shape, shape=shape)
    agent: AgentProcess | None = None
    try:
        try:
            say(f"{shape}: bringing the sandbox up")
            sandbox.up(progress=lambda message: say(f"{shape}: sandbox: {message}"))
            rules_dir = Path(sandbox.status()["rules_dir"])
            agent = AgentProcess(
                sandbox=sandbox,
                rules=[rules_dir / name for name in RULE_FILES],
                audit_path=work_dir / f"{shape}-audit.jsonl",
            )
            agent.start()
            say(f"{shape}: agent ready with {', '.join(RULE_FILES)} from {rules_dir}")
        except Exception as error:
            raise SetupError(f"{shape}: {type(error).__name__}: {error}") from error
        rebalance_runs(sandbox, runs, result, say)
        node_failure_runs(sandbox, sandbox.kube.api(), runs, result, say)
        return result
    finally:
        if agent is not None:
            agent.stop()
        say(f"{shape}: taking the sandbox down")
        sandbox.down(progress=lambda message: None)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    os.environ.setdefault("KAFKA_AUTOPILOT_SANDBOX_TTL", "3600")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refused connections to a stopped broker: expected
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[+{time.monotonic() - started:6.1f}s] {message}", flush=True)

    work_dir = Path(tempfile.mkdtemp(prefix="kafka-autopilot-bench-"))
    print("kafka-autopilot bench: remediation latency per deployment shape (live sandbox and agent)")
    print(
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"shapes {', '.join(options.shapes)}; {options.runs} runs of each measure; work dir {work_dir}",
        flush=True,
    )
    results: list[ShapeResult] = []
    setup_failed = False
    try:
        for shape in options.shapes:
            try:
                results.append(bench_shape(shape, runs=options.runs, work_dir=work_dir, say=say))
            except SetupError as error:
                say(f"SETUP FAILED {error}")
                setup_failed = True
                break
    finally:
        print()
        print(f"remediation latency in seconds ({time.monotonic() - started:.0f}s in all)")
        for line in report(results, runs=options.runs):
            print(line)
        code = exit_code(results, setup_failed=setup_failed)
        if code == 0:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"logs and audit trails kept in {work_dir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
