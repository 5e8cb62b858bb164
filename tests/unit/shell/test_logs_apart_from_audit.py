"""The agent's logs go to stderr as JSON (configured once, agent.runtime.logs); stdout, without
`--audit FILE`, carries only audit records: every stdout line parses as JSON and none is a log line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import structlog
from fakes import FakeClock, FakeCluster, FakeEvents, FakePrometheus, FakePvc
from helpers import REFERENCE_RULE
from shell_support import load_rule
from test_no_stranded_action import KEY, QUERY, FailingStartStore

from agent.actions.mutations import LiveApplier
from agent.actions.registry import CATALOG
from agent.actions.volume_resize.executor import VolumeResizeExecutor
from agent.actions.volume_resize.spec import VOLUME_RESIZE
from agent.audit.trail import AuditTrail
from agent.cli import build_parser
from agent.core.quantity import GIB
from agent.core.samples import Sample
from agent.runtime.cycle import RuleCycle
from agent.runtime.inventory import Inventory
from agent.runtime.logs import configure_logging
from agent.runtime.recorder import Recorder
from agent.runtime.runner import ActionRunner
from agent.runtime.telemetry import Telemetry

RULE = load_rule(REFERENCE_RULE)


@pytest.fixture(autouse=True)
def default_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


async def test_a_cycle_writes_only_audit_records_to_stdout_and_json_logs_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging()
    clock = FakeClock()
    cluster = FakeCluster(clock=clock)
    cluster.add_storage_class("expandable", expandable=True)
    cluster.add_pvc(FakePvc(namespace="kafka", name="data-kafka-0", requested_bytes=400 * GIB, labels={"app": "kafka"}))
    prometheus = FakePrometheus()
    prometheus.set(QUERY, [Sample(labels={"namespace": "kafka", "persistentvolumeclaim": "data-kafka-0"}, value=90.0)])
    store = FailingStartStore()  # its failed start write makes the runner log a warning
    recorder = Recorder(trail=AuditTrail(), telemetry=Telemetry(), clock=clock, events=FakeEvents())
    executor = VolumeResizeExecutor(reader=cluster, applier=LiveApplier(writer=cluster), clock=clock)
    runner = ActionRunner(
        store=store, recorder=recorder, clock=clock, catalog=CATALOG, executors={VOLUME_RESIZE: executor}
    )
    cycle = RuleCycle(
        inventory=Inventory(cluster=cluster, prometheus=prometheus),
        store=store,
        runner=runner,
        recorder=recorder,
        clock=clock,
        catalog=CATALOG,
    )

    await cycle(RULE)
    await asyncio.gather(*runner.running.values())

    captured = capsys.readouterr()
    audit = lines(captured.out)
    assert audit and all("level" not in record and record["time"] for record in audit)
    assert {"evaluation", "action-planned"} <= {record["event"] for record in audit}
    logs = lines(captured.err)
    (stopped,) = [line for line in logs if str(line["event"]).startswith("action stopped by an error")]
    assert (stopped["level"], stopped["object"]) == ("warning", KEY)
    assert all("timestamp" in line for line in logs)


def test_log_level_and_console_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="console", level="warning")
    log = structlog.get_logger("kafka-autopilot")
    log.info("not shown")
    log.warning("shown", rule="r")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "not shown" not in captured.err and "shown" in captured.err and "rule=r" in captured.err
    with pytest.raises(ValueError, match="log level"):
        configure_logging(level="verbose")


def test_run_takes_log_format_and_log_level_with_json_and_info_by_default() -> None:
    parser = build_parser()
    defaults = parser.parse_args(["run", "--rules", "rules/", "--prometheus", "http://p:9090"])
    assert (defaults.log_format, defaults.log_level) == ("json", "info")
    given = parser.parse_args(
        ["run", "--rules", "rules/", "--prometheus", "http://p:9090", "--log-format", "console", "--log-level", "debug"]
    )
    assert (given.log_format, given.log_level) == ("console", "debug")
