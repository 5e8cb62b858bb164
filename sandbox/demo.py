"""`kafka-autopilot demo`: the reference scenario, played live in the sandbox.

The vendor papers' table: 400Gi -> 800Gi -> 1Ti (capped at maxsize) -> declined at maxsize.

The sandbox comes up (installing what is missing), the agent runs in this process with the reference
rule exactly as shipped, and the storage twin ingests 1 GiB/s into each of the 4 Kafka PVCs. The
table plays out as the rule dictates, cooldowns included (5 minutes each, the vendor default):

    step 1  usage passes 80% of 400Gi  -> resized by 100% to 800Gi
    step 2  usage passes 80% of 800Gi  -> resized, capped at maxsize 1Ti
    step 3  usage passes 80% of 1Ti    -> declined: at maxsize

With --dry-run the agent decides the same first step and records it, and nothing changes: the demo
stops once every PVC has its dry-run record and shows that the PVCs are still 400Gi.

Every run starts from a fresh sandbox of its own (`.cache/demo`, apart from `kafka-autopilot sandbox`'s):
what a previous run left (PVCs already grown, rule states, cooldowns) is removed first, and the demo
says so. With --keep the sandbox stays up afterwards for a look around, until the next run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from agent.adapters.kafka import KafkaSettings
from agent.audit.evaluations import EvaluationAuditing
from agent.audit.timeline import Timeline
from agent.audit.trail import AuditRecord
from agent.runtime.main import PrometheusSettings, RunOptions, run_agent
from sandbox import shapes, workload
from sandbox.environment import Sandbox, default_work_dir

REFERENCE_RULE = Path(__file__).resolve().parents[1] / "rules" / "kafka-resize.yaml"
GIB = 1024**3
BROKERS = 4
START_USED_GIB = 300
INGEST_GIB_PER_SECOND = 1
TIME_LIMIT_SECONDS = 30 * 60


@dataclass
class Scoreboard:
    """What happened to each PVC, from the audit records, for the closing table."""

    results: dict[str, list[str]] = field(default_factory=dict)
    declined: set[str] = field(default_factory=set)
    dry_run: set[str] = field(default_factory=set)

    def note(self, record: AuditRecord) -> None:
        claim = str(record.get("object"))
        event = record.get("event")
        if event == "action-verified":
            self.results.setdefault(claim, []).append(f"{record['before']} -> {record['after']}")
        elif event == "action-declined":
            self.declined.add(claim)
            self.results.setdefault(claim, []).append(f"declined: {record['reason']}")
        elif event == "action-dry-run":
            self.dry_run.add(claim)
            self.results.setdefault(claim, []).append(f"dry-run: {record['before']} -> {record['after']}")


def _claims() -> list[str]:
    return [f"{workload.NAMESPACE}/{workload.pvc_name(broker)}" for broker in range(BROKERS)]


def demo_work_dir() -> Path:
    return default_work_dir().parent / "demo"


async def play(*, dry_run: bool, as_json: bool, keep: bool, out: TextIO, progress: Callable[[str], None]) -> int:
    sandbox = Sandbox(work_dir=demo_work_dir(), shape=shapes.DEFAULT_SHAPE)  # the reference scenario's shape
    if sandbox.work_dir.exists():
        progress(f"starting from a fresh sandbox: removing what the last demo left in {sandbox.work_dir}")
        await asyncio.to_thread(sandbox.reset, progress=progress)
    else:
        progress(f"starting from a fresh sandbox in {sandbox.work_dir}")
    status = await asyncio.to_thread(sandbox.up, progress=progress)
    twin = sandbox.twin_client()
    board = Scoreboard()
    timeline = Timeline()

    def on_record(record: AuditRecord) -> None:
        board.note(record)
        if as_json:
            print(json.dumps(record, default=str), file=out, flush=True)
        elif (line := timeline.line(record)) is not None:
            print(line, file=out, flush=True)

    for broker in range(BROKERS):
        claim = workload.pvc_name(broker)
        twin.set_used(namespace=workload.NAMESPACE, pvc=claim, used_bytes=START_USED_GIB * GIB)
        twin.set_ingest(namespace=workload.NAMESPACE, pvc=claim, bytes_per_second=INGEST_GIB_PER_SECOND * GIB)
    progress(
        f"ingest {INGEST_GIB_PER_SECOND} GiB/s into each of {BROKERS} PVCs of 400Gi, from {START_USED_GIB}Gi; "
        f"the rule is {REFERENCE_RULE.name}, unchanged (cooldown 300s)"
    )
    stop = asyncio.Event()
    with open(os.devnull, "w", encoding="utf-8") as nowhere:  # records reach the screen through on_record
        return await _run(
            sandbox,
            status=status,
            board=board,
            on_record=on_record,
            stop=stop,
            nowhere=nowhere,
            dry_run=dry_run,
            keep=keep,
            progress=progress,
        )


async def _run(
    sandbox: Sandbox,
    *,
    status: dict[str, Any],
    board: Scoreboard,
    on_record: Callable[[AuditRecord], None],
    stop: asyncio.Event,
    nowhere: TextIO,
    dry_run: bool,
    keep: bool,
    progress: Callable[[str], None],
) -> int:
    twin = sandbox.twin_client()
    options = RunOptions(
        rule_paths=[REFERENCE_RULE],
        kubeconfig=Path(status["kubeconfig"]),
        prometheus=PrometheusSettings(url=status["prometheus_url"]),
        kafka=KafkaSettings(bootstrap_servers=status["kafka_bootstrap"]),
        dry_run=dry_run,
        listen_port=int(status["agent_listen"].rsplit(":", 1)[1]),
        install_crds=True,
        audit_stream=nowhere,
        audit_evaluations=EvaluationAuditing.parse("all"),  # the timeline shows each transition's current values
    )
    agent = asyncio.create_task(run_agent(options, stop=stop, listener=on_record))
    started = time.monotonic()
    finished = board.dry_run if dry_run else board.declined
    last_note = started
    try:
        while len(finished & set(_claims())) < BROKERS:
            if agent.done():
                progress("the agent stopped early")
                return 1
            if time.monotonic() - started > TIME_LIMIT_SECONDS:
                progress(f"not finished within {TIME_LIMIT_SECONDS}s")
                return 1
            if time.monotonic() - last_note > 60:
                last_note = time.monotonic()
                progress(f"{time.monotonic() - started:.0f}s: waiting (cooldowns are 300s, as the rule says)")
            await asyncio.sleep(1)
    finally:
        stop.set()
        await asyncio.gather(agent, return_exceptions=True)
        for broker in range(BROKERS):
            twin.set_ingest(namespace=workload.NAMESPACE, pvc=workload.pvc_name(broker), bytes_per_second=0)
        capacities = _capacities(sandbox)
        if keep:
            progress(
                f"the sandbox stays up in {sandbox.work_dir};"
                f" stop it with `kafka-autopilot sandbox --work-dir {sandbox.work_dir} down`"
            )
        else:
            await asyncio.to_thread(sandbox.down, progress=progress)
    print("", file=sys.stderr)
    for claim in _claims():
        print(
            f"{claim:<20} {' | '.join(board.results.get(claim, []))}   (capacity now {capacities.get(claim)})",
            file=sys.stderr,
        )
    expected = ["400Gi -> 800Gi", "800Gi -> 1Ti (capped at maxsize)"]
    if dry_run:
        ok = all(capacities.get(claim) == "400Gi" for claim in _claims())
    else:
        ok = all(board.results.get(claim, [])[:2] == expected for claim in _claims())
    print(f"# {'matches' if ok else 'does NOT match'} the reference table", file=sys.stderr)
    return 0 if ok else 1


def _capacities(sandbox: Sandbox) -> dict[str, str]:
    api = sandbox.kube.api()
    found = api.get(f"/api/v1/namespaces/{workload.NAMESPACE}/persistentvolumeclaims")["items"]
    return {
        f"{claim['metadata']['namespace']}/{claim['metadata']['name']}": claim["status"]["capacity"]["storage"]
        for claim in found
    }
