"""Run the real Prometheus for rule tests and the sandbox: backfill series, serve them, scrape.

Rule tests (`kafka-autopilot test`) never evaluate PromQL themselves. Their input series are
written as OpenMetrics text, turned into TSDB blocks by `promtool tsdb create-blocks-from
openmetrics`, and served by a `prometheus` started over those blocks; each condition is then an
instant query at `RULE_TEST_EPOCH + eval_time`. The binaries come from Debian's package, put in
the cache by `scripts/install-prometheus.sh`.

Staleness markers cannot be backfilled: OpenMetrics text has no way to write Prometheus' special
stale NaN, so a `stale` step raises NotImplementedError.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

import yaml

from agent.core.series import STALE, SeriesValue
from agent.sandbox.process import (
    Daemon,
    SandboxProcessError,
    cache_root,
    free_port,
    start_daemon,
    stop_daemon,
    wait_until,
)

RULE_TEST_EPOCH: Final = 0.0
"""Unix time of a rule test's first input step, as in promtool: `time()` then equals eval_time.

Prometheus serves backfilled blocks at the epoch: time retention counts back from the newest
block, not from the wall clock, so blocks of a rule test are never deleted as too old.
"""

RETENTION: Final = "100y"
"""Long enough that no block of a rule test or a sandbox run ever falls out of retention."""

LOOKBACK_DELTA_SECONDS: Final = 300.0
"""Prometheus' and promtool's default: a sample stays visible this long after it was taken."""

BackfillSeries = tuple[str, Mapping[str, str], Sequence[tuple[float, SeriesValue]]]
"""One series to backfill: metric name, labels, and (Unix seconds, value) steps."""


@dataclass(frozen=True, kw_only=True)
class ScrapeTarget:
    """A `host:port` to scrape, with the labels its series get (e.g. the broker's pod name)."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


class PrometheusNotInstalledError(SandboxProcessError):
    """The cached prometheus or promtool binary is missing."""


class BackfillError(SandboxProcessError):
    """promtool could not turn the series into TSDB blocks; the message carries its output."""


@dataclass(frozen=True, kw_only=True)
class PrometheusBinaries:
    """Paths of the cached binaries."""

    prometheus: Path
    promtool: Path


def binaries(*, cache: Path | None = None) -> PrometheusBinaries:
    """The cached `prometheus` and `promtool`; fails with the command that installs them."""
    bin_dir = (cache or cache_root()) / "prometheus" / "bin"
    found = PrometheusBinaries(prometheus=bin_dir / "prometheus", promtool=bin_dir / "promtool")
    missing = [path for path in (found.prometheus, found.promtool) if not path.is_file()]
    if missing:
        names = ", ".join(str(path) for path in missing)
        raise PrometheusNotInstalledError(
            f"Prometheus is not installed ({names} missing): run scripts/install-prometheus.sh"
        )
    return found


def render_openmetrics(series: Iterable[BackfillSeries]) -> str:
    """OpenMetrics text for `series`: one family per metric name, samples in time order, `# EOF`.

    Missing steps (None) are left out. Raises ValueError for a duplicate series or timestamp,
    and NotImplementedError for a staleness marker.
    """
    return _render(_families(series))


_Families = dict[str, dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]]


def _families(series: Iterable[BackfillSeries]) -> _Families:
    families: _Families = {}
    for name, labels, steps in series:
        key = tuple(sorted((label, value) for label, value in labels.items() if value != ""))
        family = families.setdefault(name, {})
        if key in family:
            raise ValueError(f"series {_selector(name, key)} is given twice")
        family[key] = _samples(name, key, steps)
    return families


def _render(families: _Families) -> str:
    lines: list[str] = []
    for name, members in families.items():
        lines.append(f"# TYPE {name} unknown")
        for key, samples in members.items():
            selector = _selector(name, key)
            lines.extend(f"{selector} {_format_value(value)} {_format_timestamp(ms)}" for ms, value in samples)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _samples(
    name: str, key: tuple[tuple[str, str], ...], steps: Sequence[tuple[float, SeriesValue]]
) -> list[tuple[int, float]]:
    by_time: dict[int, float] = {}
    for timestamp, value in steps:
        if value is None:
            continue
        if value == STALE:
            raise NotImplementedError(
                f"series {_selector(name, key)}: a `stale` step at t={timestamp:g}s cannot be backfilled "
                "(OpenMetrics has no staleness marker); leave the series out with `_` instead"
            )
        ms = round(timestamp * 1000)
        if ms in by_time:
            raise ValueError(f"series {_selector(name, key)} has two samples at t={ms / 1000:g}s")
        by_time[ms] = float(value)
    return sorted(by_time.items())


def _selector(name: str, key: tuple[tuple[str, str], ...]) -> str:
    if not key:
        return name
    return name + "{" + ",".join(f'{label}="{_escape(value)}"' for label, value in key) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _format_timestamp(ms: int) -> str:
    """Seconds for `ms`, written so that promtool, which truncates seconds*1000, reads back `ms`."""
    seconds, millis = divmod(abs(ms), 1000)
    sign = "-" if ms < 0 else ""
    if millis == 0:
        return f"{sign}{seconds}"
    # Half a millisecond more keeps float error from truncating e.g. 4.35 s to 4349 ms.
    return f"{sign}{seconds}.{millis:03d}5"


def backfill_openmetrics(*, series: Sequence[BackfillSeries], tsdb_dir: Path) -> None:
    """Write `series` as TSDB blocks into `tsdb_dir` with `promtool tsdb create-blocks-from`."""
    families = _families(series)
    tsdb_dir.mkdir(parents=True, exist_ok=True)
    if not any(samples for members in families.values() for samples in members.values()):
        return  # promtool refuses an input without samples; an empty TSDB says the same
    promtool = binaries().promtool
    with tempfile.TemporaryDirectory(prefix="openmetrics-") as scratch:
        source = Path(scratch) / "series.om.txt"
        source.write_text(_render(families))
        command = [
            str(promtool),
            "tsdb",
            "create-blocks-from",
            f"--max-block-duration={_block_hours(families)}h",
            "openmetrics",
            str(source),
            str(tsdb_dir),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False
            )
        except subprocess.TimeoutExpired as expired:
            raise BackfillError(f"promtool did not finish backfilling within {expired.timeout:g}s") from None
    if done.returncode != 0:
        raise BackfillError(
            f"promtool tsdb create-blocks-from openmetrics failed (exit {done.returncode}):\n"
            f"{(done.stderr or done.stdout).strip()}"
        )


def _block_hours(families: _Families) -> int:
    """Hours per block so that one or two blocks hold everything.

    promtool reads its whole input once per block, so its default 2h blocks make a few days of
    1m samples take many seconds; Prometheus serves blocks of any length.
    """
    times = [ms for members in families.values() for samples in members.values() for ms, _ in samples]
    span_hours = (max(times) - min(times)) / 3_600_000
    return max(2, 2 * math.ceil(span_hours / 2))


class PrometheusServer:
    """A `prometheus` on 127.0.0.1 over `tsdb_dir`, ready when entered and stopped on exit.

    Without scrape targets it only serves what was backfilled (rule tests); with targets
    ("host:port") it scrapes them every `scrape_interval_seconds` (the sandbox).
    """

    def __init__(
        self,
        *,
        tsdb_dir: Path,
        run_dir: Path | None = None,
        name: str = "prometheus",
        scrape_targets: Sequence[str | ScrapeTarget] = (),
        scrape_interval_seconds: float = 15.0,
        ready_timeout_seconds: float = 60.0,
        ttl_seconds: int | None = None,
        port: int | None = None,
    ) -> None:
        self.fixed_port = port
        self.tsdb_dir = tsdb_dir
        self.run_dir = run_dir if run_dir is not None else tsdb_dir.parent
        self.name = name
        self.scrape_targets = tuple(
            target if isinstance(target, ScrapeTarget) else ScrapeTarget(address=target) for target in scrape_targets
        )
        self.scrape_interval_seconds = scrape_interval_seconds
        self.ready_timeout_seconds = ready_timeout_seconds
        self.ttl_seconds = ttl_seconds
        self.port: int | None = None
        self.daemon: Daemon | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise SandboxProcessError(f"{self.name} is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        prometheus = binaries().prometheus
        self.tsdb_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / f"{self.name}.yml"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        for attempt in range(3):
            self.port = self.fixed_port or free_port()
            self.daemon = start_daemon(
                name=self.name,
                argv=[
                    str(prometheus),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.tsdb_dir}",
                    f"--storage.tsdb.retention.time={RETENTION}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                run_dir=self.run_dir,
                ttl_seconds=self.ttl_seconds,
            )
            try:
                wait_until(
                    self._ready,
                    daemon=self.daemon,
                    timeout_seconds=self.ready_timeout_seconds,
                    what="/-/ready",
                    interval_seconds=0.05,
                )
                return
            except SandboxProcessError:
                # Another process may have taken the free port between probe and bind.
                lost_port = "address already in use" in self.daemon.log_tail(5)
                self.stop()
                if not lost_port or attempt == 2 or self.fixed_port:
                    raise

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
            return bool(answer.status == 200)

    def _config(self) -> dict[str, object]:
        interval = f"{max(1, round(self.scrape_interval_seconds * 1000))}ms"
        config: dict[str, object] = {"global": {"scrape_interval": interval, "evaluation_interval": interval}}
        by_path: dict[str, list[ScrapeTarget]] = {}
        for target in self.scrape_targets:
            by_path.setdefault(target.metrics_path, []).append(target)
        config["scrape_configs"] = [
            {
                "job_name": "sandbox" if index == 0 else f"sandbox-{index}",
                "metrics_path": path,
                "static_configs": [{"targets": [t.address], "labels": dict(t.labels)} for t in targets],
            }
            for index, (path, targets) in enumerate(by_path.items())
        ]
        return config

    def stop(self) -> None:
        if self.daemon is not None:
            stop_daemon(self.daemon)
            self.daemon = None
        self.port = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
