"""`kafka-autopilot run` leader-election flags: defaults, and bad values refused (exit 2) before anything runs."""

from __future__ import annotations

import pytest

from agent import cli
from agent.cli import EXIT_CANNOT_RUN, build_parser, main
from agent.runtime.leadership import EXIT_LEADERSHIP_LOST
from agent.runtime.main import RunOptions

BASE = ["run", "--rules", "rules/kafka-resize.yaml", "--prometheus", "http://127.0.0.1:1"]


def test_defaults_leave_leader_election_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.delenv("POD_NAME", raising=False)
    args = build_parser().parse_args(BASE)
    assert args.leader_elect is False
    assert (args.lease_name, args.namespace, args.lease_duration) == (None, "kafka-autopilot", 15)
    assert args.identity.rpartition("-")[2].isdigit()  # hostname-pid


@pytest.mark.parametrize(
    ("flags", "lease"),
    [
        ([], "kafka-autopilot"),
        (["--dry-run"], "kafka-autopilot-dry-run"),
        (["--dry-run", "--lease-name=trial-kafka-autopilot"], "trial-kafka-autopilot"),
    ],
)
def test_a_dry_run_agent_elects_on_a_lease_apart_from_the_live_one(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], lease: str
) -> None:
    seen: list[RunOptions] = []

    async def fake_run_agent(options: RunOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(cli, "run_agent", fake_run_agent)
    assert main([*BASE, "--leader-elect", "--identity=replica-a", *flags]) == 0
    assert [options.lease_name for options in seen] == [lease]


def test_namespace_and_identity_come_from_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "autopilot-system")
    monkeypatch.setenv("POD_NAME", "kafka-autopilot-7d9f-abcde")
    args = build_parser().parse_args(BASE)
    assert args.namespace == "autopilot-system"
    assert args.identity == "kafka-autopilot-7d9f-abcde"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lease-duration", "2"], "--lease-duration must be at least 3 seconds, got 2"),
        (["--identity", "  "], "--identity must not be empty"),
    ],
)
def test_bad_leader_election_values_are_refused(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*BASE, "--leader-elect", *extra]) == EXIT_CANNOT_RUN
    assert message in capsys.readouterr().err


def test_the_help_names_the_flags_and_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for flag in ("--leader-elect", "--lease-name", "--namespace", "--lease-duration", "--identity"):
        assert flag in text
    assert str(EXIT_LEADERSHIP_LOST) in text
