"""The cluster benchmark: its pure parts (arguments, the cluster's size, what the audit log and /metrics say,
the table and the RESULT line) on made-up input, and one small run against the real sandbox (marked
`sandbox`) that checks the RESULT line is there and that a crossing PVC was patched. Timing is the
benchmark's business: no figure is asserted beyond being measured."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_cluster.py"
RESULT = re.compile(
    r"^RESULT first_cycle_s=(?P<first>\S+) steady_cycle_s=(?P<steady>\S+) rss_mib=(?P<rss>\S+) "
    r"lists_per_cycle=(?P<lists>\S+) cross_to_patch_s=(?P<cross>\S+)$"
)
AGENT = "kafka-autopilot/0.1.0"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(BENCH)


def audit_event(
    audit_id: str,
    *,
    verb: str,
    at: str,
    user_agent: str = AGENT,
    stage: str = "ResponseComplete",
    resource: str = "persistentvolumeclaims",
    namespace: str | None = "ns",
    name: str | None = None,
    subresource: str | None = None,
    code: int = 200,
) -> str:
    ref: dict[str, Any] = {"resource": resource, "namespace": namespace, "name": name}
    if subresource:
        ref["subresource"] = subresource
    return json.dumps(
        {
            "kind": "Event",
            "auditID": audit_id,
            "stage": stage,
            "verb": verb,
            "userAgent": user_agent,
            "objectRef": ref,
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": at,
            "stageTimestamp": at,
        }
    )


def test_the_full_scale_is_issue_13s_cluster_and_a_small_scale_keeps_a_few_of_each(bench: ModuleType) -> None:
    full = bench.Size.at(1.0)
    assert (full.nodes, full.pvcs, full.brokers, full.other_pods) == (1000, 10_000, 1000, 20_000)
    small = bench.Size.at(0.0001)
    assert small.nodes >= 3 and small.pvcs >= 10 and small.brokers >= 3 and small.kafka_namespaces >= 1


def test_arguments_have_defaults_and_bad_ones_are_refused_with_the_reason(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.parse_args([]) == bench.Options(
        scale=1.0, runs=3, steady_cycles=10, crossings=3, concurrency=32, keep=False
    )
    assert bench.parse_args(["--scale", "0.02", "--runs", "1", "--keep"]).scale == 0.02
    for argv, complaint in [
        (["--scale", "0"], "--scale must be above 0"),
        (["--runs", "0"], "--runs must be at least 1"),
        (["--steady-cycles", "0"], "--steady-cycles must be at least 1"),
        (["--scale", "0.0001", "--crossings", "6", "--runs", "2"], "more than the PVCs"),
    ]:
        with pytest.raises(SystemExit) as exited:
            bench.parse_args(argv)
        assert exited.value.code == 2
        assert complaint in capsys.readouterr().err


def test_the_agents_requests_in_the_window_are_counted_by_verb_once_each(bench: ModuleType) -> None:
    since = bench.audit_time("2026-12-06T05:40:00.000000Z")
    until = bench.audit_time("2026-12-06T05:40:10.000000Z")
    lines = [
        audit_event("a", verb="list", at="2026-12-06T05:40:01.000000Z"),
        audit_event("b", verb="list", at="2026-12-06T05:40:02.500000Z", resource="namespaces"),
        audit_event("c", verb="get", at="2026-12-06T05:40:03.000000Z", name="data-0"),
        # a watch is logged when it starts and when it ends: one request
        audit_event("d", verb="watch", at="2026-12-06T05:40:04.000000Z", stage="ResponseStarted"),
        audit_event("d", verb="watch", at="2026-12-06T05:40:04.000000Z"),
        audit_event("e", verb="list", at="2026-12-06T05:39:59.999000Z"),  # before the window
        audit_event("f", verb="list", at="2026-12-06T05:40:10.001000Z"),  # after it
        audit_event("g", verb="list", at="2026-12-06T05:40:05.000000Z", user_agent="kube-controller-manager/v1.37"),
        "not json",
        json.dumps({"kind": "Event", "auditID": "h"}),  # no timestamp
    ]
    assert bench.agent_requests(lines, since=since, until=until) == {
        "list persistentvolumeclaims": 1,
        "list namespaces": 1,
        "get persistentvolumeclaims": 1,
        "watch persistentvolumeclaims": 1,
    }


def test_a_pvcs_patch_time_is_the_agents_first_successful_patch_of_its_spec(bench: ModuleType) -> None:
    lines = [
        audit_event("1", verb="patch", at="2026-12-06T05:40:01Z", name="data-0", code=422),  # refused
        audit_event("2", verb="patch", at="2026-12-06T05:40:02Z", name="data-0", subresource="status"),
        audit_event("3", verb="patch", at="2026-12-06T05:40:03Z", name="data-0", user_agent="kube-controller-manager"),
        audit_event("4", verb="patch", at="2026-12-06T05:40:04Z", name="data-0", stage="ResponseStarted"),
        audit_event("5", verb="patch", at="2026-12-06T05:40:06Z", name="data-0"),
        audit_event("6", verb="patch", at="2026-12-06T05:40:05Z", name="data-0"),
        audit_event("7", verb="patch", at="2026-12-06T05:40:05Z", name="data-9"),  # not asked about
    ]
    found = bench.pvc_patch_times(lines, keys=["ns/data-0", "ns/data-1"])
    assert found == {"ns/data-0": bench.audit_time("2026-12-06T05:40:05Z")}


def test_the_loop_duration_is_read_from_the_agents_metrics_for_the_rule_only(bench: ModuleType) -> None:
    text = "\n".join(
        [
            "# HELP kafka_autopilot_loop_duration_seconds Duration of one evaluation cycle of a rule.",
            "# TYPE kafka_autopilot_loop_duration_seconds summary",
            'kafka_autopilot_loop_duration_seconds_count{rule="other"} 9.0',
            'kafka_autopilot_loop_duration_seconds_sum{rule="other"} 99.0',
            'kafka_autopilot_loop_duration_seconds_count{rule="kafka-resize"} 3.0',
            'kafka_autopilot_loop_duration_seconds_sum{rule="kafka-resize"} 4.5',
            'kafka_autopilot_loop_duration_seconds_created{rule="kafka-resize"} 1.7e9',
        ]
    )
    assert bench.loop_duration(text, rule="kafka-resize") == (3, 4.5)
    assert bench.loop_duration(text, rule="absent") is None


def test_cycles_come_from_successive_readings_and_two_in_one_reading_share_their_mean(bench: ModuleType) -> None:
    samples = [(100.0, 1, 30.0), (110.0, 2, 33.0), (111.0, 2, 33.0), (120.0, 4, 40.0)]
    cycles = bench.cycles_from(samples)
    assert [(c.number, c.seconds, c.ended_at) for c in cycles] == [
        (1, 30.0, 100.0),
        (2, 3.0, 110.0),
        (3, 3.5, 120.0),
        (4, 3.5, 120.0),
    ]


def test_percentile_is_the_nearest_rank_and_nan_without_values(bench: ModuleType) -> None:
    values = [float(n) for n in range(1, 21)]
    assert bench.percentile(values, 0.95) == 19.0
    assert bench.percentile(values, 0.5) == 10.0
    assert math.isnan(bench.percentile([], 0.95))


def test_the_report_shows_medians_ratios_to_the_floor_failures_and_ends_with_the_result_line(
    bench: ModuleType,
) -> None:
    runs = [
        bench.RunResult(
            first_cycle=140.0,
            steady_cycles=[3.0, 4.0, 5.0],
            requests_per_cycle={"list autopilotruleobjects": 2.0, "list persistentvolumeclaims": 1.0, "get pods": 0.5},
            rss_mib=260.0,
            cross_to_patch=[3.0, 5.0],
            floor=0.4,
            query_floor=0.2,
        ),
        bench.RunResult(
            first_cycle=150.0,
            steady_cycles=[4.0, 6.0],
            requests_per_cycle={"list autopilotruleobjects": 3.0, "list persistentvolumeclaims": 1.0},
            rss_mib=270.0,
            cross_to_patch=[4.0],
            floor=0.4,
            query_floor=0.3,
            failures=["run 2: no patch by the agent in the audit log for ns/data-7"],
        ),
    ]
    lines = bench.report(runs, runs=2)
    table = "\n".join(lines)
    assert re.search(r"^first cycle, s\s+145\.00\s+-\s+362\.5x$", table, flags=re.MULTILINE)
    assert re.search(r"^steady cycle, s\s+4\.00\s+6\.00\s+10\.0x$", table, flags=re.MULTILINE)
    assert re.search(r"^apiserver LISTs per steady cycle\s+3\.50", table, flags=re.MULTILINE)
    assert re.search(r"^  list autopilotruleobjects\s+2\.50", table, flags=re.MULTILINE)
    assert re.search(r"^  list persistentvolumeclaims\s+1\.00", table, flags=re.MULTILINE)
    assert re.search(r"^apiserver GETs per steady cycle\s+0\.25", table, flags=re.MULTILINE)
    assert re.search(r"^query floor: the rule's query by the bench, s\s+0\.250\s+-\s+0\.6x$", table, flags=re.MULTILINE)
    assert "1/2 runs completed" in table
    assert "  run 2: no patch by the agent in the audit log for ns/data-7" in lines
    assert lines[-1] == (
        "RESULT first_cycle_s=145.000 steady_cycle_s=4.000 rss_mib=265.000 lists_per_cycle=3.500 cross_to_patch_s=4.000"
    )
    assert RESULT.match(lines[-1])


def test_a_figure_no_run_measured_is_nan_in_the_result_and_a_dash_in_the_table(bench: ModuleType) -> None:
    lines = bench.report([bench.RunResult(floor=0.4, failures=["run 1: TimeoutError: the agent"])], runs=1)
    assert lines[-1] == (
        "RESULT first_cycle_s=nan steady_cycle_s=nan rss_mib=nan lists_per_cycle=nan cross_to_patch_s=nan"
    )
    assert re.search(r"^first cycle, s\s+-\s+-\s+-$", "\n".join(lines), flags=re.MULTILINE)


def test_an_agent_that_made_no_request_in_the_steady_cycles_makes_zero_lists_not_nan(bench: ModuleType) -> None:
    quiet = bench.RunResult(first_cycle=1.0, steady_cycles=[0.1], requests_per_cycle={}, floor=0.4)
    lines = bench.report([quiet], runs=1)
    assert "lists_per_cycle=0.000" in lines[-1]
    assert re.search(r"^apiserver requests per steady cycle\s+0\.00", "\n".join(lines), flags=re.MULTILINE)


def test_exit_code_is_0_when_every_run_completed_1_on_a_failed_run_2_on_a_setup_failure(bench: ModuleType) -> None:
    clean, failed = bench.RunResult(), bench.RunResult(failures=["run 2: timed out"])
    assert bench.exit_code([clean], setup_failed=False) == 0
    assert bench.exit_code([clean, failed], setup_failed=False) == 1
    assert bench.exit_code([], setup_failed=True) == 2


def test_each_run_crosses_distinct_pvcs_that_exist(bench: ModuleType) -> None:
    size = bench.Size.at(0.02)
    chosen = bench.crossing_keys(size, runs=3, per_run=2)
    flat = [key for run in chosen for key in run]
    assert [len(run) for run in chosen] == [2, 2, 2]
    assert len(set(flat)) == 6
    every = {"/".join(bench.pvc_key(size, index)) for index in range(size.pvcs)}
    assert set(flat) <= every


def test_the_exporter_serves_every_pvc_and_says_when_a_changed_value_was_first_scraped(bench: ModuleType) -> None:
    exporter = bench.UsageExporter([("ns", "data-0"), ("ns", "data-1")])
    try:
        text = exporter.scrape().decode()
        assert f'px_volume_usage_bytes{{namespace="ns",pvc="data-0"}} {int(bench.VOLUME_BYTES * 0.6)}' in text
        assert f'px_volume_capacity_bytes{{namespace="ns",pvc="data-1"}} {bench.VOLUME_BYTES}' in text
        exporter.set("ns/data-1", used=int(bench.VOLUME_BYTES * 0.9))
        assert exporter.served_at("ns/data-1") is None  # not scraped yet: not crossed in Prometheus
        text = exporter.scrape().decode()
        assert f'px_volume_usage_bytes{{namespace="ns",pvc="data-1"}} {int(bench.VOLUME_BYTES * 0.9)}' in text
        first = exporter.served_at("ns/data-1")
        assert first is not None
        exporter.scrape()
        assert exporter.served_at("ns/data-1") == first
    finally:
        exporter.stop()


@pytest.mark.sandbox
def test_a_small_cluster_run_ends_with_a_well_formed_result_and_patches_its_crossing_pvc(tmp_path: Path) -> None:
    environment = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--scale", "0.02", "--runs", "1", "--steady-cycles", "3", "--crossings", "1"],
        capture_output=True,
        text=True,
        timeout=900,
        env=environment,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    last = done.stdout.strip().splitlines()[-1]
    match = RESULT.match(last)
    assert match is not None, last
    figures = {name: float(value) for name, value in match.groupdict().items()}
    assert all(math.isfinite(value) for value in figures.values()), figures
    assert figures["first"] > 0 and figures["steady"] > 0 and figures["rss"] > 0 and figures["cross"] > 0
    assert figures["lists"] >= 0  # an agent fed by watches makes none
    assert re.search(r"crossed, request now 800Gi", done.stderr), done.stderr[-3000:]
    assert not list(tmp_path.glob("kafka-autopilot-bench-cluster-*")), "the work dir was left behind"
