"""The pure parts of the remediation benchmark: its arguments, its table, its exit code and its choice of
node to fail. The runs themselves need a live sandbox and are the benchmark's business, never a test's."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_remediation.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(BENCH)


def test_arguments_default_to_every_shape_and_three_runs(bench: ModuleType) -> None:
    assert bench.parse_args([]) == bench.Options(shapes=("statefulset", "strimzi", "bitnami"), runs=3)
    assert bench.parse_args(["--shapes", " bitnami, strimzi", "--runs", "5"]) == bench.Options(
        shapes=("bitnami", "strimzi"), runs=5
    )


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--shapes", "statefulset,kraft"], "unknown kraft"),
        (["--shapes", ","], "(none given)"),
        (["--shapes", "bitnami,bitnami"], "named twice"),
        (["--runs", "0"], "at least 1"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(
    bench: ModuleType, argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        bench.parse_args(argv)
    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err


def test_a_row_has_the_median_min_max_baseline_median_and_the_median_of_per_run_ratios(bench: ModuleType) -> None:
    timings = [
        bench.Timing(seconds=60.0, baseline=20.0),  # 3x
        bench.Timing(seconds=90.0, baseline=18.0),  # 5x
        bench.Timing(seconds=40.0, baseline=25.0),  # 1.6x
    ]
    row = bench.summary_row("bitnami", bench.NODE_FAILURE, timings, wanted=3)
    assert row == [
        "bitnami",
        "node NotReady -> broker Running elsewhere",
        "3/3",
        "60.0",
        "40.0",
        "90.0",
        "20.0",
        "3.00x",
    ]


def test_a_measure_without_a_completed_run_shows_dashes(bench: ModuleType) -> None:
    row = bench.summary_row("strimzi", bench.REBALANCE, [], wanted=3)
    assert row == ["strimzi", "imbalance visible -> balanced", "0/3", "-", "-", "-", "-", "-"]


def test_the_report_aligns_one_row_per_shape_and_measure_and_names_every_failed_run(bench: ModuleType) -> None:
    done = bench.ShapeResult(shape="statefulset")
    done.timings[bench.NODE_FAILURE.name] += [bench.Timing(seconds=70.0, baseline=21.0)]
    done.timings[bench.REBALANCE.name] += [bench.Timing(seconds=12.5, baseline=6.0)]
    short = bench.ShapeResult(shape="strimzi", failures=["strimzi node-failure run 1 (n1, broker 10): timed out"])
    lines = bench.report([done, short], runs=1)

    header, *rows = lines[:5]
    assert header.split()[:3] == ["shape", "measure", "runs"]
    assert [row.split()[0] for row in rows] == ["statefulset", "statefulset", "strimzi", "strimzi"]
    assert rows[0].endswith("3.33x")
    assert rows[1].endswith("2.08x")
    assert rows[2].endswith("-")
    assert len({len(row) for row in [header, rows[0], rows[1]]}) == 1  # right-aligned figures end together
    assert lines[-1] == "  strimzi node-failure run 1 (n1, broker 10): timed out"
    assert "1 run(s) did not complete:" in lines
    assert "baseline of `node NotReady -> broker Running elsewhere`: heartbeat stop -> NotReady" in lines


def test_exit_code_is_0_when_every_run_completed_1_on_a_failed_run_2_on_a_setup_failure(bench: ModuleType) -> None:
    clean = bench.ShapeResult(shape="bitnami")
    failed = bench.ShapeResult(shape="strimzi", failures=["strimzi rebalance run 2 (broker 11): timed out"])
    assert bench.exit_code([clean], setup_failed=False) == 0
    assert bench.exit_code([clean, failed], setup_failed=False) == 1
    assert bench.exit_code([clean], setup_failed=True) == 2


def test_the_node_to_fail_runs_only_that_broker_and_was_not_failed_before(bench: ModuleType) -> None:
    brokers = [
        {"broker_id": 101, "node": "n1"},
        {"broker_id": 100, "node": "n5"},
        {"broker_id": 102, "node": "n5"},  # moved onto 100's node by an earlier run: n5 runs two
        {"broker_id": 103, "node": "n4"},
    ]
    assert bench.broker_alone_on_its_node(brokers, used=set())["broker_id"] == 101
    assert bench.broker_alone_on_its_node(brokers, used={101})["broker_id"] == 103
    assert bench.broker_alone_on_its_node(brokers, used={101, 103}) is None
