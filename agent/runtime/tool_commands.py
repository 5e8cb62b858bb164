"""`kafka-autopilot backtest`, `explain` and `report`: the tools an SRE reaches for around the agent.

- `backtest`: what the rules would have done over a window of real Prometheus history
  (`agent.runtime.backtest`, printed by `backtest_output`, drawn by `backtest_plot`);
- `explain OBJECT`: why the agent did (or did not) act on one object, from the cluster, Prometheus and the
  agent's state objects (`agent.runtime.explain`);
- `report`: an audit trail in numbers (`agent.audit.report`).

None of them changes anything. Exit codes as for every command: 0 done, 2 could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from agent.actions.registry import CATALOG
from agent.adapters.clock import WallClock
from agent.adapters.errors import KubeError, PrometheusQueryError
from agent.adapters.files import load_policy_file, load_rule_paths
from agent.adapters.kafka.producer import read_topic
from agent.adapters.prometheus import PrometheusClient
from agent.audit import report as audit_report
from agent.core.loader import merge_results
from agent.core.policy import Policy
from agent.core.rules import Rule
from agent.runtime import backtest_output
from agent.runtime.backtest import BacktestError, make_window, parse_time, run_backtest
from agent.runtime.backtest_plot import PLOT_SUFFIXES, PlotUnavailableError, write_plot
from agent.runtime.backtest_sources import ProgressBar, cluster_objects
from agent.runtime.explain import ExplainError, gather, parse_object, render_text
from agent.runtime.kafka_flags import KafkaFlagError, add_kafka_arguments, kafka_settings
from agent.runtime.ruletest_file import RuleTestFileError, read_inventory

EXIT_OK = 0
EXIT_CANNOT_RUN = 2


def add_parsers(commands: Any) -> None:
    """Register the three commands on the main parser's subparsers."""
    backtest = commands.add_parser(
        "backtest",
        help="replay rules over a window of real Prometheus history: what they would have done",
        description="Evaluate the rules at every --step of the window with the agent's matching, state machine and "
        "planners (one range query per distinct expression) and a simulated executor; print a table per object "
        "and a summary. Nothing is changed. Exit 0 when it ran, 2 when it could not.",
    )
    backtest.add_argument("--rules", nargs="+", type=Path, required=True, metavar="FILE|DIR", help="rule files")
    backtest.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus-compatible query endpoint")
    backtest.add_argument(
        "--from", dest="start", required=True, metavar="TIME", help="RFC 3339 (2026-01-02T03:04:05Z) or -24h"
    )
    backtest.add_argument("--to", dest="end", default="now", metavar="TIME", help="RFC 3339, -1h or now (default)")
    backtest.add_argument("--step", default="30s", metavar="DURATION", help="evaluation step (default 30s)")
    backtest.add_argument("--kubeconfig", type=Path, help="the cluster whose objects to replay (default: $KUBECONFIG)")
    backtest.add_argument(
        "--objects", type=Path, metavar="FILE", help="a YAML inventory (`objects:` as in rule tests), not a cluster"
    )
    backtest.add_argument(
        "--plot", type=Path, metavar="OUT.png|OUT.html", help="draw each object's panel (needs kafka-autopilot[tools])"
    )
    backtest.add_argument(
        "--policy", type=Path, metavar="FILE", help="the agent's AutopilotPolicy: its holds and windows apply"
    )
    backtest.add_argument("--json", action="store_true", help="print the summary and records as one JSON document")
    backtest.set_defaults(command=cmd_backtest)

    explain = commands.add_parser(
        "explain",
        help="why the agent did (or did not) act on one object: values, state, cooldown, holds, approvals, next",
        description="For each rule that selects OBJECT: the expression's value now and its threshold, the state and "
        "since when, the cooldown left, the last action and its outcome, a hold with its limit and when it lifts, "
        "a pending approval, and what the next cycle would do (the core's own decision, nothing applied). Reads "
        "the cluster, Prometheus and the agent's state objects; the agent's process is not needed. Exit 0 when "
        "explained, 2 when it could not be.",
    )
    explain.add_argument(
        "object", metavar="OBJECT", help="pvc/NAMESPACE/NAME, pod/NAMESPACE/NAME, node/NAME or pool/NODE/POOL"
    )
    explain.add_argument("--rules", nargs="+", type=Path, required=True, metavar="FILE|DIR", help="the agent's rules")
    explain.add_argument("--rule", metavar="NAME", help="only this rule")
    explain.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    explain.add_argument("--prometheus", metavar="URL", help="for the values now and the next cycle")
    explain.add_argument("--policy", type=Path, metavar="FILE", help="the agent's AutopilotPolicy, for its holds")
    explain.add_argument("--dry-run", action="store_true", help="read the dry-run agent's state objects")
    explain.add_argument("--json", action="store_true", help="one JSON document")
    explain.set_defaults(command=cmd_explain)

    report = commands.add_parser(
        "report",
        help="what an audit trail says: actions by rule and outcome, trigger -> verified p50/p95, declines, holds",
        description="Read an audit trail (JSON lines, from `run --audit FILE` or the agent's stdout) and print "
        "the actions by rule and outcome, the time from trigger to verified action (p50, p95), the declines at "
        "maxsize and the holds by reason. Lines that are not audit records (logs) are skipped and counted. "
        "Exit 0 when reported, 2 when the file cannot be read.",
    )
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--audit", type=Path, metavar="FILE", help="the audit trail, JSON lines")
    source.add_argument(
        "--events-topic", metavar="TOPIC", help="the decision stream of `run --events-topic` (needs --kafka)"
    )
    add_kafka_arguments(report, bootstrap_help="Kafka bootstrap servers, for --events-topic")
    report.add_argument("--since", metavar="TIME", help="only records from then: RFC 3339 or -24h")
    report.add_argument("--json", action="store_true", help="one JSON document")
    report.set_defaults(command=cmd_report)


# --- backtest ------------------------------------------------------------------------------------


def cmd_backtest(args: argparse.Namespace) -> int:
    def cannot_run(message: str) -> int:
        return _cannot_run("backtest", message)

    if args.plot is not None and args.plot.suffix.lower() not in PLOT_SUFFIXES:
        return cannot_run(f"--plot must end in {' or '.join(PLOT_SUFFIXES)}, got {args.plot}")
    try:
        rules, policy = _rules_and_policy(args)
        window = make_window(start=args.start, end=args.end, step=args.step, now=WallClock().now())
        if args.objects is not None:
            objects = list(read_inventory(args.objects))
        else:
            objects = asyncio.run(cluster_objects(args.kubeconfig, rules))
    except (_CannotRunError, BacktestError, RuleTestFileError, KubeError) as error:
        return cannot_run(str(error))
    progress = ProgressBar(stream=sys.stderr)
    with PrometheusClient(url=args.prometheus, clock=WallClock(), timeout_seconds=60) as client:
        try:
            outcome = run_backtest(
                rules=rules,
                objects=objects,
                window=window,
                range_query=client.range_query,
                on_progress=progress.show,
                policy=policy,
            )
        except (BacktestError, PrometheusQueryError) as error:
            return cannot_run(str(error))
        finally:
            progress.done()
    if args.json:
        print(json.dumps(backtest_output.as_json(outcome), indent=2, default=str))
    else:
        print(backtest_output.render_text(outcome))
    if args.plot is not None:
        try:
            write_plot(outcome, args.plot)
        except PlotUnavailableError as error:
            return cannot_run(str(error))
        print(f"plot: {args.plot}", file=sys.stderr)
    return EXIT_OK


# --- explain -------------------------------------------------------------------------------------


def cmd_explain(args: argparse.Namespace) -> int:
    def cannot_run(message: str) -> int:
        return _cannot_run("explain", message)

    try:
        ref = parse_object(args.object)
        rules, policy = _rules_and_policy(args, only=args.rule)
    except (ExplainError, _CannotRunError) as error:
        return cannot_run(str(error))
    try:
        explanations = asyncio.run(
            gather(
                ref=ref,
                rules=rules,
                kubeconfig=args.kubeconfig,
                prometheus_url=args.prometheus,
                policy=policy,
                dry_run=args.dry_run,
            )
        )
    except (ExplainError, KubeError, PrometheusQueryError) as error:
        return cannot_run(str(error))
    if args.json:
        print(json.dumps([item.as_dict() for item in explanations], indent=2))
    else:
        print(render_text(explanations))
    return EXIT_OK


# --- report --------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    if args.events_topic is not None and not args.kafka:
        return _cannot_run("report", "--events-topic needs --kafka BOOTSTRAP")
    try:
        since = parse_time(args.since, now=WallClock().now()) if args.since else None
        if args.audit is not None:
            lines = args.audit.read_text(encoding="utf-8").splitlines()
        else:
            settings = kafka_settings(args)
            assert settings is not None  # --events-topic needs --kafka, checked above
            lines = [
                value.decode(errors="replace") for _, value in asyncio.run(read_topic(settings, args.events_topic))
            ]
    except BacktestError as error:
        return _cannot_run("report", f"--since: {error}")
    except KafkaFlagError as error:
        return _cannot_run("report", str(error))
    except OSError as error:
        return _cannot_run("report", f"{args.audit}: {error.strerror}")
    except (KafkaError, TimeoutError) as error:
        return _cannot_run("report", f"--events-topic {args.events_topic}: {type(error).__name__}: {error}")
    records, skipped = [], 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and record.get("specversion") and isinstance(record.get("data"), dict):
            record = record["data"]  # a CloudEvent of the decision stream
        if isinstance(record, dict) and record.get("time") and "event" in record and "rule" in record:
            records.append(record)
        elif line.strip():
            skipped += 1
    summary = audit_report.report(records, since=since)
    summary["skipped_lines"] = skipped
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(audit_report.render_text(summary))
        if skipped:
            print(f"({skipped} lines were not audit records)")
    return EXIT_OK


class _CannotRunError(Exception):
    """The command cannot run as asked; the message says why."""


def _rules_and_policy(args: argparse.Namespace, *, only: str | None = None) -> tuple[list[Rule], Policy | None]:
    """The valid rules of `--rules` (each problem printed, as `run` skips a rule with errors; only the
    rule named `only` if given), and the one policy of `--policy`, if given."""
    missing = [path for path in [*args.rules, *([args.policy] if args.policy else [])] if not path.exists()]
    if missing:
        raise _CannotRunError(", ".join(f"{path}: no such file or folder" for path in missing))
    loaded = merge_results(load_rule_paths(args.rules, catalog=CATALOG))
    for problem in loaded.problems:
        print(problem, file=sys.stderr)
    rules = [rule for rule in loaded.rules if only is None or rule.name == only]
    if not rules:
        raise _CannotRunError(f"no valid rule named {only}" if only else "no valid rule")
    if args.policy is None:
        return rules, None
    found = load_policy_file(args.policy, catalog=CATALOG)
    if found.problems or len(found.policies) != 1:
        raise _CannotRunError("; ".join(str(p) for p in found.problems) or f"{args.policy}: not one policy")
    return rules, found.policies[0]


def _cannot_run(command: str, message: str) -> int:
    print(f"kafka-autopilot {command}: {message}", file=sys.stderr)
    return EXIT_CANNOT_RUN
