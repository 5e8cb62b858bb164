"""Benchmark the agent against a big shared cluster on the real sandbox apiserver (issue 13's figures).

Why this exists: Kafka usually runs inside a big shared cluster, and what the agent costs there (cycle
time against its poll interval, memory, requests to the apiserver, how soon it acts) grows with the
cluster unless it is built not to. Speed is measured here, never in a timed test.

    .venv/bin/python bench/bench_cluster.py [--scale 1.0] [--runs 3] [--steady-cycles 10] [--crossings 3]

At `--scale 1.0` it brings up Kubernetes (etcd, kube-apiserver, controller-manager, scheduler) with 1,000
KWOK nodes and Prometheus (`Sandbox.up_kubernetes`; no Kafka: the reference rule does not need it), then
creates, with bounded concurrency: 10,000 Bound PVCs labelled `app: kafka` in 10 namespaces, 1,000 broker
pods (`app: kafka`) and 20,000 other pods spread over the nodes (spec.nodeName set: KWOK runs them). The
bench serves `px_volume_usage_bytes` and `px_volume_capacity_bytes` for every PVC itself (60% full),
scraped by the sandbox's Prometheus every second. Every count scales with `--scale`.

Each run starts the agent as users run it (`kafka-autopilot run`, sandbox.scenarios.AgentProcess, with the
environment its image sets: MALLOC_ARENA_MAX=2) with the shipped `rules/kafka-resize.yaml` unchanged
(pollInterval 2), then measures:

- first cycle, and steady cycles (median, p95): from the agent's /metrics
  (`kafka_autopilot_loop_duration_seconds`, polled every 0.2 s, one cycle per increment of its count);
- apiserver requests per steady cycle by verb: the agent's requests (userAgent `kafka-autopilot/...`)
  in the apiserver's audit log while `--steady-cycles` cycles ran with no crossing, divided by them;
- threshold crossing -> PVC patch: `--crossings` PVCs, one after another, each at a random point of the
  rule's poll (seeded per run), are made 90% full; from the first scrape that served the crossed value
  to the agent's patch of the PVC (audit log). The bench then plays the volume's resizer (status
  capacity = the new request) and serves the new capacity;
- agent peak RSS: VmHWM of its process at the end of the run (and its VmRSS then, what it holds once steady).

Between runs the agent is stopped and its AutopilotRuleObjects deleted, so each run's first cycle starts
from the same place. The floor is a raw LIST of every PVC by the bench (HTTP and json.loads, no models),
timed in each run: cycle times are also shown as a ratio to it. The query floor is the rule's own
instant query, asked by the bench the same raw way just before the agent starts: what Prometheus alone
takes to answer a cycle, on this machine, now. The table shows medians over the runs
(steady cycles and crossings pooled over the runs), and the last line is exactly

    RESULT first_cycle_s=<f> steady_cycle_s=<f> rss_mib=<f> lists_per_cycle=<f> cross_to_patch_s=<f>

(`nan` for a figure no run measured). Progress goes to stderr with the elapsed time. Exit 0 when every
run completed, 1 when a run failed or timed out (named), 2 when the sandbox could not be set up (and on
bad arguments). The agent and the sandbox are always stopped, also on Ctrl-C; the work dir is removed
unless --keep (or a run failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from agent.adapters.clock import WallClock
from agent.adapters.local_prometheus import ScrapeTarget
from agent.adapters.prometheus import PrometheusClient
from agent.core.quantity import parse_quantity
from sandbox.environment import REPO, Sandbox
from sandbox.kube import KubeApi, KubeApiError
from sandbox.process import free_port
from sandbox.scenarios import AgentProcess, poll

RULE_FILE = REPO / "rules" / "kafka-resize.yaml"
RULE_NAME = "kafka-resize"
_RULE_SPEC = yaml.safe_load(RULE_FILE.read_text())["spec"]
RULE_EXPRESSION = str(_RULE_SPEC["conditions"]["expressions"][0]["key"])
"""What the rule asks Prometheus every cycle, for the query floor."""
RULE_POLL_SECONDS = float(_RULE_SPEC["pollInterval"])
USER_AGENT_PREFIX = "kafka-autopilot/"
STORAGE_CLASS = "bench-expandable"
VOLUME_BYTES = 400 * 2**30
VOLUME_SIZE = "400Gi"
CSI_DRIVER = "bench.kafka-autopilot.io"
QUIET_FULLNESS = 0.60
CROSSED_FULLNESS = 0.90
CYCLE_METRIC = "kafka_autopilot_loop_duration_seconds"
ARO_PATH = "/apis/kafka-autopilot.io/v1alpha1"
ARO_PLURAL = "autopilotruleobjects"
METRICS_POLL_SECONDS = 0.2
IMAGE_ENVIRONMENT = {"MALLOC_ARENA_MAX": "2"}
"""What the agent's image (Dockerfile) sets for the process, so the agent is measured as it runs there."""

Say = Callable[[str], None]


# --- the workload's size (pure) --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Size:
    """How many objects of each kind the cluster gets: issue 13's big shared cluster times the scale."""

    nodes: int
    pvcs: int
    brokers: int
    other_pods: int
    kafka_namespaces: int
    app_namespaces: int

    @classmethod
    def at(cls, scale: float) -> Size:
        def scaled(full: int, least: int) -> int:
            return max(least, round(full * scale))

        return cls(
            nodes=scaled(1000, 3),
            pvcs=scaled(10_000, 10),
            brokers=scaled(1000, 3),
            other_pods=scaled(20_000, 10),
            kafka_namespaces=scaled(10, 1),
            app_namespaces=scaled(20, 1),
        )


@dataclass(frozen=True, kw_only=True)
class Options:
    scale: float
    runs: int
    steady_cycles: int
    crossings: int
    concurrency: int
    keep: bool


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="The agent against a big shared cluster on the real sandbox apiserver (issue 13): "
        "first and steady cycle, peak RSS, apiserver requests per cycle by verb, threshold crossing -> PVC patch.",
        epilog="At --scale 1.0: 1,000 KWOK nodes, 10,000 PVCs, 1,000 broker pods among 20,000 other pods "
        "(about 20 minutes with the per-cycle LIST agent). --scale 0.02 runs in about a minute.",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full cluster (default 1.0)")
    parser.add_argument("--runs", type=int, default=3, help="agent runs on the cluster (default 3)")
    parser.add_argument(
        "--steady-cycles", type=int, default=10, help="steady cycles counted per run, with no crossing (default 10)"
    )
    parser.add_argument("--crossings", type=int, default=3, help="PVCs made to cross the threshold per run (default 3)")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight while creating the objects (default 32)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, audit trails)")
    options = parser.parse_args(argv)
    if not 0 < options.scale <= 10:
        parser.error("--scale must be above 0 and at most 10")
    for name in ("runs", "steady_cycles", "crossings", "concurrency"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if options.crossings * options.runs > Size.at(options.scale).pvcs:
        parser.error("--crossings x --runs is more than the PVCs at this scale")
    return Options(
        scale=options.scale,
        runs=options.runs,
        steady_cycles=options.steady_cycles,
        crossings=options.crossings,
        concurrency=options.concurrency,
        keep=options.keep,
    )


# --- what the apiserver's audit log and the agent's /metrics say (pure) ---------------------------------


def audit_time(text: str) -> float:
    """An audit timestamp ("2026-12-06T05:40:01.123456Z") as seconds since the epoch."""
    return datetime.fromisoformat(text).timestamp()


def agent_requests(lines: Iterable[str], *, since: float, until: float) -> Counter[str]:
    """The agent's requests received in [since, until], by "verb resource" (a LIST is verb "list", each page of
    a paginated one a request); each request once, whatever stages the log holds of it. Lines that are not
    audit events are skipped."""
    seen: set[str] = set()
    verbs: Counter[str] = Counter()
    for line in lines:
        try:
            event = json.loads(line)
            agent = str(event.get("userAgent", "")).startswith(USER_AGENT_PREFIX)
            received = audit_time(event["requestReceivedTimestamp"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        audit_id = str(event.get("auditID"))
        if agent and since <= received <= until and audit_id not in seen:
            seen.add(audit_id)
            resource = (event.get("objectRef") or {}).get("resource") or event.get("requestURI", "?")
            verbs[f"{event.get('verb')} {resource}"] += 1
    return verbs


def pvc_patch_times(lines: Iterable[str], *, keys: Iterable[str]) -> dict[str, float]:
    """When the agent's first successful patch of each PVC (`namespace/name`) was received."""
    wanted = set(keys)
    found: dict[str, float] = {}
    for line in lines:
        try:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            key = f"{ref.get('namespace')}/{ref.get('name')}"
            if (
                key not in wanted
                or event.get("verb") != "patch"
                or ref.get("resource") != "persistentvolumeclaims"
                or ref.get("subresource")
                or not str(event.get("userAgent", "")).startswith(USER_AGENT_PREFIX)
                or event.get("stage") != "ResponseComplete"
                or int((event.get("responseStatus") or {}).get("code", 0)) >= 300
            ):
                continue
            received = audit_time(event["requestReceivedTimestamp"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        found[key] = min(received, found.get(key, received))
    return found


_SAMPLE = re.compile(r"^(?P<name>[a-z_:]+)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")


def loop_duration(metrics_text: str, *, rule: str) -> tuple[int, float] | None:
    """The rule's cycles so far and their summed seconds, from the agent's /metrics; None if not there."""
    count: int | None = None
    total: float | None = None
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None or f'rule="{rule}"' not in match["labels"]:
            continue
        if match["name"] == f"{CYCLE_METRIC}_count":
            count = int(float(match["value"]))
        elif match["name"] == f"{CYCLE_METRIC}_sum":
            total = float(match["value"])
    return None if count is None or total is None else (count, total)


@dataclass(frozen=True, kw_only=True)
class Cycle:
    number: int
    """1 for the rule's first cycle."""
    seconds: float
    ended_at: float
    """When the poll that saw it was answered (time.time())."""


def cycles_from(samples: Sequence[tuple[float, int, float]]) -> list[Cycle]:
    """Cycles from successive (time, count, sum) readings of the loop-duration summary. Two cycles ended
    between two readings share their mean (the poll is faster than a cycle plus its poll interval)."""
    cycles: list[Cycle] = []
    last_count, last_sum = 0, 0.0
    for at, count, total in samples:
        if count <= last_count:
            continue
        each = (total - last_sum) / (count - last_count)
        cycles += [Cycle(number=n, seconds=each, ended_at=at) for n in range(last_count + 1, count + 1)]
        last_count, last_sum = count, total
    return cycles


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (0 < fraction <= 1); nan when there are no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- the table and the RESULT line (pure) ---------------------------------------------------------------


@dataclass(kw_only=True)
class RunResult:
    """What one agent run measured; empty fields are what it did not get to."""

    first_cycle: float | None = None
    steady_cycles: list[float] = field(default_factory=list)
    requests_per_cycle: dict[str, float] | None = None
    """Agent requests per steady cycle, by "verb resource" (empty: none at all); None: not counted."""
    rss_mib: float | None = None
    resident_mib: float | None = None
    """The agent's resident memory at the end of the run (VmRSS), after its peak."""
    cross_to_patch: list[float] = field(default_factory=list)
    floor: float | None = None
    """The bench's raw LIST of every PVC, seconds (median of a few)."""
    query_floor: float | None = None
    """The bench's raw instant query of the rule's expression, seconds (median of a few)."""
    failures: list[str] = field(default_factory=list)


def _median(values: Iterable[float | None]) -> float:
    present = [value for value in values if value is not None and not math.isnan(value)]
    return statistics.median(present) if present else math.nan


@dataclass(frozen=True, kw_only=True)
class Summary:
    first_cycle: float
    steady_median: float
    steady_p95: float
    rss_mib: float
    resident_mib: float
    requests_per_cycle: dict[str, float] | None
    """Medians over the runs that counted them; None when no run did."""
    cross_median: float
    cross_p95: float
    floor: float
    query_floor: float
    runs_done: int


def summarize(results: Sequence[RunResult]) -> Summary:
    steady = [seconds for result in results for seconds in result.steady_cycles]
    crossings = [seconds for result in results for seconds in result.cross_to_patch]
    counted = [result.requests_per_cycle for result in results if result.requests_per_cycle is not None]
    verbs = sorted({verb for requests in counted for verb in requests})
    return Summary(
        first_cycle=_median(result.first_cycle for result in results),
        steady_median=_median(steady),
        steady_p95=percentile(steady, 0.95),
        rss_mib=_median(result.rss_mib for result in results),
        resident_mib=_median(result.resident_mib for result in results),
        requests_per_cycle={verb: _median(r.get(verb, 0.0) for r in counted) for verb in verbs} if counted else None,
        cross_median=_median(crossings),
        cross_p95=percentile(crossings, 0.95),
        floor=_median(result.floor for result in results),
        query_floor=_median(result.query_floor for result in results),
        runs_done=sum(1 for result in results if not result.failures),
    )


def _figure(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _ratio(value: float, floor: float) -> str:
    return "-" if math.isnan(value) or math.isnan(floor) or floor <= 0 else f"{value / floor:.1f}x"


def aligned(rows: Sequence[Sequence[str]]) -> Iterator[str]:
    """The first column left-aligned (names), the rest right-aligned (figures)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.ljust(w) if column == 0 else cell.rjust(w)
            for column, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        yield "  ".join(cells).rstrip()


def per_verb(requests: dict[str, float]) -> dict[str, float]:
    """Requests per cycle by "verb resource", added up by verb."""
    totals: dict[str, float] = {}
    for key, count in requests.items():
        verb = key.split(" ", 1)[0]
        totals[verb] = totals.get(verb, 0.0) + count
    return totals


def lists_per_cycle(summary: Summary) -> float:
    if summary.requests_per_cycle is None:
        return math.nan
    return per_verb(summary.requests_per_cycle).get("list", 0.0)


def report(results: Sequence[RunResult], *, runs: int) -> list[str]:
    """The closing table, its legend, every failed run, and the RESULT line last."""
    summary = summarize(results)
    floor = summary.floor
    rows = [
        ["measure", "median", "p95", "vs floor"],
        ["first cycle, s", _figure(summary.first_cycle), "-", _ratio(summary.first_cycle, floor)],
        [
            "steady cycle, s",
            _figure(summary.steady_median),
            _figure(summary.steady_p95),
            _ratio(summary.steady_median, floor),
        ],
        ["agent peak RSS (VmHWM), MiB", _figure(summary.rss_mib, 1), "-", "-"],
        ["agent RSS at the end (VmRSS), MiB", _figure(summary.resident_mib, 1), "-", "-"],
    ]
    requests = summary.requests_per_cycle
    if requests is not None and not requests:
        rows.append(["apiserver requests per steady cycle", "0.00", "-", "-"])
    for verb, total in per_verb(requests or {}).items():
        rows.append([f"apiserver {verb.upper()}s per steady cycle", _figure(total), "-", "-"])
        rows += [
            [f"  {key}", _figure(count), "-", "-"]
            for key, count in (requests or {}).items()
            if key.split(" ", 1)[0] == verb
        ]
    rows += [
        ["threshold crossing -> PVC patch, s", _figure(summary.cross_median), _figure(summary.cross_p95), "-"],
        ["floor: raw LIST of every PVC by the bench, s", _figure(floor, 3), "-", "1.0x"],
        [
            "query floor: the rule's query by the bench, s",
            _figure(summary.query_floor, 3),
            "-",
            _ratio(summary.query_floor, floor),
        ],
    ]
    lines = list(aligned(rows))
    lines.append("")
    lines.append(
        f"{summary.runs_done}/{runs} runs completed; medians over the runs, steady cycles and crossings pooled; "
        "vs floor: the median over the floor's median"
    )
    failures = [failure for result in results for failure in result.failures]
    if failures:
        lines.append(f"{len(failures)} failure(s):")
        lines += [f"  {failure}" for failure in failures]
    lines.append("")
    lines.append(result_line(summary))
    return lines


def result_line(summary: Summary) -> str:
    figures = {
        "first_cycle_s": summary.first_cycle,
        "steady_cycle_s": summary.steady_median,
        "rss_mib": summary.rss_mib,
        "lists_per_cycle": lists_per_cycle(summary),
        "cross_to_patch_s": summary.cross_median,
    }
    return "RESULT " + " ".join(f"{name}={value:.3f}" for name, value in figures.items())


def exit_code(results: Sequence[RunResult], *, setup_failed: bool) -> int:
    if setup_failed:
        return 2
    return 1 if any(result.failures for result in results) else 0


# --- the cluster's objects -------------------------------------------------------------------------------


def kafka_namespace(index: int) -> str:
    return f"bench-kafka-{index}"


def pvc_key(size: Size, index: int) -> tuple[str, str]:
    return kafka_namespace(index % size.kafka_namespaces), f"data-kafka-{index}"


def node_name(size: Size, index: int) -> str:
    return f"kwok-node-{index % size.nodes}"


def namespace_manifest(name: str, team: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"team": team}}}


def storage_class_manifest() -> dict[str, Any]:
    """Expandable, so the apiserver admits the agent's resize."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS},
        "provisioner": CSI_DRIVER,
        "allowVolumeExpansion": True,
        "reclaimPolicy": "Retain",
    }


def volume_name(namespace: str, name: str) -> str:
    return f"pv-{namespace}-{name}"


def pvc_manifest(namespace: str, name: str) -> dict[str, Any]:
    """A claim pre-bound to its volume by name; the bench completes the binding (`bound_pair`)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "kafka"}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": STORAGE_CLASS,
            "volumeName": volume_name(namespace, name),
            "resources": {"requests": {"storage": VOLUME_SIZE}},
        },
    }


def pv_manifest(claim: dict[str, Any]) -> dict[str, Any]:
    meta = claim["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(meta["namespace"], meta["name"])},
        "spec": {
            "capacity": {"storage": VOLUME_SIZE},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": STORAGE_CLASS,
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "csi": {"driver": CSI_DRIVER, "volumeHandle": volume_name(meta["namespace"], meta["name"])},
        },
    }


def pod_manifest(*, namespace: str, name: str, node: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": app, "image": f"example.invalid/{app}:1"}],
            "tolerations": [{"operator": "Exists"}],
        },
    }


JSON, MERGE = "application/json", "application/merge-patch+json"


class Creator:
    """Bounded-concurrency requests to the apiserver (aiohttp, the admin's client certificate), with progress."""

    def __init__(self, sandbox: Sandbox, *, concurrency: int, say: Say) -> None:
        kube = sandbox.kube
        pki = kube.pki_dir
        self.base = kube.apiserver_url
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(certfile=str(pki / "admin.crt"), keyfile=str(pki / "admin.key"))
        self.concurrency = concurrency
        self.say = say
        self._session: aiohttp.ClientSession | None = None

    async def send(self, method: str, path: str, body: dict[str, Any], content_type: str = JSON) -> dict[str, Any]:
        """One request, retried on overload; a create that finds the object there returns {}."""
        assert self._session is not None
        for attempt in range(6):
            async with self._session.request(
                method, path, data=json.dumps(body), headers={"Content-Type": content_type}
            ) as answer:
                text = await answer.text()
                if answer.status < 300:
                    decoded: dict[str, Any] = json.loads(text)
                    return decoded
                if method == "POST" and answer.status == 409:
                    return {}
                if answer.status in (409, 429, 500, 503, 504) and attempt < 5:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                raise KubeApiError(method=method, path=path, status=answer.status, body=text)
        raise AssertionError("unreachable")

    async def each(self, what: str, items: Sequence[Any], work: Callable[[Any], Awaitable[object]]) -> None:
        """`work(item)` for every item, `concurrency` at a time, saying how far it got."""
        started = time.monotonic()
        done = 0
        gate = asyncio.Semaphore(self.concurrency)

        async def one(item: Any) -> None:
            nonlocal done
            async with gate:
                await work(item)
            done += 1
            if done % 2000 == 0:
                self.say(f"  {what}: {done}/{len(items)} ({done / (time.monotonic() - started):.0f}/s)")

        await asyncio.gather(*(one(item) for item in items))
        self.say(f"  {what}: {len(items)} in {time.monotonic() - started:.1f}s")

    async def populate(self, size: Size) -> None:
        connector = aiohttp.TCPConnector(ssl=self.context, limit=self.concurrency)
        async with aiohttp.ClientSession(base_url=self.base, connector=connector) as self._session:
            namespaces = [namespace_manifest(kafka_namespace(n), "kafka") for n in range(size.kafka_namespaces)]
            namespaces += [namespace_manifest(f"bench-apps-{n}", "apps") for n in range(size.app_namespaces)]
            await self.each("namespaces", namespaces, lambda body: self.send("POST", "/api/v1/namespaces", body))
            await self.send("POST", "/apis/storage.k8s.io/v1/storageclasses", storage_class_manifest())
            claims = [pvc_key(size, index) for index in range(size.pvcs)]
            await self.each("PVCs bound to their PVs", claims, self.bound_pair)
            pods = [
                pod_manifest(
                    namespace=kafka_namespace(i % size.kafka_namespaces),
                    name=f"kafka-{i}",
                    node=node_name(size, i),
                    app="kafka",
                )
                for i in range(size.brokers)
            ]
            pods += [
                pod_manifest(
                    namespace=f"bench-apps-{i % size.app_namespaces}",
                    name=f"app-{i}",
                    node=node_name(size, i * 7 + 3),
                    app=f"app-{i % 50}",
                )
                for i in range(size.other_pods)
            ]
            await self.each(
                "pods",
                pods,
                lambda pod: self.send("POST", f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods", pod),
            )

    async def bound_pair(self, key: tuple[str, str]) -> None:
        """A claim and its volume, bound as the PV binder binds them (claimRef with the claim's uid, both
        phases Bound, the claim's bind-completed annotation), so the binder finds nothing to do."""
        namespace, name = key
        claims = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"
        claim = await self.send("POST", claims, pvc_manifest(namespace, name))
        if not claim:  # there already (a retried run): read it for its uid
            assert self._session is not None
            async with self._session.get(f"{claims}/{name}") as answer:
                claim = json.loads(await answer.text())
        volume = pv_manifest(claim)
        await self.send("POST", "/api/v1/persistentvolumes", volume)
        await self.send("PATCH", f"/api/v1/persistentvolumes/{volume['metadata']['name']}/status", PV_BOUND, MERGE)
        await self.send("PATCH", f"{claims}/{name}", CLAIM_BIND_COMPLETED, MERGE)
        await self.send("PATCH", f"{claims}/{name}/status", CLAIM_BOUND, MERGE)


PV_BOUND = {"status": {"phase": "Bound"}}
CLAIM_BIND_COMPLETED = {"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}}}
CLAIM_BOUND = {"status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": VOLUME_SIZE}}}


def populate(sandbox: Sandbox, size: Size, *, concurrency: int, say: Say) -> None:
    asyncio.run(Creator(sandbox, concurrency=concurrency, say=say).populate(size))


# --- the bench's own exporter of volume usage ------------------------------------------------------------


class UsageExporter:
    """px_volume_usage_bytes and px_volume_capacity_bytes of every PVC, served for Prometheus to scrape.

    A changed value is watched for: `served_at(key)` is when a scrape first got it (the series crossed)."""

    def __init__(self, keys: Iterable[tuple[str, str]]) -> None:
        self._lock = threading.Lock()
        self._volumes = {f"{ns}/{name}": (int(VOLUME_BYTES * QUIET_FULLNESS), VOLUME_BYTES) for ns, name in keys}
        self._text: bytes | None = None
        self._changed: dict[str, float | None] = {}
        self.port = free_port()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.scrape()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                return

        self._server = QuietServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="usage-exporter", daemon=True)

    @property
    def target(self) -> ScrapeTarget:
        return ScrapeTarget(address=f"127.0.0.1:{self.port}", labels={"role": "bench-usage-exporter"})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def set(self, key: str, *, used: int | None = None, capacity: int | None = None) -> None:
        with self._lock:
            old_used, old_capacity = self._volumes[key]
            self._volumes[key] = (old_used if used is None else used, old_capacity if capacity is None else capacity)
            self._changed[key] = None
            self._text = None

    def served_at(self, key: str) -> float | None:
        with self._lock:
            return self._changed.get(key)

    def scrape(self) -> bytes:
        with self._lock:
            if self._text is None:
                lines = ["# TYPE px_volume_usage_bytes gauge"]
                lines += [f"px_volume_usage_bytes{{{_labels(k)}}} {used}" for k, (used, _) in self._volumes.items()]
                lines.append("# TYPE px_volume_capacity_bytes gauge")
                lines += [f"px_volume_capacity_bytes{{{_labels(k)}}} {cap}" for k, (_, cap) in self._volumes.items()]
                self._text = ("\n".join(lines) + "\n").encode()
            now = time.time()
            for key, at in self._changed.items():
                if at is None:
                    self._changed[key] = now
            return self._text


class QuietServer(ThreadingHTTPServer):
    """A scrape Prometheus gave up on (a timeout on a busy machine) is its business, not an error to print."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _labels(key: str) -> str:
    namespace, name = key.split("/", 1)
    return f'namespace="{namespace}",pvc="{name}"'


# --- one run of the agent --------------------------------------------------------------------------------


class CyclePoller:
    """Reads the agent's loop-duration summary every METRICS_POLL_SECONDS in a thread."""

    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cycle-poller", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(METRICS_POLL_SECONDS):
            try:
                found = loop_duration(self.agent.metrics(), rule=RULE_NAME)
            except OSError:
                continue
            if found is not None and (not self.samples or found[0] != self.samples[-1][1]):
                self.samples.append((time.time(), *found))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def cycles(self) -> list[Cycle]:
        return cycles_from(list(self.samples))


def audit_lines(sandbox: Sandbox) -> Iterator[str]:
    """Every line of the apiserver's audit log, the rotated files included."""
    directory = sandbox.kube.audit_log_path.parent
    for path in sorted(directory.glob("audit*.log")):
        with path.open(errors="replace") as lines:
            yield from lines


def memory_mib(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of the process's /proc status: VmHWM (its peak RSS) or VmRSS (now), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def raw_pvc_list_seconds(api: KubeApi, *, repeats: int = 3) -> float:
    """The floor: one LIST of every PVC, the bytes read and decoded with json.loads (no models)."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        status, text = api.request("GET", "/api/v1/persistentvolumeclaims")
        json.loads(text)
        timings.append(time.perf_counter() - started)
        if status != 200:
            raise KubeApiError(method="GET", path="/api/v1/persistentvolumeclaims", status=status, body=text)
    return statistics.median(timings)


def raw_query_seconds(prometheus_url: str, expr: str, *, repeats: int = 3) -> float:
    """The query floor: one instant query of `expr`, the bytes read and decoded with json.loads."""
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as answer:
            document = json.loads(answer.read())
        timings.append(time.perf_counter() - started)
        if document.get("status") != "success":
            raise RuntimeError(f"Prometheus at {prometheus_url} refused `{expr}`: {document!r:.300}")
    return statistics.median(timings)


def delete_state_objects(sandbox: Sandbox) -> int:
    """The agent's AutopilotRuleObjects, so the next run's first cycle starts afresh (one DELETE of the
    collection: tens of seconds for 10,000)."""
    kube = sandbox.kube
    api = KubeApi(host="127.0.0.1", port=kube.state.apiserver_port, pki=kube.pki_dir, timeout_seconds=600.0)
    try:
        found = api.get(f"{ARO_PATH}/{ARO_PLURAL}")["items"]
    except KubeApiError as error:
        if error.status == 404:
            return 0
        raise
    if found:
        api.call("DELETE", f"{ARO_PATH}/{ARO_PLURAL}")
    poll(lambda: not api.get(f"{ARO_PATH}/{ARO_PLURAL}?limit=1")["items"], timeout=300, what="state objects gone")
    return len(found)


@dataclass(frozen=True, kw_only=True)
class Cluster:
    sandbox: Sandbox
    size: Size
    exporter: UsageExporter
    work_dir: Path
    timeout: float
    """The longest wait for a cycle: grows with the cluster, as a cycle of the per-cycle LIST agent does."""


def requested_bytes(claim: dict[str, Any]) -> int:
    return int(parse_quantity(str(claim["spec"]["resources"]["requests"]["storage"])))


def cross_once(cluster: Cluster, api: KubeApi, key: str, say: Say) -> tuple[float, float]:
    """Make one PVC 90% full and wait for the agent's patch of its request; play its resizer. Returns when the
    series crossed (the first scrape that served it) and when the bench saw the new request."""
    namespace, name = key.split("/", 1)
    path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
    before = requested_bytes(api.get(path))
    cluster.exporter.set(key, used=int(before * CROSSED_FULLNESS))

    def grown() -> dict[str, Any] | None:
        found = api.get(path)
        return found if requested_bytes(found) > before else None

    claim: dict[str, Any] = poll(
        grown,
        timeout=cluster.timeout,
        what=f"the agent's patch of {key}",
        interval=0.1,
    )
    seen_at = time.time()
    crossed_at = cluster.exporter.served_at(key)
    if crossed_at is None:
        raise RuntimeError(f"{key} was patched before Prometheus scraped its crossing")
    new_size = claim["spec"]["resources"]["requests"]["storage"]
    api.merge_patch(
        f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}", {"spec": {"capacity": {"storage": new_size}}}
    )
    api.merge_patch(f"{path}/status", {"status": {"capacity": {"storage": new_size}}})
    cluster.exporter.set(key, capacity=requested_bytes(claim))
    say(f"  {key}: crossed, request now {new_size} {seen_at - crossed_at:.2f}s later (seen by the bench)")
    return crossed_at, seen_at


def bench_run(
    cluster: Cluster, run: int, runs: int, *, steady_cycles: int, crossings: Sequence[str], say: Say
) -> RunResult:
    result = RunResult()
    api = cluster.sandbox.kube.api()
    result.floor = raw_pvc_list_seconds(api)
    result.query_floor = raw_query_seconds(cluster.sandbox.prometheus_url, RULE_EXPRESSION)
    say(
        f"run {run}/{runs}: floor (raw LIST of {cluster.size.pvcs} PVCs) {result.floor:.3f}s, "
        f"query floor {result.query_floor:.3f}s; starting the agent"
    )
    agent = AgentProcess(
        sandbox=cluster.sandbox,
        rules=[RULE_FILE],
        audit_path=cluster.work_dir / f"run-{run}-audit.jsonl",
        ready_timeout_seconds=cluster.timeout,
        environment=IMAGE_ENVIRONMENT,
    )
    poller = CyclePoller(agent)
    poller.start()
    try:
        started = time.monotonic()
        agent.start()
        first = poll(poller.cycles, timeout=30, what="the first cycle in /metrics")[0]
        result.first_cycle = first.seconds
        say(f"run {run}/{runs}: agent ready in {time.monotonic() - started:.1f}s, first cycle {first.seconds:.2f}s")
        window_start = first.ended_at
        wanted = 1 + steady_cycles
        last = poll(
            lambda: (c := poller.cycles()) and len(c) >= wanted and c[wanted - 1],
            timeout=cluster.timeout * (steady_cycles + 1),
            what=f"{steady_cycles} steady cycles",
        )
        steady = [cycle for cycle in poller.cycles() if 1 < cycle.number <= wanted]
        result.steady_cycles = [cycle.seconds for cycle in steady]
        say(
            f"run {run}/{runs}: {len(steady)} steady cycles, median {statistics.median(result.steady_cycles):.2f}s "
            f"({', '.join(f'{seconds:.2f}' for seconds in result.steady_cycles)}); counting the agent's requests"
        )
        time.sleep(1.0)  # the audit log's buffered writes
        verbs = agent_requests(audit_lines(cluster.sandbox), since=window_start, until=last.ended_at)
        result.requests_per_cycle = {verb: count / len(steady) for verb, count in sorted(verbs.items())}
        say(
            f"run {run}/{runs}: per steady cycle: "
            + ", ".join(f"{v} {n:.1f}" for v, n in result.requests_per_cycle.items())
        )
        crossed: dict[str, float] = {}
        phases = random.Random(f"crossings of run {run}")
        for key in crossings:
            # At a random point of the agent's poll: a crossing made right after the previous patch would
            # come at the same point of the agent's cycle each time, and every crossing of a run would
            # wait the same part of a poll for the next cycle.
            time.sleep(phases.uniform(0.0, RULE_POLL_SECONDS))
            crossed[key], _ = cross_once(cluster, api, key, say)
        time.sleep(1.0)
        patched = pvc_patch_times(audit_lines(cluster.sandbox), keys=crossed)
        missing = sorted(set(crossed) - set(patched))
        if missing:
            result.failures.append(f"run {run}: no patch by the agent in the audit log for {', '.join(missing)}")
        result.cross_to_patch = [patched[key] - crossed[key] for key in crossings if key in patched]
        if agent.process is not None:
            result.rss_mib = memory_mib(agent.process.pid)
            result.resident_mib = memory_mib(agent.process.pid, "VmRSS")
        say(
            f"run {run}/{runs}: crossing -> patch "
            + ", ".join(f"{s:.2f}s" for s in result.cross_to_patch)
            + f"; agent peak RSS {result.rss_mib or math.nan:.1f} MiB"
            + f", {result.resident_mib or math.nan:.1f} MiB at the end"
        )
    except Exception as error:
        result.failures.append(f"run {run}: {type(error).__name__}: {error}")
        say(f"FAILED run {run}/{runs}: {type(error).__name__}: {error}")
    finally:
        poller.stop()
        agent.stop()
    return result


def crossing_keys(size: Size, *, runs: int, per_run: int) -> list[list[str]]:
    """Distinct PVCs for every run's crossings, spread over the claims."""
    total = runs * per_run
    step = max(1, size.pvcs // total)
    keys = ["/".join(pvc_key(size, (n * step + step // 2) % size.pvcs)) for n in range(total)]
    return [keys[run * per_run : (run + 1) * per_run] for run in range(runs)]


class SetupError(RuntimeError):
    """The sandbox or the objects could not be set up: no figure can be trusted."""


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    size = Size.at(options.scale)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[+{time.monotonic() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    os.environ.setdefault("KAFKA_AUTOPILOT_SANDBOX_TTL", str(int(3600 + 3600 * options.scale * options.runs)))
    work_dir = Path(tempfile.mkdtemp(prefix="kafka-autopilot-bench-cluster-"))
    print("kafka-autopilot bench: the agent against a big shared cluster (live sandbox apiserver, Prometheus)")
    print(
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"scale {options.scale:g}: {size.nodes} nodes, {size.pvcs} PVCs (app=kafka), {size.brokers} broker pods, "
        f"{size.other_pods} other pods; rule {RULE_FILE.relative_to(REPO)}; {options.runs} runs, "
        f"{options.steady_cycles} steady cycles and {options.crossings} crossings each; work dir {work_dir}",
        flush=True,
    )
    sandbox = Sandbox(work_dir=work_dir / "sandbox")
    exporter = UsageExporter(pvc_key(size, index) for index in range(size.pvcs))
    results: list[RunResult] = []
    setup_failed = False
    try:
        try:
            exporter.start()
            say(f"bringing up Kubernetes with {size.nodes} KWOK nodes, and Prometheus")
            sandbox.up_kubernetes(
                progress=lambda message: say(f"sandbox: {message}"),
                node_count=size.nodes,
                scrape_targets=[exporter.target],
                node_lease_duration_seconds=40,
            )
            say(f"creating {size.pvcs} PVCs, {size.brokers + size.other_pods} pods ({options.concurrency} in flight)")
            populate(sandbox, size, concurrency=options.concurrency, say=say)
            cluster = Cluster(
                sandbox=sandbox, size=size, exporter=exporter, work_dir=work_dir, timeout=120.0 + size.pvcs * 0.1
            )
            say("waiting for Prometheus to have every PVC's usage")
            prometheus = PrometheusClient(url=sandbox.prometheus_url, clock=WallClock())
            poll(
                lambda: len(prometheus.instant_query("px_volume_capacity_bytes")) >= size.pvcs,
                timeout=120,
                what=f"{size.pvcs} PVCs' series in Prometheus",
            )
        except Exception as error:
            raise SetupError(f"{type(error).__name__}: {error}") from error
        for run, keys in enumerate(crossing_keys(size, runs=options.runs, per_run=options.crossings), start=1):
            if run > 1:
                try:
                    say(f"run {run}/{options.runs}: deleted {delete_state_objects(sandbox)} state objects")
                except Exception as error:
                    results.append(RunResult(failures=[f"run {run}: deleting the state objects: {error}"]))
                    break
            results.append(
                bench_run(cluster, run, options.runs, steady_cycles=options.steady_cycles, crossings=keys, say=say)
            )
    except SetupError as error:
        say(f"SETUP FAILED {error}")
        setup_failed = True
    finally:
        say("taking the sandbox down")
        exporter.stop()
        sandbox.down(progress=lambda message: None)
        print()
        print(f"the agent on a cluster of {size.pvcs} PVCs ({time.monotonic() - started:.0f}s in all)")
        for line in report(results, runs=options.runs):
            print(line, flush=True)
        code = exit_code(results, setup_failed=setup_failed)
        if code == 0 and not options.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"logs and audit trails kept in {work_dir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
