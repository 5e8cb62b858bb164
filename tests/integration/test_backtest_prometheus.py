"""`kafka-autopilot backtest` against a real Prometheus holding backfilled history (no cluster: --objects).

The history is the reference table's shape: a 400Gi PVC filling past 80%, its capacity following the
live agent's resizes one scrape later, up to 1Ti. The range reads are cut into small chunks here, so
a window of 61 steps crosses several chunk borders.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.adapters import prometheus as prometheus_adapter
from agent.adapters.clock import WallClock
from agent.adapters.local_prometheus import BackfillSeries, LocalPrometheus, backfill_openmetrics
from agent.adapters.prometheus import PrometheusClient
from agent.audit.trail import iso_time
from agent.cli import main
from sandbox.prometheus import binaries

pytestmark = pytest.mark.prometheus

GI = 1024**3
START = 1_800_000_000
SCRAPE = 30
REPO = Path(__file__).resolve().parents[2]
USED_GIB = [200 + 5 * step for step in range(61)]
"""Past 80% of 400Gi at step 25 (325Gi); 80% of 800Gi would take till step 96."""
USED_GIB[40:] = [840] * 21
"""A jump at 20 min to 840Gi: the second resize (800Gi -> 1Ti), then 82% of 1Ti: declined at maxsize."""


def history() -> list[BackfillSeries]:
    labels = {"namespace": "kafka", "pvc": "data-kafka-0"}
    usage, capacity = [], []
    size = 400
    for step, used in enumerate(USED_GIB):
        at = float(START + step * SCRAPE)
        usage.append((at, float(used * GI)))
        capacity.append((at, float(size * GI)))
        if used > 0.8 * size and size < 1024:
            size = min(2 * size, 1024)
    return [("px_volume_usage_bytes", labels, usage), ("px_volume_capacity_bytes", labels, capacity)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    root = tmp_path_factory.mktemp("prometheus")
    backfill_openmetrics(series=history(), tsdb_dir=root / "tsdb", promtool=binaries().promtool)
    with LocalPrometheus(prometheus=binaries().prometheus, tsdb_dir=root / "tsdb") as running:
        yield running


def test_a_chunked_range_read_gives_what_instant_queries_give(
    server: LocalPrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prometheus_adapter, "RANGE_CHUNK_STEPS", 7)
    chunks: list[int] = []
    with PrometheusClient(url=server.url, clock=WallClock()) as client:
        (series,) = client.range_query(
            "px_volume_usage_bytes", start=START, end=START + 60 * SCRAPE, step=SCRAPE, on_chunk=chunks.append
        )
        instant = [client.instant_query("px_volume_usage_bytes", at=at)[0].value for at, _ in series.points]
    assert chunks == [7] * 8 + [5]
    assert [at for at, _ in series.points] == [float(START + step * SCRAPE) for step in range(61)]
    assert [value for _, value in series.points] == instant


def test_the_backtest_command_replays_the_history(
    server: LocalPrometheus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prometheus_adapter, "RANGE_CHUNK_STEPS", 7)
    inventory = tmp_path / "objects.yaml"
    # The size now (1Ti) is not the size at the start (400Gi, from history).
    inventory.write_text(
        "objects:\n"
        "  - {kind: PersistentVolumeClaim, namespace: kafka, name: data-kafka-0, labels: {app: kafka}, capacity: 1Ti}\n"
    )
    page = tmp_path / "plot.html"
    argv = ["backtest", "--rules", str(REPO / "rules" / "kafka-resize.yaml"), "--prometheus", server.url]
    argv += ["--from", iso_time(START), "--to", iso_time(START + 60 * SCRAPE), "--step", "30s"]
    argv += ["--objects", str(inventory), "--json", "--plot", str(page)]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    acted = [
        (record["time"], record["before"], record["after"])
        for record in document["records"]
        if record["event"] == "action-applied"
    ]
    # Planned at steps 25 and 40; done when history shows the new size, one scrape later.
    assert acted == [
        (iso_time(START + 26 * SCRAPE), "400Gi", "800Gi"),
        (iso_time(START + 41 * SCRAPE), "800Gi", "1Ti (capped at maxsize)"),
    ]
    assert document["summary"]["declined_at_maxsize"] == 1
    assert document["summary"]["steps"] == 61
    assert 'src="data:image/png;base64,' in page.read_text()


def test_a_bad_window_cannot_run(server: LocalPrometheus, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["backtest", "--rules", str(REPO / "rules" / "kafka-resize.yaml"), "--prometheus", server.url]
    assert main([*argv, "--from", "yesterday", "--objects", "/dev/null"]) == 2
    assert "'yesterday' is neither an RFC 3339 time" in capsys.readouterr().err
