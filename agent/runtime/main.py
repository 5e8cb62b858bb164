"""`kafka-autopilot run`: assemble the agent from its adapters and run it until told to stop.

This is the only place that knows which concrete adapter plays which part, and the only place that
decides dry-run: it picks the dry-run applier (an audit sink) or the live one, once, for each
executor: dry-run everywhere with --dry-run or a policy's `dryRun: true`, else for the policy's
`dryRunActions`.

In service mode the cluster is read from watch-fed caches (agent.adapters.kubernetes.cache: PVCs and
pods by the rules' selectors, namespaces, StorageClasses, nodes, node Leases), and in both modes the
state objects (and, in service mode, the approvals) too: the agent is not ready, and a rule does not
evaluate, until the caches it reads have listed once.

With leader election (`RunOptions.leader_elect`), the replica serves its endpoints at once but starts
the rule loops, caches and executors only once it holds the Lease; when it loses the Lease it cancels
them all synchronously and `run_agent` returns EXIT_LEADERSHIP_LOST (75); on SIGTERM it releases the Lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import structlog

from agent.actions.base import Dependencies, Executor
from agent.actions.mutations import Applier, DryRunApplier, LiveApplier, Mutation
from agent.actions.registry import CATALOG, build_executors
from agent.adapters.clock import Clock, WallClock
from agent.adapters.files import load_policy_file, load_rule_paths
from agent.adapters.kafka import KafkaAdmin, KafkaSettings
from agent.adapters.kafka.producer import event_producer
from agent.adapters.kubernetes import USER_AGENT, KubeClient, KubeError, connect
from agent.adapters.kubernetes.approvals import ApprovalStore, watched_approvals
from agent.adapters.kubernetes.cache import ClusterCaches, WatchCache, not_synced, run_caches
from agent.adapters.kubernetes.crds import install_crds, wait_until_served
from agent.adapters.kubernetes.statestore import StateStore, watched_objects
from agent.adapters.prometheus import PrometheusClient
from agent.adapters.storagepools import StoragePoolClient
from agent.audit.cloudevents import DEFAULT_CAPACITY, CloudEventSink
from agent.audit.evaluations import EvaluationAudit, EvaluationAuditing
from agent.audit.trail import AuditRecord, AuditTrail, iso_time
from agent.core.approvals import Approvers
from agent.core.collection import DEFAULT_GRACE_SECONDS
from agent.core.diagnostics import Problem
from agent.core.leadership import Timing
from agent.core.loader import merge_results
from agent.core.policy import Policy, describe
from agent.core.rules import Rule, TargetKind
from agent.runtime.admission import AdmissionLedger
from agent.runtime.approvals import ApprovalFlow
from agent.runtime.collector import StateCollector, collect_forever
from agent.runtime.cycle import RuleCycle
from agent.runtime.events import EventQueue, KubeEvents, RuleEvents
from agent.runtime.inventory import Inventory, split_storage_pool_rules
from agent.runtime.leadership import (
    EXIT_LEADERSHIP_LOST,
    LIVE_LEASE_NAME,
    ElectionSettings,
    LeaderElector,
    LeaseNamespaceMissingError,
)
from agent.runtime.liverules import ClusterRuleReports, ClusterRuleWatch
from agent.runtime.recorder import Recorder
from agent.runtime.runner import ActionRunner
from agent.runtime.scheduler import Scheduler, Triggers
from agent.runtime.scope import PodScope, ScopedInventory, split_rules
from agent.runtime.server import Endpoints, serve
from agent.runtime.telemetry import FEW_OBJECTS, Telemetry
from agent.runtime.watches import Gate, trigger_on_changes

log = structlog.get_logger("kafka-autopilot")


@dataclass(frozen=True, kw_only=True)
class PrometheusSettings:
    url: str
    bearer_token_file: Path | None = None
    tenant: str | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False

    def client(self, *, clock: Clock) -> PrometheusClient:
        headers: dict[str, str] = {}
        if self.bearer_token_file is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token_file.read_text().strip()}"
        if self.tenant:
            headers["X-Scope-OrgID"] = self.tenant
        verify: bool | str = False if self.insecure_skip_verify else (str(self.ca_file) if self.ca_file else True)
        return PrometheusClient(url=self.url, headers=headers, verify_tls=verify, clock=clock)


@dataclass(frozen=True, kw_only=True)
class StorageApiSettings:
    url: str
    token_file: Path | None = None

    def client(self) -> StoragePoolClient:
        return StoragePoolClient(url=self.url, token_file=self.token_file)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    rule_paths: Sequence[Path] = ()
    cluster_rules: bool = False
    kubeconfig: Path | None = None
    prometheus: PrometheusSettings
    kafka: KafkaSettings | None = None
    storage_api: StorageApiSettings | None = None
    dry_run: bool = False
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    metrics_per_pvc: bool = False
    """The `object` label on PVC rules' action counters too (one series per claim; see telemetry)."""
    audit_evaluations: EvaluationAuditing = field(default_factory=EvaluationAuditing)
    """Which evaluation records to write (`--audit-evaluations`, agent.audit.evaluations)."""
    install_crds: bool = False
    audit_stream: TextIO = field(default=sys.stdout)
    policy_path: Path | None = None
    leader_elect: bool = False
    """Act only while holding the Lease `namespace`/`lease_name` (see agent.runtime.leadership)."""
    lease_name: str = LIVE_LEASE_NAME
    namespace: str = "kafka-autopilot"
    """The agent's own namespace: its Lease, and the ActionApprovals for cluster-scoped objects."""
    lease_duration: float = 15.0
    identity: str = ""
    """This replica's name in the Lease (and in its User-Agent); required with leader_elect."""
    scope_pod: PodScope | None = None
    """Sidecar mode: act only on this broker pod and the PVCs it mounts (agent.runtime.scope)."""
    events_topic: str | None = None
    """Publish every transition, action and hold to this Kafka topic as CloudEvents (needs `kafka`)."""
    events_buffer: int = DEFAULT_CAPACITY
    """Events kept while the topic is unreachable; later ones are dropped and counted."""
    state_gc_grace: float = DEFAULT_GRACE_SECONDS
    """How long a rule or object is gone before its AutopilotRuleObjects are collected (agent.runtime.collector)."""
    approvers: Approvers = field(default_factory=Approvers)
    """Who may answer ActionApprovals (`--approver-user/--approver-group`); none named: RBAC alone decides."""


def load_rules(paths: Sequence[Path]) -> tuple[list[Rule], list[Problem]]:
    result = merge_results(load_rule_paths(paths, catalog=CATALOG), drop_duplicated=True)
    for problem in result.problems:
        log.warning(f"rule problem (rule skipped): {problem}")
    return list(result.rules), list(result.problems)


async def run_agent(
    options: RunOptions,
    *,
    stop: asyncio.Event | None = None,
    listener: Callable[[AuditRecord], None] | None = None,
) -> int:
    """Run until SIGINT/SIGTERM, or until `stop` is set when the caller (the demo) passes one."""
    rules, problems = load_rules(options.rule_paths)
    policy: Policy | None = None
    if options.policy_path is not None:
        loaded = load_policy_file(options.policy_path, catalog=CATALOG)
        for problem in loaded.problems:
            log.warning(f"policy problem: {problem}")
        if loaded.problems:
            log.error("kafka-autopilot run: not running without the guardrails asked for")
            return 1
        policy = loaded.policies[0]
        for line in describe(policy):
            log.info("policy", name=policy.name, setting=line)
    dry_run = options.dry_run or (policy is not None and policy.dry_run)
    if policy is not None and not dry_run and policy.dry_run_actions:
        log.info("dry-run for some actions only", actions=sorted(policy.dry_run_actions))
    telemetry = Telemetry(object_label_kinds=FEW_OBJECTS | {TargetKind.PVC} if options.metrics_per_pvc else FEW_OBJECTS)
    clock = WallClock()
    events = _event_sink(options, telemetry)
    trail = AuditTrail(stream=options.audit_stream, listener=_both(listener, events.offer if events else None))
    try:
        kube = await connect(kubeconfig=options.kubeconfig, clock=clock)
    except KubeError as error:
        log.error(f"kafka-autopilot run: cannot reach Kubernetes: {error}")
        return 2
    async with kube, contextlib.AsyncExitStack() as stack:
        if options.install_crds:
            await install_crds(kube, replace_existing=not dry_run)  # a dry-run never replaces a live CRD
            if await kube.ensure_namespace(options.namespace):
                log.info("created the agent's namespace (approvals, Lease)", namespace=options.namespace)
        telemetry.set("kafka_autopilot_rule_problems", len(problems))
        file_rules = {rule.name: rule for rule in rules}
        not_run: dict[str, str] = {}
        if options.scope_pod is not None:
            rules, not_run = split_rules(rules, options.scope_pod)
        if options.storage_api is None:
            rules, without_pools = split_storage_pool_rules(rules)
            not_run.update(without_pools)
        for name, reason in not_run.items():
            log.info("rule not run: not configured here", rule=name, reason=reason)
        if not rules and not options.cluster_rules:
            log.error("kafka-autopilot run: no valid rule to run")
            return 1
        kafka = None
        if options.kafka:
            kafka = await stack.enter_async_context(KafkaAdmin(settings=options.kafka, clock=clock, lazily=True))
        # Service mode reads the cluster from watch-fed caches; a sidecar keeps its few namespaced reads
        # of one pod and its claims (its Role grants no cluster-wide list or watch).
        state_objects = watched_objects(kube, dry_run=dry_run)
        watched: list[WatchCache[Any]] = [state_objects]
        caches: ClusterCaches | None = None
        approval_objects = None
        # What the executors read at action time, fresh (a sidecar's narrowed to its pod and claims).
        inventory: KubeClient | ScopedInventory = kube
        cluster: ClusterCaches | ScopedInventory
        if options.scope_pod is None:
            cluster = caches = ClusterCaches(source=kube, rules=rules)
            approval_objects = watched_approvals(kube)
            watched.append(approval_objects)
        else:
            cluster = inventory = ScopedInventory(source=kube, scope=options.scope_pod)
        pools = options.storage_api.client() if options.storage_api else None
        dry_applier = DryRunApplier(record=lambda mutation: trail.write(_mutation_record(mutation, clock.now())))
        live_applier = LiveApplier(writer=kube, kafka=kafka, pools=pools)
        dry_run_actions = dry_run_action_names(dry_run=options.dry_run, policy=policy)

        def applier(action: str) -> Applier:
            return dry_applier if action in dry_run_actions else live_applier

        dependencies = Dependencies(
            kube=kube, inventory=inventory, kafka=kafka, pools=pools, clock=clock, watched=caches
        )

        def executors_with(applier_for: Callable[[str], Applier]) -> dict[str, Executor]:
            return build_executors(dependencies=dependencies, applier_for=applier_for)

        kube_events = EventQueue(
            kube=kube, clock=clock, on_dropped=lambda: telemetry.inc("kafka_autopilot_kube_events_dropped_total")
        )
        stack.push_async_callback(
            _stop_writing,
            kube_events,
            asyncio.create_task(kube_events.run(), name="kube-events"),
            what="Kubernetes Events not written at shutdown",
        )
        reports = None
        if options.cluster_rules:  # a dry-run agent leaves the status to the live one
            reports = ClusterRuleReports(
                kube=kube, events=RuleEvents(kube=kube_events), clock=clock, write_status=not dry_run
            )
        recorder = Recorder(
            trail=trail,
            telemetry=telemetry,
            clock=clock,
            events=KubeEvents(kube=kube_events),
            dry_run=dry_run,
            dry_run_actions=dry_run_actions,
            evaluations=EvaluationAudit(auditing=options.audit_evaluations),
            rule_reporter=reports,
        )
        store = StateStore(kube=kube, dry_run=dry_run, watched=state_objects)
        triggers = Triggers(rules)
        approvals = ApprovalFlow(
            store=ApprovalStore(kube=kube, watched=approval_objects),
            states=store,
            recorder=recorder,
            clock=clock,
            trigger=triggers.trigger,
            agent_namespace=options.namespace,
            dry_run=dry_run,
            approvers=options.approvers,
        )
        admission = AdmissionLedger(policy=policy, history_source=store) if policy is not None else None
        runner = ActionRunner(
            store=store,
            recorder=recorder,
            clock=clock,
            catalog=CATALOG,
            executors=executors_with(applier),
            dry_run_executors=executors_with(lambda _action: dry_applier),
            approvals=approvals,
            admission=admission,
        )
        cycle = RuleCycle(
            inventory=Inventory(
                cluster=cluster, prometheus=options.prometheus.client(clock=clock), pools=pools, kafka=kafka
            ),
            store=store,
            runner=runner,
            recorder=recorder,
            clock=clock,
            catalog=CATALOG,
            policy=policy,
            admission=admission,
            approvals=approvals,
        )
        gate = Gate(caches=caches, cycle=cycle, resume=cycle.resume) if caches is not None else None
        if caches is not None:
            trigger_on_changes(caches, triggers, lambda: scheduler.current_rules())  # noqa: PLW0108 (made below)
        scheduler = Scheduler(
            rules=rules,
            cycle=gate.gated_cycle if gate is not None else cycle,
            resume=gate.gated_resume if gate is not None else cycle.resume,
            clock=clock,
            recorder=recorder,
            telemetry=telemetry,
            triggers=triggers,
            not_configured=not_run,
        )

        def caches_synced() -> str | None:
            return not_synced([*watched, *(caches.caches() if caches is not None else ())])

        cluster_rules = None
        readiness = _first(caches_synced, scheduler.readiness)
        if reports is not None:
            cluster_rules = ClusterRuleWatch(
                kube=kube,
                loops=scheduler,
                reports=reports,
                recorder=recorder,
                catalog=CATALOG,
                clock=clock,
                file_rules=file_rules,
                not_run=not_run_reason(options),
                on_problems=lambda count: telemetry.set("kafka_autopilot_rule_problems", len(problems) + count),
            )
            readiness = _first(caches_synced, cluster_rules.readiness, scheduler.readiness)
        elector = None
        if options.leader_elect:
            kube.api_client.user_agent = f"{USER_AGENT} ({options.identity})"
            elector = LeaderElector(
                leases=kube,
                settings=ElectionSettings(
                    namespace=options.namespace,
                    lease_name=options.lease_name,
                    identity=options.identity,
                    timing=Timing.for_lease(options.lease_duration),
                ),
                clock=clock,
                trail=trail,
                telemetry=telemetry,
                dry_run=options.dry_run,
            )
            readiness = standby_readiness(elector, readiness)
        else:
            telemetry.set("kafka_autopilot_leader", 1)  # alone, it acts
        web = await serve(
            Endpoints(
                telemetry=telemetry,
                readiness=readiness,
                trigger=triggers.trigger,
                health=lambda: scheduler.health,
                stuck=runner.stuck,
            ),
            host=options.listen_host,
            port=options.listen_port,
        )
        stack.push_async_callback(web.cleanup)
        log.info(
            "agent started",
            rules=[rule.name for rule in rules],
            dry_run=dry_run,
            policy=policy.name if policy is not None else None,
            listen=f"{options.listen_host}:{options.listen_port}",
        )
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
        if elector is not None:
            try:
                if not await until_leading(elector, stop):
                    log.info("standby stopped")
                    return 0
            except LeaseNamespaceMissingError as error:
                log.warning(f"kafka-autopilot run: {error}")
                return 2
        if events is not None:
            stack.push_async_callback(
                _stop_writing,
                events,
                asyncio.create_task(events.run(), name="events"),
                what=f"events not published to {events.topic} at shutdown",
            )
        tasks = [asyncio.create_task(run_when_state_served(kube, scheduler, watched, caches), name="agent")]
        if options.scope_pod is None:  # a sidecar does not collect: its pod is its whole world
            collector = StateCollector(
                store=store,
                inventory=cycle.inventory,
                rules=scheduler.current_rules,
                kept=scheduler.held_rules,
                trail=trail,
                clock=clock,
                # never on a partial view of the rules: AutopilotRules not listed yet would all look gone
                acting=lambda: (elector is None or elector.leading) and (cluster_rules is None or cluster_rules.synced),
                grace_seconds=options.state_gc_grace,
                history_seconds=policy.history_seconds if policy is not None else 0,
            )
            tasks.append(asyncio.create_task(collect_forever(collector, clock), name="state-collector"))
        if cluster_rules is not None:
            tasks.append(asyncio.create_task(cluster_rules.run(), name="cluster-rules"))
        keeping = []
        if elector is not None:
            keeping.append(
                asyncio.create_task(elector.keep(on_lost=lambda _: stop_acting(runner, tasks)), name="leadership")
            )
        stopping = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait([*tasks, *keeping, stopping], return_when=asyncio.FIRST_COMPLETED)
        if keeping and keeping[0] in done:
            stop_acting(runner, tasks)
            stopping.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)
            failure = keeping[0].exception()
            reason = keeping[0].result() if failure is None else f"{type(failure).__name__}: {failure}"
            log.warning(f"kafka-autopilot run: lost leadership, stopped acting: {reason}")
            return EXIT_LEADERSHIP_LOST
        failed = [task for task in tasks if task in done]
        for task in [*tasks, *keeping, stopping]:
            task.cancel()
        await asyncio.gather(*tasks, *keeping, stopping, return_exceptions=True)
        if elector is not None:
            stop_acting(runner, tasks)
            await elector.release()
        for task in failed:
            cause = task.exception() if not task.cancelled() else None
            log.error("agent task ended unexpectedly", task=task.get_name(), error=repr(cause))
            log.warning(f"kafka-autopilot run: {task.get_name()} stopped: {cause!r}")
        if failed:
            return 70
        log.info("agent stopped")
    return 0


EVENTS_DRAIN_SECONDS = 5.0
"""At shutdown, how long queued events (CloudEvents, Kubernetes Events) may take to be written before they are
given up."""


def _event_sink(options: RunOptions, telemetry: Telemetry) -> CloudEventSink | None:
    if options.events_topic is None or options.kafka is None:
        return None
    settings = options.kafka
    return CloudEventSink(
        topic=options.events_topic,
        source=f"kafka-autopilot/{options.namespace}/{options.identity or 'agent'}",
        producer_factory=lambda: event_producer(settings),
        capacity=options.events_buffer,
        on_published=lambda: telemetry.inc("kafka_autopilot_events_published_total"),
        on_dropped=lambda: telemetry.inc("kafka_autopilot_events_dropped_total"),
        on_error=lambda why: log.warning("events topic unreachable; buffering", topic=options.events_topic, error=why),
    )


def _both(
    first: Callable[[AuditRecord], None] | None, second: Callable[[AuditRecord], None] | None
) -> Callable[[AuditRecord], None] | None:
    if first is None or second is None:
        return first or second

    def each(record: AuditRecord) -> None:
        first(record)
        second(record)

    return each


class _Buffered(Protocol):
    """A queue of records its own task writes: the CloudEvents sink, the Kubernetes Event queue."""

    @property
    def buffered(self) -> int: ...

    async def drained(self) -> None: ...


async def _stop_writing(queue: _Buffered, task: asyncio.Task[None], *, what: str) -> None:
    """Give the queued records a moment to be written, then stop the writer; say what was left."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(queue.drained(), EVENTS_DRAIN_SECONDS)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if queue.buffered:
        log.warning(what, events=queue.buffered)


async def run_when_state_served(
    kube: KubeClient, scheduler: Scheduler, watched: Sequence[WatchCache[Any]], caches: ClusterCaches | None
) -> None:
    """Start the watch-fed caches and the rules once the API server serves the agent's state CRD; while
    it does not, say so once (naming the fix), keep every rule's health on that reason (readiness stays
    false: no cycle ran) and keep checking with backoff."""

    def missing(message: str) -> None:
        log.error("state CRD not served", error=message)
        print(f"kafka-autopilot run: {message}", file=sys.stderr, flush=True)
        scheduler.health.update({rule.name: message for rule in scheduler.current_rules()})

    await wait_until_served(kube, on_missing=missing)
    async with asyncio.TaskGroup() as group:
        group.create_task(run_caches(watched), name="caches")
        if caches is not None:
            group.create_task(caches.run(rules=scheduler.current_rules), name="cluster-caches")
        group.create_task(scheduler.run(), name="rules")


def standby_readiness(elector: LeaderElector, leading: Callable[[], str | None]) -> Callable[[], str | None]:
    """A standby is ready (it serves health and metrics, and must not hold up a rolling update);
    the leader is ready once its caches are synced and each rule's first cycle ran (and, with
    --cluster-rules, the AutopilotRules were listed)."""

    def readiness() -> str | None:
        return leading() if elector.leading else None

    return readiness


def _first(*checks: Callable[[], str | None]) -> Callable[[], str | None]:
    """The first check that says why the agent is not ready, or None."""

    def readiness() -> str | None:
        return next((why for check in checks if (why := check()) is not None), None)

    return readiness


def not_run_reason(options: RunOptions) -> Callable[[Rule], str | None]:
    """Why this agent does not run a rule (a sidecar's scope, no storage API), or None: for the rules
    that arrive while it runs (AutopilotRules), as `split_rules` and `split_storage_pool_rules` say at start."""

    def why(rule: Rule) -> str | None:
        not_run: dict[str, str] = {}
        if options.scope_pod is not None:
            not_run.update(split_rules([rule], options.scope_pod)[1])
        if options.storage_api is None:
            not_run.update(split_storage_pool_rules([rule])[1])
        return not_run.get(rule.name)

    return why


async def until_leading(elector: LeaderElector, stop: asyncio.Event) -> bool:
    """Stand by until this replica leads (True) or is told to stop first (False)."""
    acquiring = asyncio.create_task(elector.acquire(), name="election")
    stopping = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait([acquiring, stopping], return_when=asyncio.FIRST_COMPLETED)
    for task in (acquiring, stopping):
        task.cancel()
    await asyncio.gather(acquiring, stopping, return_exceptions=True)
    failure = acquiring.exception() if acquiring in done and not acquiring.cancelled() else None
    if failure is not None:
        raise failure
    if stop.is_set():
        await elector.release()
        return False
    return elector.leading


def stop_acting(runner: ActionRunner, tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel the rule loops, the watches and every action in flight, synchronously (no await)."""
    for task in tasks:
        task.cancel()
    runner.cancel_all()


def dry_run_action_names(*, dry_run: bool, policy: Policy | None) -> frozenset[str]:
    """The actions whose executor gets the dry-run applier: all of them with --dry-run or a policy's
    `dryRun: true`, else the policy's `dryRunActions`."""
    return frozenset(action for action in CATALOG if dry_run or (policy is not None and policy.action_dry_run(action)))


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
