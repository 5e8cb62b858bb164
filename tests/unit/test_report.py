"""`kafka-autopilot report`: an audit trail in numbers (actions, trigger -> verified, declines, holds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.audit.cloudevents import to_cloudevent
from agent.audit.report import percentile, render_text, report
from agent.cli import main

RULE = "kafka-resize"
RESIZE = "openstorage.io.action.volume/resize"


def at(second: int) -> str:
    return f"2027-01-15T08:{second // 60:02d}:{second % 60:02d}.000Z"


def move(second: int, obj: str, before: str, after: str) -> dict[str, Any]:
    return {"time": at(second), "event": "transition", "rule": RULE, "object": obj, "from": before, "to": after}


def action(second: int, obj: str, outcome: str, **extra: Any) -> dict[str, Any]:
    record = {"time": at(second), "event": f"action-{outcome}", "rule": RULE, "object": obj, "action": RESIZE}
    return {**record, "outcome": outcome, **extra}


def episode(start: int, obj: str, took: int) -> list[dict[str, Any]]:
    return [
        move(start, obj, "Normal", "Triggered"),
        move(start, obj, "Triggered", "ActiveActionsPending"),
        action(start, obj, "planned"),
        action(start + took, obj, "verified"),
        move(start + took, obj, "ActiveActionsInProgress", "ActiveActionsTaken"),
    ]


def trail() -> list[dict[str, Any]]:
    declined_stay = [
        move(700, "kafka/c", "Normal", "Triggered"),
        move(700, "kafka/c", "Triggered", "ActionsDeclined"),
        action(700, "kafka/c", "declined", code="AtMaxSize", reason="AtMaxSize: at maxsize 1Ti"),
        action(1000, "kafka/c", "declined", code="AtMaxSize", reason="AtMaxSize: at maxsize 1Ti"),
    ]
    held = [
        action(800, "kafka/d", "throttled", code="RateLimitPerObject", reason="RateLimitPerObject: ..."),
        action(900, "kafka/e", "held", reason="Kafka still sees broker 2 alive"),
    ]
    return [
        *episode(0, "kafka/a", 10),
        *episode(100, "kafka/b", 20),
        *episode(400, "kafka/a", 100),
        *declined_stay,
        *held,
    ]


def test_actions_are_counted_by_rule_and_outcome() -> None:
    summary = report(trail())
    assert summary["actions_by_rule_and_outcome"] == {
        RULE: {"declined": 2, "held": 1, "planned": 3, "throttled": 1, "verified": 3}
    }


def test_trigger_to_verified_is_measured_per_episode() -> None:
    timing = report(trail())["trigger_to_done"]
    assert timing == {"episodes": 3, "p50_seconds": 20.0, "p95_seconds": 100.0}


def test_a_lasting_decline_counts_once_and_holds_are_by_reason() -> None:
    summary = report(trail())
    assert summary["declined_at_maxsize"] == 1
    assert summary["holds_by_reason"] == {
        "RateLimitPerObject": 1,
        "executor: Kafka still sees broker 2 alive": 1,
    }


def test_since_leaves_out_older_records() -> None:
    summary = report(trail(), since=1_800_000_000 + 400)
    assert summary["trigger_to_done"]["episodes"] == 1
    assert summary["actions_by_rule_and_outcome"][RULE]["verified"] == 1


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.5, None),
        ([5.0], 0.95, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([float(n) for n in range(1, 21)], 0.95, 19.0),
    ],
)
def test_percentiles_are_nearest_rank(values: list[float], fraction: float, expected: float | None) -> None:
    assert percentile(values, fraction) == expected


def test_the_text_names_every_figure() -> None:
    text = render_text(report(trail()))
    assert "kafka-resize: declined 2, held 1, planned 3, throttled 1, verified 3" in text
    assert "trigger -> verified: p50 20.0s, p95 100.0s (3 episodes)" in text
    assert "declined at maxsize: 1" in text


def test_the_command_reads_a_trail_and_skips_log_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit.jsonl"
    lines = [json.dumps(record) for record in trail()]
    lines.insert(3, '{"level": "info", "event": "agent started"}')
    audit.write_text("\n".join(lines) + "\n")
    assert main(["report", "--audit", str(audit), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped_lines"] == 1
    assert summary["records"] == len(trail())
    assert main(["report", "--audit", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_cloudevents_of_the_decision_stream_are_read_as_their_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = tmp_path / "events.jsonl"
    events = [to_cloudevent(record, source="kafka-autopilot/ns/agent-0") for record in trail()]
    stream.write_text("\n".join(json.dumps(event) for event in events) + "\n")
    assert main(["report", "--audit", str(stream), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == len(trail())
    assert summary["trigger_to_done"]["p95_seconds"] == 100.0


def test_the_events_topic_needs_kafka(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--events-topic", "decisions"]) == 2
    assert "--events-topic needs --kafka" in capsys.readouterr().err
