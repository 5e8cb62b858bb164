"""Who approved: with approvers named (`run --approver-user/--approver-group`), only their answers move
an object on; anyone else's, or one that records no user, is put back to pending, with an
`approval-refused` record and a Warning Event naming who answered and why it was refused."""

from __future__ import annotations

import io
import json

import pytest
from fakes import FakeApprovals, FakeClock, FakeEvents, FakeStateStore
from helpers import REFERENCE_RULE
from shell_support import load_rule

from agent import cli
from agent.audit.trail import AuditTrail
from agent.core.approvals import Answer, Approvers, Phase
from agent.core.engine import CycleOutcome
from agent.core.matching import pvc_object
from agent.core.quantity import GIB
from agent.core.states import ObjectState, RuleState
from agent.runtime.approvals import ApprovalFlow
from agent.runtime.main import RunOptions
from agent.runtime.recorder import Recorder
from agent.runtime.telemetry import Telemetry

RULE = load_rule(REFERENCE_RULE)
TARGET = pvc_object(namespace="kafka", name="data-0", labels={"app": "kafka"}, capacity_bytes=400 * GIB)
EPISODE = 1000.0
WAITING = ObjectState(
    state=RuleState.ACTION_AWAITING_APPROVAL,
    since=EPISODE,
    entered_at={RuleState.ACTION_AWAITING_APPROVAL.value: EPISODE},
)
SRE = Approvers(users=frozenset({"alice"}), groups=frozenset({"kafka-sre"}))


class Agent:
    """An ApprovalFlow on the fakes, and what it wrote."""

    def __init__(self, approvers: Approvers) -> None:
        self.clock = FakeClock(start=EPISODE)
        self.approvals = FakeApprovals()
        self.states = FakeStateStore()
        self.events = FakeEvents()
        self.audit = io.StringIO()
        self.triggered: list[str] = []
        self.flow = ApprovalFlow(
            store=self.approvals,
            states=self.states,
            recorder=Recorder(
                trail=AuditTrail(stream=self.audit), telemetry=Telemetry(), clock=self.clock, events=self.events
            ),
            clock=self.clock,
            trigger=self.triggered.extend,
            agent_namespace="kafka-autopilot",
            approvers=approvers,
        )

    async def cycle(self) -> None:
        await self.flow.follow(RULE, TARGET, WAITING, CycleOutcome(states={TARGET.key: WAITING}))

    def the_approval_name(self) -> str:
        ((_, name),) = self.approvals.approvals
        return name

    def records(self, event: str) -> list[dict[str, object]]:
        return [record for line in self.audit.getvalue().splitlines() if (record := json.loads(line))["event"] == event]


async def answered(agent: Agent, answer: Answer, *, by: str, groups: tuple[str, ...] = ()) -> str:
    await agent.cycle()  # asks
    name = agent.the_approval_name()
    agent.approvals.answer(namespace="kafka", name=name, answer=answer, by=by, groups=groups)
    await agent.cycle()  # reads the answer
    return name


@pytest.mark.parametrize(
    ("by", "groups"), [("alice", ()), ("bob", ("system:authenticated", "kafka-sre"))], ids=["user", "group"]
)
async def test_an_approvers_answer_is_acted_on(by: str, groups: tuple[str, ...]) -> None:
    agent = Agent(SRE)

    name = await answered(agent, Answer.APPROVED, by=by, groups=groups)

    approval = agent.approvals.approvals[("kafka", name)]
    assert (approval.answer, approval.phase) == (Answer.APPROVED, Phase.APPROVED)
    assert f"approved by {by}" in approval.message
    assert agent.triggered == [RULE.name]
    assert agent.events.reasons()[-1] == "ApprovalApproved"


@pytest.mark.parametrize("answer", [Answer.APPROVED, Answer.DECLINED])
async def test_an_answer_by_someone_else_is_refused_and_the_object_keeps_waiting(answer: Answer) -> None:
    agent = Agent(SRE)

    name = await answered(agent, answer, by="mallory", groups=("system:authenticated", "developers"))

    approval = agent.approvals.approvals[("kafka", name)]
    assert (approval.answer, approval.phase, approval.answered_by) == (Answer.PENDING, Phase.PENDING, "")
    expected = (
        f"{answer.value} by mallory, refused: mallory (groups: system:authenticated, developers) is not an "
        "approver: user alice, group kafka-sre"
    )
    assert approval.message.startswith(expected)
    assert agent.triggered == []
    assert agent.states.writes == []  # the state machine never heard of it
    (refused,) = agent.records("approval-refused")
    assert expected in str(refused["reason"])
    (event,) = [event for event in agent.events.emitted if event.reason == "ApprovalRefused"]
    assert event.warning and expected in event.message


async def test_then_an_approver_answers_and_it_is_acted_on() -> None:
    agent = Agent(SRE)
    name = await answered(agent, Answer.APPROVED, by="mallory")

    agent.approvals.answer(namespace="kafka", name=name, answer=Answer.APPROVED, by="alice")
    await agent.cycle()

    assert agent.approvals.approvals[("kafka", name)].phase is Phase.APPROVED
    assert agent.triggered == [RULE.name]
    assert len(agent.records("approval-refused")) == 1


async def test_with_approvers_named_an_answer_that_records_no_user_is_refused() -> None:
    agent = Agent(Approvers(groups=frozenset({"kafka-sre"})))

    name = await answered(agent, Answer.APPROVED, by="")  # e.g. `kubectl edit` of spec.approvalState

    approval = agent.approvals.approvals[("kafka", name)]
    assert approval.answer is Answer.PENDING
    assert "approved by an unknown user, refused: the answer records no Kubernetes user" in approval.message
    assert agent.triggered == []


async def test_without_approvers_named_any_recorded_answer_is_acted_on() -> None:
    agent = Agent(Approvers())

    name = await answered(agent, Answer.APPROVED, by="")

    assert agent.approvals.approvals[("kafka", name)].phase is Phase.APPROVED
    assert agent.records("approval-refused") == []


def test_run_passes_the_approvers_to_the_agent_and_refuses_an_empty_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[RunOptions] = []

    async def fake_run_agent(options: RunOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(cli, "run_agent", fake_run_agent)
    run = ["run", "--rules", "rules/kafka-resize.yaml", "--prometheus", "http://127.0.0.1:1"]

    assert cli.main([*run, "--approver-user=alice", "--approver-group=kafka-sre", "--approver-user=bob"]) == 0
    assert cli.main([*run, "--approver-group= "]) == cli.EXIT_CANNOT_RUN

    assert [options.approvers for options in seen] == [
        Approvers(users=frozenset({"alice", "bob"}), groups=frozenset({"kafka-sre"}))
    ]
    assert "--approver-user and --approver-group must not be empty" in capsys.readouterr().err
