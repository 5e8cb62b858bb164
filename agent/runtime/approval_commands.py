"""`kafka-autopilot approve NAME`, `decline NAME` and `approvals`: a person's side of an ActionApproval.

The agent creates an ActionApproval when a rule with `enforcement: approvalRequired` wants to act and
waits in ActionAwaitingApproval. These commands list the waiting ones (rule, object, action,
before -> after, age) and answer one by setting its spec.approvalState, with who answered (user and
groups) and why as annotations; the agent sees the answer at its next cycle. Who answered is the caller's Kubernetes
user, as the apiserver authenticated it (a SelfSubjectReview), not a name given on the command line
or a local login; when the apiserver cannot say, nothing is answered. The same can be done with kubectl.

Exit codes: 0 done (also when the approval already had this very answer), 1 no such approval, or it
was answered differently, or it no longer waits (cancelled, used), 2 could not run (the apiserver
cannot be reached or refused, the CRD is missing, the name is ambiguous without -n).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from agent import __version__
from agent.adapters.clock import WallClock
from agent.adapters.errors import AnswerConflictError, KubeError
from agent.adapters.kubernetes import connect
from agent.adapters.kubernetes.approvals import Approval, ApprovalStore
from agent.core.approvals import Answer, Phase

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_CANNOT_RUN = 2
CLI_USER_AGENT = f"kafka-autopilot-cli/{__version__}"
TIMEOUT_SECONDS = 30.0
CLOCK = WallClock()


def add_parsers(commands: Any) -> None:
    """Register the three commands on the main parser's subparsers."""
    for verb, answer in (("approve", Answer.APPROVED), ("decline", Answer.DECLINED)):
        parser = commands.add_parser(
            verb,
            help=f"{verb} a pending ActionApproval (the agent {'acts' if verb == 'approve' else 'does not act'})",
            description=f"{verb.title()} the ActionApproval NAME (see `kafka-autopilot approvals`). The agent reads "
            "the answer at its next cycle: approved, the action runs at the next evaluation; declined, it does not "
            "run until the conditions clear. Exit 0 done, 1 not found / answered differently / no longer waiting, "
            "2 could not reach the apiserver.",
        )
        parser.add_argument("name", metavar="NAME", help="the ActionApproval's name")
        _common(parser)
        parser.add_argument("--reason", default="", help="why (kept on the approval, shown in the agent's events)")
        parser.add_argument(
            "--by",
            default="",
            help="for whom you answer, added to the reason (who answers is your Kubernetes user, as the apiserver "
            "says)",
        )
        parser.set_defaults(command=lambda args, answer=answer: _run(_answer(args, answer)))
    listing = commands.add_parser(
        "approvals",
        help="list the ActionApprovals waiting for an answer",
        description="List the ActionApprovals waiting for an answer: name, rule, object, action, before -> after, "
        "age. --all lists every approval with what became of it. Exit 0, 2 if the apiserver cannot be reached.",
    )
    _common(listing)
    listing.add_argument("--all", action="store_true", help="also the answered, cancelled and used ones")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(command=lambda args: _run(_list(args)))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="the approval's namespace (default: look in every namespace)")
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")


def _run(work: Any) -> int:
    result: int = asyncio.run(work)
    return result


async def _store(args: argparse.Namespace) -> tuple[Any, ApprovalStore]:
    kube = await connect(kubeconfig=args.kubeconfig, clock=WallClock())
    kube.api_client.user_agent = CLI_USER_AGENT
    return kube, ApprovalStore(kube=kube)


async def _answer(args: argparse.Namespace, answer: Answer) -> int:
    verb = "approve" if answer is Answer.APPROVED else "decline"
    try:
        kube, store = await _store(args)
    except KubeError as error:
        print(f"kafka-autopilot {verb}: cannot reach Kubernetes: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    async with kube:
        try:
            async with CLOCK.timeout(TIMEOUT_SECONDS):
                found = await store.list(namespace=args.namespace, name=args.name)
                where = f" in namespace {args.namespace}" if args.namespace else " in any namespace"
                if not found:
                    print(f"kafka-autopilot {verb}: no ActionApproval {args.name}{where}", file=sys.stderr)
                    return EXIT_PROBLEMS
                if len(found) > 1:
                    spaces = ", ".join(approval.namespace for approval in found)
                    print(
                        f"kafka-autopilot {verb}: ActionApproval {args.name} exists in several namespaces ({spaces}): "
                        "choose one with -n",
                        file=sys.stderr,
                    )
                    return EXIT_CANNOT_RUN
                (approval,) = found
                caller = await kube.whoami()
                answered = await store.answer(
                    approval, answer=answer, by=caller.name, groups=caller.groups, reason=_reason(args, caller.name)
                )
        except AnswerConflictError as error:
            print(f"kafka-autopilot {verb}: {error}", file=sys.stderr)
            return EXIT_PROBLEMS
        except KubeError as error:
            print(f"kafka-autopilot {verb}: {_explain(error)}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        except TimeoutError:
            print(
                f"kafka-autopilot {verb}: kube-apiserver {kube.server}: no answer within {TIMEOUT_SECONDS:.0f}s",
                file=sys.stderr,
            )
            return EXIT_CANNOT_RUN
    already = " (it already was)" if approval.answer is answer else ""
    print(
        f"{answered.namespace}/{answered.name} {answer.value}{already}: {answered.rule}: {answered.object_key}: "
        f"{answered.summary}"
    )
    return EXIT_OK


async def _list(args: argparse.Namespace) -> int:
    try:
        kube, store = await _store(args)
    except KubeError as error:
        print(f"kafka-autopilot approvals: cannot reach Kubernetes: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    async with kube:
        try:
            async with CLOCK.timeout(TIMEOUT_SECONDS):
                approvals = await store.list(namespace=args.namespace)
        except KubeError as error:
            print(f"kafka-autopilot approvals: {_explain(error)}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        except TimeoutError:
            print(
                f"kafka-autopilot approvals: kube-apiserver {kube.server}: no answer within {TIMEOUT_SECONDS:.0f}s",
                file=sys.stderr,
            )
            return EXIT_CANNOT_RUN
    shown = [approval for approval in approvals if args.all or waiting(approval)]
    now = CLOCK.now()
    if args.json:
        for approval in shown:
            print(json.dumps(_as_json(approval, now=now)))
        return EXIT_OK
    rows = [("NAMESPACE", "NAME", "RULE", "OBJECT", "ACTION", "BEFORE -> AFTER", "ANSWER", "PHASE", "AGE")]
    for approval in shown:
        first = approval.actions[0] if approval.actions else None
        rows.append(
            (
                approval.namespace,
                approval.name,
                approval.rule,
                approval.object_key,
                first.action if first else "?",
                f"{first.before} -> {first.after}" if first else "?",
                approval.answer.value,
                approval.phase.value if approval.phase else "-",
                age(now - approval.created_at) if approval.created_at is not None else "?",
            )
        )
    if len(rows) == 1:
        print("no ActionApproval waiting for an answer" if not args.all else "no ActionApproval")
        return EXIT_OK
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def waiting(approval: Approval) -> bool:
    """Pending: not answered, and neither cancelled nor used."""
    return approval.answer is Answer.PENDING and approval.phase in (None, Phase.PENDING)


def age(seconds: float) -> str:
    """Like kubectl: 42s, 5m, 3h, 2d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _as_json(approval: Approval, *, now: float) -> dict[str, Any]:
    return {
        "namespace": approval.namespace,
        "name": approval.name,
        "rule": approval.rule,
        "object": approval.object_key,
        "actions": [{"action": a.action, "before": a.before, "after": a.after} for a in approval.actions],
        "why": approval.why,
        "answer": approval.answer.value,
        "phase": approval.phase.value if approval.phase else None,
        "message": approval.message,
        "age_seconds": None if approval.created_at is None else round(now - approval.created_at),
    }


def _explain(error: KubeError) -> str:
    if error.status == 404:
        return f"{error} (is the ActionApproval CRD installed? `kafka-autopilot run --install-crds` installs it)"
    return str(error)


def _reason(args: argparse.Namespace, by: str) -> str:
    """The answer's reason, with whom the caller answered for when `--by` names someone else."""
    if not args.by or args.by == by:
        return str(args.reason)
    return f"for {args.by}: {args.reason}" if args.reason else f"for {args.by}"
