"""`kafka-autopilot run`: assemble the agent from its adapters and run it until told to stop.

This is the only place that knows which concrete adapter plays which part, and the only place that
decides dry-run: it picks the dry-run applier (an audit sink) or the live one, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import structlog

from agent.actions.base import Executor, WallClock
from agent.actions.mutations import Applier, DryRunApplier, LiveApplier, Mutation
from agent.actions.reschedule import NodeRescheduleExecutor
from agent.actions.resize import VolumeResizeExecutor
from agent.adapters.files import load_rule_paths
from agent.adapters.kafka import KafkaAdmin, KafkaSettings
from agent.adapters.kubernetes import EventTarget, KubeClient, KubeError, connect
from agent.adapters.prometheus import PrometheusClient
from agent.adapters.statestore import StateStore, install_crds, object_name, read_cluster_rules
from agent.audit.trail import AuditRecord, AuditTrail, iso_time
from agent.core import catalog
from agent.core.diagnostics import Problem
from agent.core.loader import merge_results, parse_rules
from agent.core.matching import TargetObject
from agent.core.rules import Rule, TargetKind
from agent.runtime.agent import Agent
from agent.runtime.scope import PodScope, ScopedInventory, split_rules
from agent.runtime.server import Endpoints, serve
from agent.runtime.telemetry import Telemetry

log = structlog.get_logger("kafka-autopilot")


@dataclass(frozen=True, kw_only=True)
class PrometheusSettings:
    url: str
    bearer_token_file: Path | None = None
    tenant: str | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False

    def client(self) -> PrometheusClient:
        headers: dict[str, str] = {}
        if self.bearer_token_file is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token_file.read_text().strip()}"
        if self.tenant:
            headers["X-Scope-OrgID"] = self.tenant
        verify: bool | str = False if self.insecure_skip_verify else (str(self.ca_file) if self.ca_file else True)
        return PrometheusClient(url=self.url, headers=headers, verify_tls=verify)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    rule_paths: Sequence[Path] = ()
    cluster_rules: bool = False
    kubeconfig: Path | None = None
    prometheus: PrometheusSettings
    kafka: KafkaSettings | None = None
    dry_run: bool = False
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    install_crds: bool = False
    audit_stream: TextIO = field(default=sys.stdout)
    scope_pod: PodScope | None = None
    """Sidecar mode: act only on this broker pod and the PVCs it mounts (agent.runtime.scope)."""


@dataclass
class KubeEvents:
    """Events on the object acted on, and on the rule's state object (AutopilotRuleObject)."""

    kube: KubeClient

    async def emit(self, *, rule: str, target: TargetObject, reason: str, message: str, warning: bool) -> None:
        kind = {
            TargetKind.PVC: "PersistentVolumeClaim",
            TargetKind.NODE: "Node",
            TargetKind.BROKER: "Pod",
            TargetKind.STORAGE_POOL: "Node",
        }[target.kind]
        name = target.name.split("/", 1)[0] if target.kind is TargetKind.STORAGE_POOL else target.name
        state_object = EventTarget(
            kind="AutopilotRuleObject",
            name=object_name(rule=rule, object_key=target.key),
            namespace=None,
            uid=None,
            api_version="kafka-autopilot.io/v1alpha1",
        )
        on_object = EventTarget(kind=kind, name=name, namespace=target.namespace, uid=None)
        for involved in (on_object, state_object):
            try:
                await self.kube.emit_event(
                    involved=involved,
                    reason=reason,
                    message=message,
                    type_="Warning" if warning else "Normal",
                    action=reason,
                )
            except KubeError as error:
                log.warning("event not recorded", reason=reason, object=target.key, error=str(error))


def load_rules(paths: Sequence[Path], *, out: TextIO) -> tuple[list[Rule], list[Problem]]:
    result = merge_results(load_rule_paths(paths))
    for problem in result.problems:
        print(f"rule problem (rule skipped): {problem}", file=out, flush=True)
    return list(result.rules), list(result.problems)


async def run_agent(
    options: RunOptions,
    *,
    stop: asyncio.Event | None = None,
    listener: Callable[[AuditRecord], None] | None = None,
) -> int:
    """Run until SIGINT/SIGTERM, or until `stop` is set when the caller (the demo) passes one."""
    rules, problems = load_rules(options.rule_paths, out=sys.stderr)
    trail = AuditTrail(stream=options.audit_stream, listener=listener)
    telemetry = Telemetry()
    clock = WallClock()
    try:
        kube = await connect(kubeconfig=options.kubeconfig)
    except KubeError as error:
        print(f"kafka-autopilot run: cannot reach Kubernetes: {error}", file=sys.stderr)
        return 2
    async with kube, contextlib.AsyncExitStack() as stack:
        if options.install_crds:
            await install_crds(kube.api_client)
        if options.cluster_rules:
            cluster = await read_cluster_rules(kube.api_client)
            for found in cluster:
                result = parse_rules(found.text, file=found.file)
                problems.extend(result.problems)
                rules.extend(result.rules)
        telemetry.set("kafka_autopilot_rule_problems", len(problems))
        not_run: dict[str, str] = {}
        if options.scope_pod is not None:
            rules, not_run = split_rules(rules, options.scope_pod)
            for name, reason in not_run.items():
                log.info("rule not run", rule=name, reason=reason)
        if not rules:
            print("kafka-autopilot run: no valid rule to run", file=sys.stderr)
            return 1
        kafka = await stack.enter_async_context(KafkaAdmin(settings=options.kafka)) if options.kafka else None
        applier: Applier
        if options.dry_run:
            applier = DryRunApplier(record=lambda mutation: trail.write(_mutation_record(mutation, clock.now())))
        else:
            applier = LiveApplier(writer=kube)
        inventory = kube if options.scope_pod is None else ScopedInventory(source=kube, scope=options.scope_pod)
        executors: dict[str, Executor] = {
            catalog.VOLUME_RESIZE: VolumeResizeExecutor(reader=inventory, applier=applier, clock=clock),
            catalog.NODE_RESCHEDULE: NodeRescheduleExecutor(reader=kube, kafka=kafka, applier=applier, clock=clock),
        }
        agent = Agent(
            rules=rules,
            inventory=inventory,
            prometheus=options.prometheus.client(),
            store=StateStore(kube.api_client),
            executors=executors,
            clock=clock,
            trail=trail,
            telemetry=telemetry,
            events=KubeEvents(kube=kube),
            dry_run=options.dry_run,
        )
        agent.rule_health.update(not_run)
        runner = await serve(
            Endpoints(
                telemetry=telemetry, readiness=agent.readiness, trigger=agent.trigger, health=lambda: agent.rule_health
            ),
            host=options.listen_host,
            port=options.listen_port,
        )
        stack.push_async_callback(runner.cleanup)
        log.info(
            "agent started",
            rules=[rule.name for rule in rules],
            dry_run=options.dry_run,
            listen=f"{options.listen_host}:{options.listen_port}",
        )
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
        tasks = [asyncio.create_task(agent.run(), name="agent")]
        if options.scope_pod is None:  # a sidecar's pod is its whole world: no cluster-wide watches
            tasks.append(asyncio.create_task(watch_triggers(kube, agent), name="watches"))
        stopping = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        failed = [task for task in tasks if task in done]
        for task in [*tasks, stopping]:
            task.cancel()
        await asyncio.gather(*tasks, stopping, return_exceptions=True)
        for task in failed:
            cause = task.exception() if not task.cancelled() else None
            log.error("agent task ended unexpectedly", task=task.get_name(), error=repr(cause))
            print(f"kafka-autopilot run: {task.get_name()} stopped: {cause!r}", file=sys.stderr)
        if failed:
            return 70
        log.info("agent stopped")
    return 0


async def watch_triggers(kube: KubeClient, agent: Agent) -> None:
    """Evaluate node rules at once when a node's Ready condition changes, and broker and node rules
    when a pod is deleted, instead of waiting for the next poll."""

    async def nodes() -> None:
        ready: dict[str, object] = {}
        async for event in kube.watch("nodes"):
            conditions = event.raw.get("status", {}).get("conditions", []) if event.raw else []
            status = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
            if ready.get(event.object_name) != status:
                ready[event.object_name] = status
                agent.trigger_kind(TargetKind.NODE)

    async def pods() -> None:
        async for event in kube.watch("pods"):
            if event.type == "DELETED":
                agent.trigger_kind(TargetKind.BROKER)
                agent.trigger_kind(TargetKind.NODE)

    async with asyncio.TaskGroup() as group:
        group.create_task(nodes())
        group.create_task(pods())


def dump_tasks() -> None:
    """SIGUSR1: print every asyncio task and where it waits, to see what a quiet agent is doing."""
    for task in asyncio.all_tasks():
        print(f"--- task {task.get_name()}", file=sys.stderr)
        task.print_stack(limit=8, file=sys.stderr)
    sys.stderr.flush()


def _mutation_record(mutation: Mutation, at: float) -> dict[str, object]:
    return {
        "time": iso_time(at),
        "event": "mutation-recorded",
        "rule": None,
        "object": None,
        "from": None,
        "to": None,
        "action": type(mutation).__name__,
        "before": None,
        "after": mutation.describe(),
        "outcome": "dry-run",
        "reason": "dry-run: recorded, not applied",
        "dry_run": True,
    }
