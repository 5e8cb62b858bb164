"""The `kafka-autopilot` command: lint, test and backtest rules, run the agent, explain and report on it,
answer approvals.

In the checkout (not in the wheel) two more commands exist, `sandbox` and `demo`: they drive the local
real environment, which does not ship. This module never imports it; `build_parser` looks the module
`sandbox.cli` up by name (importlib), only when the `sandbox` package can be found, and lets it add its
commands. A wheel's user therefore gets argparse's usual "invalid choice" for them. `backtest`,
`explain` and `report` are in `agent.runtime.tool_commands`, the approval commands in
`agent.runtime.approval_commands`.

`lint` and `test` run the real promtool and prometheus, found through --promtool / --prometheus-bin,
else $KAFKA_AUTOPILOT_PROMTOOL / $KAFKA_AUTOPILOT_PROMETHEUS, else PATH.

Exit codes mean the same for every subcommand:
  0  everything passed
  1  the input has problems (lint errors, failed rule tests)
  2  the command could not run (bad arguments, unreadable test file, Prometheus missing or failing)
  70 an internal error (a bug: please report it with the message)
  75 `run --leader-elect` only: this replica led and lost the Lease; it stopped acting (restart it)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TextIO

from agent import __version__
from agent.actions.registry import CATALOG
from agent.adapters.errors import PrometheusQueryError
from agent.adapters.files import expand_paths, load_paths
from agent.adapters.local_prometheus import (
    BinaryNotFoundError,
    LocalPrometheusError,
    find_binaries,
    find_promtool,
)
from agent.adapters.promtool import PromtoolError, check_promql
from agent.audit.cloudevents import DEFAULT_CAPACITY as DEFAULT_EVENTS_CAPACITY
from agent.audit.evaluations import EvaluationAuditing
from agent.audit.timeline import Timeline
from agent.audit.trail import AuditRecord, AuditTrail
from agent.core.aliases import KEY_ALIASES
from agent.core.approvals import Approvers
from agent.core.collection import DEFAULT_GRACE_SECONDS
from agent.core.diagnostics import Problem
from agent.core.loader import LoadResult, merge_results
from agent.core.rules import ConditionProvider, Rule
from agent.runtime import approval_commands, ruletest, tool_commands
from agent.runtime.kafka_flags import KafkaFlagError, add_kafka_arguments, kafka_settings
from agent.runtime.leadership import DRY_RUN_LEASE_NAME, EXIT_LEADERSHIP_LOST, LIVE_LEASE_NAME, default_lease_name
from agent.runtime.logs import LOG_FORMATS, LOG_LEVELS, configure_logging
from agent.runtime.main import PrometheusSettings, RunOptions, StorageApiSettings, run_agent
from agent.runtime.scope import SCOPE_POD_ENV, PodScope, ScopeError

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_CANNOT_RUN = 2
EXIT_INTERNAL = 70

CHECKOUT_COMMANDS = "sandbox.cli"
"""The module that adds `sandbox` and `demo` (checkout only), looked up by name: see the module docstring."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(log_format=getattr(args, "log_format", "json"), level=getattr(args, "log_level", "info"))
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the promise is "never a traceback": say what broke, in one line
        print(f"kafka-autopilot: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka-autopilot",
        description="Autopilot and remediation agent for Apache Kafka on Kubernetes.",
        epilog="Exit codes: 0 ok, 1 problems found, 2 could not run, 70 internal error, 75 lost leadership.",
    )
    parser.add_argument("--version", action="version", version=f"kafka-autopilot {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    lint = commands.add_parser(
        "lint",
        help="check AutopilotRule and AutopilotPolicy files and report every problem with file:line:col",
        description="Check AutopilotRule and AutopilotPolicy YAML files (or folders of them), each document "
        "by its kind. Prints each problem as file:line:col: rule or policy: field: message. Exit 0 when clean, "
        "1 on errors.",
    )
    lint.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="rule or policy files or folders")
    lint.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    lint.add_argument("--aliases", action="store_true", help="list the keyAlias names and their PromQL, then exit")
    lint.add_argument(
        "--no-promql", action="store_true", help="skip the PromQL syntax check (which uses the real promtool)"
    )
    lint.add_argument(
        "--promtool",
        type=Path,
        metavar="PATH",
        help="the promtool binary for the PromQL check (default: $KAFKA_AUTOPILOT_PROMTOOL, else promtool on PATH)",
    )
    lint.set_defaults(command=cmd_lint)

    test = commands.add_parser(
        "test",
        help="run rule unit tests (promtool-style YAML) against the real Prometheus engine",
        description="Run rule tests: input series are backfilled into a temporary Prometheus TSDB, "
        "queried at each evaluation step by a real Prometheus on loopback, and the agent's core "
        "decides with a simulated executor. Exit 0 when all pass, 1 on failures, 2 if they cannot run.",
    )
    test.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR", help="test files or folders")
    test.add_argument("--audit", type=Path, metavar="FILE", help="write the audit trail as JSON lines to FILE")
    test.add_argument("--timeline", action="store_true", help="print each test's transitions and actions")
    test.add_argument(
        "--promtool",
        type=Path,
        metavar="PATH",
        help="the promtool binary that backfills the series (default: $KAFKA_AUTOPILOT_PROMTOOL, else PATH)",
    )
    test.add_argument(
        "--prometheus-bin",
        type=Path,
        metavar="PATH",
        help="the prometheus server binary that evaluates the conditions (default: $KAFKA_AUTOPILOT_PROMETHEUS, "
        "else PATH)",
    )
    test.set_defaults(command=cmd_test)

    run = commands.add_parser(
        "run",
        help="run the agent: evaluate rules, act, record (use --dry-run to change nothing)",
        description="Run the agent until SIGTERM/SIGINT. Audit records go to stdout as JSON lines (or --audit "
        "FILE); logs go to stderr. Health, readiness and metrics are served on --listen.",
    )
    run.add_argument("--rules", nargs="*", type=Path, default=[], metavar="PATH", help="rule files or folders")
    run.add_argument("--cluster-rules", action="store_true", help="also run the AutopilotRule objects in the cluster")
    run.add_argument(
        "--policy", type=Path, metavar="FILE", help="guardrail policy: an AutopilotPolicy YAML file (see policies/)"
    )
    run.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster config)")
    run.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus-compatible query endpoint")
    run.add_argument("--prometheus-bearer-token-file", type=Path, metavar="FILE")
    run.add_argument("--prometheus-tenant", metavar="ID", help="X-Scope-OrgID header, for Mimir/Cortex/Thanos")
    run.add_argument("--prometheus-ca-file", type=Path, metavar="FILE")
    run.add_argument("--prometheus-insecure-skip-verify", action="store_true")
    add_kafka_arguments(run, bootstrap_help="Kafka bootstrap servers (needed for node remediation)")
    run.add_argument(
        "--storage-api",
        metavar="URL",
        help="OpenStorage SDK REST gateway (e.g. http://portworx-api:9021); needed by StoragePool rules",
    )
    run.add_argument(
        "--storage-api-token-file", type=Path, metavar="FILE", help="bearer token for the storage API, if it has auth"
    )
    run.add_argument(
        "--events-topic",
        metavar="TOPIC",
        help="also publish every transition, action and hold to this Kafka topic as a CloudEvents 1.0 JSON message "
        "(keyed by object, idempotent producer; needs --kafka). Never blocks an action: while the topic is "
        "unreachable events wait in a bounded buffer, then are dropped and counted",
    )
    run.add_argument(
        "--events-buffer",
        type=int,
        default=DEFAULT_EVENTS_CAPACITY,
        metavar="N",
        help=f"events kept while the topic is unreachable (default {DEFAULT_EVENTS_CAPACITY})",
    )
    run.add_argument("--dry-run", action="store_true", help="record what would be done; change nothing")
    run.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="health and metrics address")
    run.add_argument(
        "--metrics-per-pvc",
        action="store_true",
        help="also count PVC rules' actions per PVC (kafka_autopilot_object_actions_total{object=...}): one series "
        "per claim and outcome, so off by default; brokers, nodes and pools always have it",
    )
    run.add_argument(
        "--install-crds",
        action="store_true",
        help="create or update the agent's CRDs first (with --dry-run: create only missing ones, never replace). "
        "Without it and without the CRDs in the cluster, the agent says so once, stays not ready and checks "
        "again with backoff until they appear",
    )
    run.add_argument(
        "--audit",
        type=Path,
        metavar="FILE",
        help="append audit records to FILE instead of stdout (without it, stdout carries only audit records)",
    )
    run.add_argument(
        "--audit-evaluations",
        type=_evaluation_auditing,
        default=EvaluationAuditing(),
        metavar="changes|all|sample:N",
        help="which per-object evaluation records to write: changes (an object's first, then only when its "
        "verdict or state changes), sample:N (the changes, and every object every N-th cycle) or all (every "
        "object every cycle); transitions, actions, policy holds and errors are always written, and a per-rule "
        "evaluation-summary when its counts change or once a minute (default changes)",
    )
    run.add_argument(
        "--state-gc-grace",
        type=int,
        default=DEFAULT_GRACE_SECONDS,
        metavar="SECONDS",
        help="how long a rule or object must be gone before the leader deletes its AutopilotRuleObjects; those "
        f"back to Normal with no history a policy counts go at the next collection (default {DEFAULT_GRACE_SECONDS})",
    )
    run.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="json",
        help="the agent's own logs, on stderr: json (one object per line, with 'level') or console (default json)",
    )
    run.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="(default info)")
    run.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE") or "kafka-autopilot",
        metavar="NAMESPACE",
        help="the agent's own namespace: its Lease, and approvals for nodes and pools (default: $POD_NAMESPACE, "
        "else kafka-autopilot; --install-crds creates it when missing)",
    )
    approvers = run.add_argument_group(
        "approvers",
        "Who may answer ActionApprovals. The approve/decline commands record the caller's Kubernetes user and "
        "groups (a SelfSubjectReview); with any of these flags an answer by anyone else, or one that records no "
        "user, is refused: put back to pending, with an audit record and a Warning Event saying who and why. "
        "Without them, whoever may write ActionApprovals (RBAC) answers. docs/operations.md, 'Who approved', says "
        "what the recorded identity does and does not guarantee.",
    )
    approvers.add_argument(
        "--approver-user", action="append", default=[], metavar="USER", help="a Kubernetes user name (repeatable)"
    )
    approvers.add_argument(
        "--approver-group", action="append", default=[], metavar="GROUP", help="a Kubernetes group (repeatable)"
    )
    election = run.add_argument_group(
        "high availability",
        "With --leader-elect, replicas share a coordination.k8s.io/v1 Lease and only its holder acts; the others "
        "stand by (serving /healthz, /readyz and /metrics). A leader that loses the Lease stops acting at once and "
        f"exits with {EXIT_LEADERSHIP_LOST}, to be restarted as a standby; on SIGTERM it releases the Lease.",
    )
    election.add_argument("--leader-elect", action="store_true", help="act only while holding the Lease")
    election.add_argument(
        "--lease-name",
        metavar="NAME",
        help=f"(default {LIVE_LEASE_NAME}; with --dry-run {DRY_RUN_LEASE_NAME}, so a dry-run agent never "
        "competes with a live one; the Helm chart passes one per release)",
    )
    election.add_argument(
        "--lease-duration",
        type=int,
        default=15,
        metavar="SECONDS",
        help="how long a standby waits for a silent leader before taking over (default 15; renew deadline and "
        "retry period follow as 2/3 and 2/15 of it)",
    )
    election.add_argument(
        "--identity",
        default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        metavar="NAME",
        help="this replica's name in the Lease (default $POD_NAME, else hostname-pid)",
    )
    run.add_argument(
        "--scope-pod",
        metavar="NAMESPACE/NAME",
        default=os.environ.get(SCOPE_POD_ENV) or None,
        help="sidecar mode: act only on this broker pod and the PVCs it mounts; node and storage-pool rules "
        f"do not run (default: ${SCOPE_POD_ENV})",
    )
    run.set_defaults(command=cmd_run)

    approval_commands.add_parsers(commands)
    tool_commands.add_parsers(commands)

    checkout_commands = _checkout_commands()
    if checkout_commands is not None:
        checkout_commands.add_parsers(commands)
    return parser


def _evaluation_auditing(text: str) -> EvaluationAuditing:
    try:
        return EvaluationAuditing.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _checkout_commands() -> ModuleType | None:
    """`sandbox.cli` when the checkout's sandbox package is importable, else None (an installed wheel)."""
    package = CHECKOUT_COMMANDS.partition(".")[0]
    if importlib.util.find_spec(package) is None or importlib.util.find_spec(CHECKOUT_COMMANDS) is None:
        return None
    return importlib.import_module(CHECKOUT_COMMANDS)


# --- lint --------------------------------------------------------------------------------------


def cmd_lint(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    if args.aliases:
        for alias, query in KEY_ALIASES.items():
            print(f"{alias}\t{query}", file=out)
        return EXIT_OK
    if not args.paths:
        print("kafka-autopilot lint: give at least one rule file or folder", file=sys.stderr)
        return EXIT_CANNOT_RUN
    missing = [path for path in args.paths if not path.exists()]
    for path in missing:
        print(f"{path}: no such file or folder", file=sys.stderr)
    if missing:
        return EXIT_CANNOT_RUN
    promtool = None
    if not args.no_promql:
        try:
            promtool = find_promtool(given=args.promtool)
        except BinaryNotFoundError as error:
            print(f"kafka-autopilot lint: {error}; --no-promql skips the PromQL check", file=sys.stderr)
            return EXIT_CANNOT_RUN
    per_file = list(load_paths(args.paths, catalog=CATALOG))
    result = merge_results(rules for rules, _ in per_file)
    policies = [policy for _, found in per_file for policy in found.policies]
    policy_problems = tuple(problem for _, found in per_file for problem in found.problems)
    result = replace(result, problems=result.problems + policy_problems)
    if promtool is not None:
        rejected = promql_problems(result.rules, promtool=promtool)
        names = {problem.rule for problem in rejected}
        result = LoadResult(
            rules=tuple(rule for rule in result.rules if rule.name not in names),
            problems=result.problems + tuple(rejected),
        )
    result = replace(result, problems=tuple(sorted(result.problems, key=_position)))
    if args.format == "json":
        for problem in result.problems:
            print(
                json.dumps(
                    {
                        "file": problem.location.file,
                        "line": problem.location.line,
                        "column": problem.location.column,
                        "rule": problem.rule,
                        "field": problem.field,
                        "severity": problem.severity.value,
                        "message": problem.message,
                    }
                ),
                file=out,
            )
    else:
        for problem in result.problems:
            print(problem, file=out)
    policies_valid = f"; {len(policies)} policies valid" if policies or policy_problems else ""
    print(
        f"{len(result.rules)} rules valid, {len(result.errors)} errors{policies_valid}",
        file=sys.stderr,
    )
    return EXIT_PROBLEMS if result.errors else EXIT_OK


def _position(problem: Problem) -> tuple[str, int, int]:
    return (problem.location.file, problem.location.line, problem.location.column)


def promql_problems(rules: Sequence[Rule], *, promtool: Path) -> list[Problem]:
    """Problems for the conditions the real PromQL parser rejects; a warning if promtool fails to answer."""
    expressions = [
        (rule, expression)
        for rule in rules
        if rule.conditions.provider is ConditionProvider.PROMETHEUS
        for expression in rule.conditions.expressions
    ]
    try:
        rejected = check_promql([expression.query for _, expression in expressions], promtool=promtool)
    except PromtoolError as error:
        print(f"warning: PromQL not checked: {error}", file=sys.stderr)
        return []
    problems = []
    for index, message in sorted(rejected.items()):
        rule, expression = expressions[index]
        problems.append(
            Problem(
                location=expression.location or rule.source,
                rule=rule.name,
                field=expression.field_path,
                message=f"bad PromQL in `{expression.query}`: {message}",
            )
        )
    return problems


# --- test ---------------------------------------------------------------------------


def cmd_test(args: argparse.Namespace) -> int:
    files = [path for path in expand_paths(args.paths) if path.exists()]
    missing = [path for path in args.paths if not path.exists()]
    if missing or not files:
        for path in missing:
            print(f"{path}: no such file or folder", file=sys.stderr)
        if not missing:
            print("no rule test files found", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        binaries = find_binaries(prometheus=args.prometheus_bin, promtool=args.promtool)
    except BinaryNotFoundError as error:
        print(f"kafka-autopilot test: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    audit_stream = args.audit.open("w", encoding="utf-8") if args.audit else None
    trail = AuditTrail(stream=audit_stream) if audit_stream else None
    passed = failed = 0
    cannot_run = False
    try:
        for path in files:
            try:
                test_file = ruletest.read_test_file(path)
            except ruletest.RuleTestFileError as error:
                print(str(error), file=sys.stderr)
                cannot_run = True
                continue
            for test in test_file.tests:
                records: list[AuditRecord] = []
                try:
                    outcome = ruletest.run_test(test_file, test, binaries=binaries, on_record=records.append)
                except (
                    ruletest.RuleTestFileError,
                    PrometheusQueryError,
                    LocalPrometheusError,
                    NotImplementedError,
                ) as error:
                    print(f"ERROR {path}: {test.name}: {error}", file=sys.stderr)
                    cannot_run = True
                    continue
                if trail is not None:
                    for record in records:
                        trail.write(record)
                if args.timeline:
                    print_timeline(records, out=sys.stdout)
                if outcome.passed:
                    passed += 1
                    print(f"PASS {path}: {test.name}")
                else:
                    failed += 1
                    print(f"FAIL {path}: {test.name}")
                    for failure in outcome.failures:
                        print(f"  {failure}")
    finally:
        if audit_stream is not None:
            audit_stream.close()
    print(f"rules: {passed} passed, {failed} failed")
    if cannot_run:
        return EXIT_CANNOT_RUN
    return EXIT_PROBLEMS if failed else EXIT_OK


# --- run -----------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    if args.policy is not None and not args.policy.is_file():
        print(f"kafka-autopilot run: --policy {args.policy}: no such file", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if not args.rules and not args.cluster_rules:
        print("kafka-autopilot run: give --rules PATH... or --cluster-rules", file=sys.stderr)
        return EXIT_CANNOT_RUN
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"kafka-autopilot run: --listen must be HOST:PORT, got {args.listen!r}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        kafka = kafka_settings(args)
    except KafkaFlagError as error:
        print(f"kafka-autopilot run: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if args.state_gc_grace < 0:
        print(
            f"kafka-autopilot run: --state-gc-grace must be 0 or more seconds, got {args.state_gc_grace}",
            file=sys.stderr,
        )
        return EXIT_CANNOT_RUN
    if args.leader_elect and args.lease_duration < 3:
        print(
            f"kafka-autopilot run: --lease-duration must be at least 3 seconds, got {args.lease_duration}",
            file=sys.stderr,
        )
        return EXIT_CANNOT_RUN
    if args.leader_elect and not args.identity.strip():
        print("kafka-autopilot run: --identity must not be empty", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if args.events_topic is not None and kafka is None:
        print("kafka-autopilot run: --events-topic needs --kafka BOOTSTRAP", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if args.events_buffer < 1:
        print(f"kafka-autopilot run: --events-buffer must be at least 1, got {args.events_buffer}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if any(not name.strip() for name in (*args.approver_user, *args.approver_group)):
        print("kafka-autopilot run: --approver-user and --approver-group must not be empty", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        scope_pod = PodScope.parse(args.scope_pod) if args.scope_pod else None
    except ScopeError as error:
        print(f"kafka-autopilot run: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    audit = args.audit.open("a", encoding="utf-8") if args.audit else sys.stdout
    options = RunOptions(
        rule_paths=args.rules,
        cluster_rules=args.cluster_rules,
        kubeconfig=args.kubeconfig,
        prometheus=PrometheusSettings(
            url=args.prometheus,
            bearer_token_file=args.prometheus_bearer_token_file,
            tenant=args.prometheus_tenant,
            ca_file=args.prometheus_ca_file,
            insecure_skip_verify=args.prometheus_insecure_skip_verify,
        ),
        kafka=kafka,
        storage_api=StorageApiSettings(url=args.storage_api, token_file=args.storage_api_token_file)
        if args.storage_api
        else None,
        dry_run=args.dry_run,
        listen_host=host,
        listen_port=int(port),
        metrics_per_pvc=args.metrics_per_pvc,
        audit_evaluations=args.audit_evaluations,
        state_gc_grace=float(args.state_gc_grace),
        install_crds=args.install_crds,
        audit_stream=audit,
        leader_elect=args.leader_elect,
        lease_name=args.lease_name or default_lease_name(dry_run=args.dry_run),
        namespace=args.namespace,
        lease_duration=float(args.lease_duration),
        identity=args.identity.strip(),
        policy_path=args.policy,
        scope_pod=scope_pod,
        events_topic=args.events_topic,
        events_buffer=args.events_buffer,
        approvers=Approvers(users=frozenset(args.approver_user), groups=frozenset(args.approver_group)),
    )
    try:
        return asyncio.run(run_agent(options))
    finally:
        if audit is not sys.stdout:
            audit.close()


def print_timeline(records: Sequence[AuditRecord], *, out: TextIO) -> None:
    timeline = Timeline()
    for record in records:
        line = timeline.line(record)
        if line is not None:
            print(line, file=out)


if __name__ == "__main__":
    sys.exit(main())
