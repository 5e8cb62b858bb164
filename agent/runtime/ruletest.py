"""Rule unit tests (`kafka-autopilot test`): promtool-style YAML, evaluated by the real Prometheus.

The file format and its reader are in `agent.runtime.ruletest_file`.

The series are backfilled with `promtool tsdb create-blocks-from openmetrics` into a fresh TSDB, a
`prometheus` serves it on loopback, and every condition is an instant query at the evaluation time:
there is no PromQL engine of ours. The caller names both binaries (`kafka-autopilot test` finds them with
`agent.adapters.local_prometheus.find_binaries`). Conditions of `provider: kubernetes` rules read input
series named after their key (e.g. `NodeReady{node="n1"}`).

The loop and its simulated executor are `agent.runtime.replay` (shared with `kafka-autopilot backtest`):
a planned action succeeds at once and a resize updates the object's size, so later plans start from it.
Nothing leaves this process but Prometheus queries.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.adapters.clock import WallClock
from agent.adapters.errors import PrometheusQueryError
from agent.adapters.local_prometheus import RULE_TEST_EPOCH, LocalPrometheus, PrometheusBinaries, backfill_openmetrics
from agent.adapters.prometheus import PrometheusClient
from agent.audit.trail import AuditRecord
from agent.core.diagnostics import Location, Problem
from agent.core.samples import Sample
from agent.core.series import SeriesValue, expand_values, with_timestamps
from agent.runtime.replay import Replay, paced_rules
from agent.runtime.ruletest_file import (
    Expectation,
    RuleTest,
    RuleTestFile,
    RuleTestFileError,
    read_test_file,
)

__all__ = ["RuleTestFileError", "TestOutcome", "read_test_file", "run_test"]


@dataclass(frozen=True, kw_only=True)
class TestOutcome:
    file: Path
    name: str
    failures: tuple[str, ...]
    records: tuple[AuditRecord, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


# --- running tests -----------------------------------------------------------------------------


def run_test(
    test_file: RuleTestFile,
    test: RuleTest,
    *,
    binaries: PrometheusBinaries,
    on_record: Callable[[AuditRecord], None] | None = None,
) -> TestOutcome:
    end = max((expectation.at for expectation in test.expectations), default=0)
    with tempfile.TemporaryDirectory(prefix="kafka-autopilot-ruletest-") as scratch:
        tsdb = Path(scratch) / "tsdb"
        backfill_openmetrics(
            series=[(name, labels, _timed(values, interval=test.interval)) for name, labels, values in test.series],
            tsdb_dir=tsdb,
            promtool=binaries.promtool,
        )
        with LocalPrometheus(prometheus=binaries.prometheus, tsdb_dir=tsdb, run_dir=Path(scratch)) as server:
            client = PrometheusClient(url=server.url, clock=WallClock())
            try:
                simulation = _Simulation(
                    test_file=test_file, test=test, query=client.instant_query, on_record=on_record
                )
                failures = simulation.run(until=end)
            finally:
                client.close()
    return TestOutcome(file=test_file.path, name=test.name, failures=tuple(failures), records=tuple(simulation.records))


def _timed(values: str, *, interval: int) -> list[tuple[float, SeriesValue]]:
    return with_timestamps(expand_values(values), start_seconds=RULE_TEST_EPOCH, interval_seconds=interval)


QueryFunc = Callable[..., Sequence[Sample]]


@dataclass
class _Simulation:
    """A rule test: the replay loop every `evaluation_interval`, with the test's approvals and checks."""

    test_file: RuleTestFile
    test: RuleTest
    query: QueryFunc
    on_record: Callable[[AuditRecord], None] | None
    replay: Replay = field(init=False)

    def __post_init__(self) -> None:
        self.replay = Replay(
            rules=paced_rules(self.test_file.rules, step_seconds=self.test_file.evaluation_interval),
            objects={obj.key: obj for obj in self.test.objects},
            vector_at=self.vector_at,
            on_record=self.on_record,
            # Rule tests read kubernetes-provider keys from input series too, so both kinds are queried.
            kubernetes_from_prometheus=True,
        )

    @property
    def records(self) -> list[AuditRecord]:
        return self.replay.records

    def run(self, *, until: int) -> list[str]:
        failures: list[str] = []
        step = self.test_file.evaluation_interval
        expectations = sorted(self.test.expectations, key=lambda expectation: expectation.at)
        looked_at = [e.at for e in expectations] + [a.at for a in self.test.approvals]
        for now in _times(until=until, step=step, extra=looked_at):
            for approval in self.test.approvals:
                if approval.at == now:
                    self.replay.answer(
                        rule_name=approval.rule,
                        object_key=approval.object,
                        approved=approval.approved,
                        by="rule test",
                        now=now,
                    )
            self.replay.cycle(now)
            failures.extend(self.check(e) for e in expectations if e.at == now)
        return [failure for failure in failures if failure]

    def vector_at(self, query: str, now: float) -> Sequence[Sample]:
        try:
            return self.query(query, at=RULE_TEST_EPOCH + now)
        except PrometheusQueryError as error:
            location = Location(file=str(self.test_file.path), line=1, column=1)
            problem = Problem(location=location, rule="", field="", message=str(error))
            raise RuleTestFileError([problem]) from error

    def check(self, expectation: Expectation) -> str:
        key = (expectation.rule, expectation.object)
        state = self.replay.states.get(key)
        where = f"{expectation.location}: at {expectation.at}s, {expectation.rule} {expectation.object}"
        problems = []
        if state is None:
            return f"{where}: the object was never evaluated (is it declared in objects and selected by the rule?)"
        if expectation.state is not None and state.state.value != expectation.state:
            problems.append(f"state {state.state.value} ({state.reason}), expected {expectation.state}")
        taken = self.replay.taken.get(key, [])
        if expectation.actions is not None and tuple(taken) != expectation.actions:
            problems.append(f"actions {taken}, expected {list(expectation.actions)}")
        decline = self.replay.last_decline.get(key)
        if expectation.declined is not None and decline != expectation.declined:
            problems.append(f"last decline {decline}, expected {expectation.declined}")
        return f"{where}: " + "; ".join(problems) if problems else ""


def _times(*, until: int, step: int, extra: Sequence[int]) -> Iterator[int]:
    """Every multiple of `step` up to `until`, plus the exact times tests look at, in order."""
    return iter(sorted(set(range(0, until + 1, step)) | {time for time in extra if time <= until}))
