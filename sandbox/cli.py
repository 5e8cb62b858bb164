"""The checkout-only commands of `kafka-autopilot`: `sandbox` (the local real environment) and `demo`.

They drive the sandbox, which lives in the checkout and is not in the wheel. `agent.cli` looks this
module up by name when the `sandbox` package can be imported (the checkout's virtualenv has it on its
path) and calls `add_parsers`; from an installed wheel the two commands do not exist.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from agent.adapters.errors import PrometheusQueryError
from agent.adapters.local_prometheus import LocalPrometheusError
from agent.audit.trail import AuditRecord, AuditTrail
from agent.cli import EXIT_CANNOT_RUN, EXIT_OK, EXIT_PROBLEMS, print_timeline
from agent.runtime import ruletest
from sandbox import demo
from sandbox.environment import FAULTS, REPO, Sandbox
from sandbox.process import SandboxProcessError
from sandbox.prometheus import binaries
from sandbox.shapes import SHAPE_NAMES

DEMO_TEST_FILE = REPO / "tests" / "rules" / "kafka-resize.test.yaml"


def add_parsers(commands: Any) -> None:
    """Register `demo` and `sandbox` on the main parser's subparsers."""
    demo_parser = commands.add_parser(
        "demo",
        help="play the reference scenario live in the sandbox (400Gi -> 800Gi -> 1Ti -> declined at maxsize)",
        description="Brings up the sandbox (installing what is missing), runs the agent with the reference rule "
        "unchanged, and ingests 1 GiB/s into each of the 4 Kafka PVCs: the reference table plays out live, "
        "cooldowns included (about 11 minutes). --simulated replays it in seconds instead, through a real "
        "Prometheus and a simulated executor.",
    )
    demo_parser.add_argument("--dry-run", action="store_true", help="the agent decides and records; nothing changes")
    demo_parser.add_argument("--json", action="store_true", help="print the audit records as JSON lines")
    demo_parser.add_argument("--keep", action="store_true", help="leave the sandbox running afterwards")
    demo_parser.add_argument("--simulated", action="store_true", help="the quick replay: real Prometheus, no cluster")
    demo_parser.set_defaults(command=cmd_demo)

    sandbox = commands.add_parser(
        "sandbox",
        help="the local real environment: Kubernetes + KWOK, Kafka, Prometheus, storage twin",
        description="Bring up, inspect, break and tear down the local real environment used by the "
        "tests and the demo. Everything listens on 127.0.0.1 and stops by itself after "
        "KAFKA_AUTOPILOT_SANDBOX_TTL seconds (default 3h).",
    )
    sandbox.add_argument("--work-dir", type=Path, default=None, help="state directory (default .cache/sandbox)")
    actions = sandbox.add_subparsers(title="actions", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="install what is missing (cached), start everything, print the status")
    up.add_argument("--no-install", action="store_true", help="do not run the installers first")
    up.add_argument(
        "--shape",
        choices=SHAPE_NAMES,
        default=None,
        help="how Kafka is deployed: statefulset (default; StatefulSet kafka, brokers 0-3), strimzi (our "
        "stand-in of Strimzi's Kafka + KafkaNodePool, node ids 10-13, made by the operator twin) or bitnami "
        "(StatefulSet kafka-broker, broker ids from 100); a work dir keeps its shape until `reset`",
    )
    up.set_defaults(command=cmd_sandbox_up)
    actions.add_parser("down", help="stop every sandbox process").set_defaults(command=cmd_sandbox_down)
    actions.add_parser("reset", help="stop everything and delete the sandbox state").set_defaults(
        command=cmd_sandbox_reset
    )
    status = actions.add_parser("status", help="addresses and process states")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(command=cmd_sandbox_status)
    fault = actions.add_parser(
        "fault",
        help="inject or clear a fault",
        description="fail-node NODE | partition-node NODE | recover-node NODE | stop-broker ID | "
        "start-broker ID | stop-prometheus | start-prometheus | stop-apiserver | start-apiserver | "
        "set-ingest NAMESPACE/PVC BYTES_PER_SECOND",
    )
    fault.add_argument("kind", choices=FAULTS, metavar="KIND", help=", ".join(FAULTS))
    fault.add_argument("target", nargs="?", help="node, broker id or namespace/pvc")
    fault.add_argument("value", nargs="?", help="for set-ingest: bytes per second")
    fault.set_defaults(command=cmd_sandbox_fault)


# --- demo ----------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.simulated:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        try:
            return asyncio.run(
                demo.play(dry_run=args.dry_run, as_json=args.json, keep=args.keep, out=sys.stdout, progress=_progress)
            )
        except SandboxProcessError as error:
            print(f"demo could not run: {error}", file=sys.stderr)
            return EXIT_CANNOT_RUN
    if args.dry_run:
        print("--simulated has no cluster to leave untouched: it is always a dry run", file=sys.stderr)
    if not DEMO_TEST_FILE.exists():
        print(f"the demo scenario {DEMO_TEST_FILE} is missing: run the demo from a checkout", file=sys.stderr)
        return EXIT_CANNOT_RUN
    test_file = ruletest.read_test_file(DEMO_TEST_FILE)
    test = test_file.tests[0]
    print(f"# {test.name}", file=sys.stderr)
    print("# real Prometheus evaluates the rule; actions go to a simulated executor", file=sys.stderr)
    trail = AuditTrail(stream=sys.stdout) if args.json else None
    records: list[AuditRecord] = []
    try:
        outcome = ruletest.run_test(test_file, test, binaries=binaries(), on_record=records.append)
    except (ruletest.RuleTestFileError, PrometheusQueryError, SandboxProcessError, LocalPrometheusError) as error:
        print(f"demo could not run: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if trail is not None:
        for record in records:
            trail.write(record)
    else:
        print_timeline(records, out=sys.stdout)
    verdict = "matches" if outcome.passed else "does NOT match"
    print(f"# the run {verdict} the reference table", file=sys.stderr)
    for failure in outcome.failures:
        print(f"  {failure}", file=sys.stderr)
    return EXIT_OK if outcome.passed else EXIT_PROBLEMS


# --- sandbox -----------------------------------------------------------------------------------


def _sandbox(args: argparse.Namespace) -> Sandbox:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "unable to connect" while brokers start
    shape = getattr(args, "shape", None)
    return Sandbox(work_dir=args.work_dir, shape=shape) if args.work_dir else Sandbox(shape=shape)


def _progress(message: str) -> None:
    print(f"[sandbox] {message}", file=sys.stderr, flush=True)


def cmd_sandbox_up(args: argparse.Namespace) -> int:
    try:
        status = _sandbox(args).up(progress=_progress, install=not args.no_install)
    except SandboxProcessError as error:
        print(f"sandbox up failed: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(json.dumps(status, indent=2))
    return EXIT_OK


def cmd_sandbox_down(args: argparse.Namespace) -> int:
    _sandbox(args).down(progress=_progress)
    return EXIT_OK


def cmd_sandbox_reset(args: argparse.Namespace) -> int:
    _sandbox(args).reset(progress=_progress)
    return EXIT_OK


def cmd_sandbox_status(args: argparse.Namespace) -> int:
    status = _sandbox(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for key, value in status.items():
            print(f"{key:20} {value}")
    return EXIT_OK if status.get("up") else EXIT_PROBLEMS


def cmd_sandbox_fault(args: argparse.Namespace) -> int:
    try:
        print(_sandbox(args).fault(args.kind, args.target, args.value))
    except ValueError as error:
        print(f"sandbox fault: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    return EXIT_OK
