"""Rule-test data path with the real binaries: promtool notation → backfill → prometheus → query."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.adapters.clock import WallClock
from agent.adapters.errors import PrometheusQueryError
from agent.adapters.local_prometheus import (
    LOOKBACK_DELTA_SECONDS,
    RULE_TEST_EPOCH,
    BackfillError,
    BackfillSeries,
    LocalPrometheus,
    backfill_openmetrics,
    free_port,
    render_openmetrics,
)
from agent.adapters.prometheus import PrometheusClient
from agent.core.samples import Sample
from agent.core.series import expand_values, parse_series_selector, with_timestamps
from sandbox.prometheus import PrometheusNotInstalledError, PrometheusServer, binaries

pytestmark = pytest.mark.prometheus

INTERVAL = 60.0

# Written as a promtool test's input_series would be.
INPUT_SERIES = {
    'px_volume_usage_bytes{namespace="kafka", persistentvolumeclaim="data-kafka-0"}': "50+10x10",
    'px_volume_usage_bytes{namespace="kafka", persistentvolumeclaim="data-kafka-1"}': "10 _ 30 40",
    'px_volume_capacity_bytes{namespace="kafka", persistentvolumeclaim="data-kafka-0"}': "200x10",
    'px_volume_capacity_bytes{namespace="kafka", persistentvolumeclaim="data-kafka-1"}': "100x10",
    'kafka_server_replicamanager_underreplicatedpartitions{pod="kafka-0"}': "_x3 2 NaN",
}

PVC0 = {"namespace": "kafka", "persistentvolumeclaim": "data-kafka-0"}
PVC1 = {"namespace": "kafka", "persistentvolumeclaim": "data-kafka-1"}


def to_backfill(input_series: dict[str, str]) -> list[BackfillSeries]:
    series: list[BackfillSeries] = []
    for selector, values in input_series.items():
        name, labels = parse_series_selector(selector)
        steps = with_timestamps(expand_values(values), start_seconds=RULE_TEST_EPOCH, interval_seconds=INTERVAL)
        series.append((name, labels, steps))
    return series


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    """The shipped package's server, as `kafka-autopilot test` runs it."""
    root = tmp_path_factory.mktemp("prometheus")
    backfill_openmetrics(series=to_backfill(INPUT_SERIES), tsdb_dir=root / "tsdb", promtool=binaries().promtool)
    with LocalPrometheus(prometheus=binaries().prometheus, tsdb_dir=root / "tsdb") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: LocalPrometheus) -> Iterator[PrometheusClient]:
    with PrometheusClient(url=server.url, clock=WallClock()) as prometheus:
        yield prometheus


def at(minutes: float) -> float:
    return RULE_TEST_EPOCH + minutes * 60


def by_pvc(samples: tuple[Sample, ...]) -> dict[str, float]:
    return {sample.labels["persistentvolumeclaim"]: sample.value for sample in samples}


def test_instant_query_returns_the_backfilled_sample_with_its_labels(client: PrometheusClient) -> None:
    samples = client.instant_query('px_volume_usage_bytes{persistentvolumeclaim="data-kafka-0"}', at=at(0))
    assert samples == (Sample(labels={"__name__": "px_volume_usage_bytes", **PVC0}, value=50.0),)


@pytest.mark.parametrize(("minute", "expected"), [(0, 50.0), (1, 60.0), (5, 100.0), (10, 150.0)])
def test_growth_notation_gives_one_step_per_interval(client: PrometheusClient, minute: int, expected: float) -> None:
    samples = client.instant_query('px_volume_usage_bytes{persistentvolumeclaim="data-kafka-0"}', at=at(minute))
    assert [sample.value for sample in samples] == [expected]


def test_between_steps_the_latest_sample_is_seen(client: PrometheusClient) -> None:
    samples = client.instant_query('px_volume_usage_bytes{persistentvolumeclaim="data-kafka-0"}', at=at(2.5))
    assert [sample.value for sample in samples] == [70.0]


def test_a_missing_step_leaves_the_previous_sample_visible_as_in_promtool(client: PrometheusClient) -> None:
    samples = client.instant_query('px_volume_usage_bytes{persistentvolumeclaim="data-kafka-1"}', at=at(1))
    assert [sample.value for sample in samples] == [10.0]


def test_missing_leading_steps_mean_no_series_yet(client: PrometheusClient) -> None:
    query = "kafka_server_replicamanager_underreplicatedpartitions"
    assert client.instant_query(query, at=at(2)) == ()
    assert [sample.value for sample in client.instant_query(query, at=at(3))] == [2.0]


def test_nan_is_served_as_a_sample_without_data(client: PrometheusClient) -> None:
    samples = client.instant_query("kafka_server_replicamanager_underreplicatedpartitions", at=at(4))
    assert len(samples) == 1
    assert math.isnan(samples[0].value)
    assert not samples[0].has_data


def test_arithmetic_joins_series_by_labels(client: PrometheusClient) -> None:
    expr = "100 * (px_volume_usage_bytes / px_volume_capacity_bytes)"
    samples = client.instant_query(expr, at=at(3))
    assert by_pvc(samples) == {"data-kafka-0": 100 * (80 / 200), "data-kafka-1": 100 * (40 / 100)}
    assert all("__name__" not in sample.labels for sample in samples)


def test_lookback_keeps_the_last_sample_for_five_minutes(client: PrometheusClient) -> None:
    query = 'px_volume_usage_bytes{persistentvolumeclaim="data-kafka-1"}'
    last_sample = at(3)
    assert [s.value for s in client.instant_query(query, at=last_sample + LOOKBACK_DELTA_SECONDS - 1)] == [40.0]
    assert client.instant_query(query, at=last_sample + LOOKBACK_DELTA_SECONDS + 1) == ()


def test_time_is_the_eval_time_as_in_promtool(client: PrometheusClient) -> None:
    assert client.instant_query("time()", at=at(7)) == (Sample(labels={}, value=420.0),)


def test_a_scalar_becomes_one_sample_without_labels(client: PrometheusClient) -> None:
    expr = 'scalar(px_volume_capacity_bytes{persistentvolumeclaim="data-kafka-1"}) / 4'
    assert client.instant_query(expr, at=at(1)) == (Sample(labels={}, value=25.0),)


async def test_async_query_gives_the_same_answer(client: PrometheusClient) -> None:
    expr = "sum(px_volume_capacity_bytes)"
    assert await client.query(expr, at=at(1)) == client.instant_query(expr, at=at(1))
    assert await client.query(expr, at=at(1)) == (Sample(labels={}, value=300.0),)


def test_bad_promql_is_reported_with_the_parser_message(client: PrometheusClient, server: LocalPrometheus) -> None:
    expr = "100 * (px_volume_usage_bytes"
    with pytest.raises(PrometheusQueryError) as caught:
        client.instant_query(expr, at=at(1))
    message = str(caught.value)
    assert message.startswith(f"prometheus {server.url}: bad PromQL in `{expr}`: ")
    assert "parse error" in message
    assert "unclosed left parenthesis" in message
    assert caught.value.status == 400
    assert not caught.value.temporary


def test_an_execution_error_is_reported(client: PrometheusClient) -> None:
    expr = "px_volume_usage_bytes + on(namespace) px_volume_capacity_bytes"
    with pytest.raises(PrometheusQueryError, match="many-to-many matching not allowed") as caught:
        client.instant_query(expr, at=at(1))
    assert caught.value.status == 422


def test_a_range_vector_is_refused(client: PrometheusClient) -> None:
    with pytest.raises(PrometheusQueryError, match="returns a range vector"):
        client.instant_query("px_volume_usage_bytes[5m]", at=at(5))


def test_an_unreachable_server_is_named_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with (
        PrometheusClient(url=url, attempts=2, timeout_seconds=2, clock=WallClock()) as unreachable,
        pytest.raises(PrometheusQueryError) as caught,
    ):
        unreachable.instant_query("up", at=at(1))
    message = str(caught.value)
    assert message.startswith(f"prometheus {url}: unreachable while querying `up`")
    assert "tried 2 times" in message
    assert caught.value.temporary
    assert time.monotonic() - started < 10


def test_stale_steps_cannot_be_backfilled(tmp_path: Path) -> None:
    series = to_backfill({'x{a="b"}': "1 stale 2"})
    with pytest.raises(NotImplementedError, match="no staleness marker"):
        backfill_openmetrics(series=series, tsdb_dir=tmp_path / "tsdb", promtool=binaries().promtool)


def test_promtool_errors_are_passed_on(tmp_path: Path) -> None:
    with pytest.raises(BackfillError, match="promtool tsdb create-blocks-from openmetrics failed") as caught:
        backfill_openmetrics(
            series=[("bad-name", {}, [(0.0, 1.0)])], tsdb_dir=tmp_path / "tsdb", promtool=binaries().promtool
        )
    assert "expected" in str(caught.value).split("\n", 1)[1]


def test_a_backfill_without_samples_leaves_an_empty_tsdb(tmp_path: Path) -> None:
    backfill_openmetrics(series=to_backfill({"x": "_x3"}), tsdb_dir=tmp_path / "tsdb", promtool=binaries().promtool)
    assert list((tmp_path / "tsdb").iterdir()) == []


def test_openmetrics_groups_each_family_and_keeps_milliseconds() -> None:
    text = render_openmetrics(
        [
            ("b", {"k": 'quote " and \\ and\nnewline'}, [(4.35, 1.5), (0.0, math.inf), (60.0, None)]),
            ("a", {"empty": ""}, [(0.0, math.nan)]),
        ]
    )
    assert text.splitlines() == [
        "# TYPE b unknown",
        'b{k="quote \\" and \\\\ and\\nnewline"} +Inf 0',
        'b{k="quote \\" and \\\\ and\\nnewline"} 1.5 4.3505',
        "# TYPE a unknown",
        "a NaN 0",
        "# EOF",
    ]


def test_duplicate_series_are_refused() -> None:
    with pytest.raises(ValueError, match="given twice"):
        render_openmetrics([("a", {"x": "1"}, [(0.0, 1.0)]), ("a", {"x": "1"}, [(60.0, 2.0)])])


def test_missing_binaries_name_the_install_script(tmp_path: Path) -> None:
    with pytest.raises(PrometheusNotInstalledError, match=r"run scripts/install-prometheus\.sh"):
        binaries(cache=tmp_path)


def test_a_server_with_scrape_targets_scrapes_them(server: LocalPrometheus, tmp_path: Path) -> None:
    target = server.url.removeprefix("http://")
    with (
        PrometheusServer(
            tsdb_dir=tmp_path / "tsdb",
            name="scraper",
            scrape_targets=[target],
            scrape_interval_seconds=0.5,
            ttl_seconds=120,
        ) as scraper,
        PrometheusClient(url=scraper.url, clock=WallClock()) as client,
    ):
        deadline = time.monotonic() + 30
        samples: tuple[Sample, ...] = ()
        while time.monotonic() < deadline and not samples:
            samples = client.instant_query('up{job="sandbox"}')
            time.sleep(0.2)
    assert samples == (Sample(labels={"__name__": "up", "instance": target, "job": "sandbox"}, value=1.0),)


@pytest.mark.parametrize(
    "values",
    ["-2+4x3", " 1-2x4", "1x4", " 1 _x3 5", "010 -010 09 010.5", "0+0.1x7", "1e3+1e2x2 .5 -0.25", "+Inf -inf 3"],
)
def test_expansion_agrees_with_promtool(values: str, tmp_path: Path) -> None:
    """promtool itself checks our expansion: one expected sample per step that has one."""
    cases = [
        {"expr": "s", "eval_time": f"{index}m", "exp_samples": [{"labels": 's{a="1"}', "value": value}]}
        for index, value in enumerate(expand_values(values))
        if isinstance(value, float)
    ]
    assert cases
    test_file = tmp_path / "notation.test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [{"series": 's{a="1"}', "values": values}],
                        "promql_expr_test": cases,
                    }
                ],
            }
        )
    )
    done = subprocess.run(
        [str(binaries().promtool), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
