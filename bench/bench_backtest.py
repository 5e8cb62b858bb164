"""Benchmark `kafka-autopilot backtest`: 24 h of history at a 30 s step for the demo's 4 PVCs.

Why this exists: a backtest reads a window with one range query per distinct expression (chunked) and
replays every step through the core; this measures what an SRE waits for on a day of history. The
history is the demo's shape, written with promtool's backfill into a local real Prometheus: 4 PVCs of
400Gi scraped every 30 s, filling at different speeds, so some cross 80% and get resized (the
capacity series follows the size the reference rule would give them), one reaching 1Ti and maxsize.

    KAFKA_AUTOPILOT_PROMETHEUS=... KAFKA_AUTOPILOT_PROMTOOL=... .venv/bin/python bench/bench_backtest.py [--hours H]

Prints one table: backfill, the range reads and replay (what `backtest` does), records, actions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from agent.actions.registry import CATALOG
from agent.adapters.clock import WallClock
from agent.adapters.files import load_rule_paths
from agent.adapters.local_prometheus import BackfillSeries, LocalPrometheus, backfill_openmetrics, find_binaries
from agent.adapters.prometheus import PrometheusClient
from agent.core.loader import merge_results
from agent.core.matching import pvc_object
from agent.runtime.backtest import Window, run_backtest
from agent.runtime.backtest_output import summary

GI = 1024**3
RULE = Path(__file__).resolve().parents[1] / "rules" / "kafka-resize.yaml"
SCRAPE_SECONDS = 30
FILL_GIB_PER_HOUR = (10.0, 20.0, 40.0, 5.0)
"""How fast each PVC fills: 10 and 20 GiB/h cross 80% of 400Gi within the day; 40 reaches 1Ti."""


def history(*, start: int, hours: float) -> list[BackfillSeries]:
    series: list[BackfillSeries] = []
    for index, rate in enumerate(FILL_GIB_PER_HOUR):
        labels = {"namespace": "kafka", "pvc": f"data-kafka-{index}"}
        usage, capacity = [], []
        size = 400 * GI
        for step in range(int(hours * 3600 / SCRAPE_SECONDS) + 1):
            at = start + step * SCRAPE_SECONDS
            used = min(200 * GI + rate * GI * step * SCRAPE_SECONDS / 3600, 1024 * GI)
            usage.append((float(at), float(used)))
            capacity.append((float(at), float(size)))
            if used > 0.8 * size and size < 1024 * GI:
                size = min(2 * size, 1024 * GI)  # what the live agent did, seen at the next scrape
        series.append(("px_volume_usage_bytes", labels, usage))
        series.append(("px_volume_capacity_bytes", labels, capacity))
    return series


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    binaries = find_binaries()
    rules = merge_results(load_rule_paths([RULE], catalog=CATALOG)).rules
    objects = [
        pvc_object(namespace="kafka", name=f"data-kafka-{i}", labels={"app": "kafka"}, capacity_bytes=1024 * GI)
        for i in range(len(FILL_GIB_PER_HOUR))
    ]
    end = int(time.time()) // 60 * 60 - 3600
    start = end - int(args.hours * 3600)
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as scratch:
        began = time.perf_counter()
        backfill_openmetrics(
            series=history(start=start, hours=args.hours), tsdb_dir=Path(scratch) / "tsdb", promtool=binaries.promtool
        )
        backfilled = time.perf_counter() - began
        with (
            LocalPrometheus(
                prometheus=binaries.prometheus, tsdb_dir=Path(scratch) / "tsdb", run_dir=Path(scratch)
            ) as server,
            PrometheusClient(url=server.url, clock=WallClock(), timeout_seconds=60) as client,
        ):
            began = time.perf_counter()
            result = run_backtest(
                rules=rules,
                objects=objects,
                window=Window(start=start, end=end, step=30),
                range_query=client.range_query,
            )
            took = time.perf_counter() - began
    facts = summary(result)
    print(f"{'what':<40} {'value':>12}")
    print(f"{'window':<40} {args.hours:>10g} h")
    print(f"{'steps (30 s)':<40} {result.window.steps:>12}")
    print(f"{'PVCs':<40} {len(objects):>12}")
    print(f"{'backfill (promtool), s':<40} {backfilled:>12.2f}")
    print(f"{'backtest wall time (read + replay), s':<40} {took:>12.2f}")
    print(f"{'audit records':<40} {len(result.records):>12}")
    print(f"{'actions':<40} {sum(facts['actions_by_kind'].values()):>12}")
    print(f"{'declined at maxsize':<40} {facts['declined_at_maxsize']:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
