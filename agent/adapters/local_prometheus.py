"""A real Prometheus on this machine: find its binaries, backfill series into a TSDB, serve it on loopback.

Rule tests (`kafka-autopilot test`) never evaluate PromQL themselves. Their input series are
written as OpenMetrics text, turned into TSDB blocks by `promtool tsdb create-blocks-from
openmetrics`, and served by a `prometheus` started over those blocks; each condition is then an
instant query at `RULE_TEST_EPOCH + eval_time`. `kafka-autopilot lint` runs promtool too (see
`agent.adapters.promtool`). Both ship in the package, so the binaries are found the way a user's
installation has them: a command-line flag, else an environment variable, else `PATH`.

The checkout's sandbox runs its scraping Prometheus through the same `LocalPrometheus`, with its own
launcher (a daemon that outlives the process that started it).

Staleness markers cannot be backfilled: OpenMetrics text has no way to write Prometheus' special
stale NaN, so a `stale` step raises NotImplementedError.
"""

from __future__ import annotations

import http.client
import math
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol

import yaml

from agent.adapters.clock import Clock, WallClock
from agent.core.series import STALE, SeriesValue

PROMTOOL_ENV: Final = "KAFKA_AUTOPILOT_PROMTOOL"
PROMETHEUS_ENV: Final = "KAFKA_AUTOPILOT_PROMETHEUS"

RULE_TEST_EPOCH: Final = 0.0
"""Unix time of a rule test's first input step, as in promtool: `time()` then equals eval_time.

Prometheus serves backfilled blocks at the epoch: time retention counts back from the newest
block, not from the wall clock, so blocks of a rule test are never deleted as too old.
"""

RETENTION: Final = "100y"
"""Long enough that no block of a rule test or a sandbox run ever falls out of retention."""

LOOKBACK_DELTA_SECONDS: Final = 300.0
"""Prometheus' and promtool's default: a sample stays visible this long after it was taken."""

READY_POLL_SECONDS: Final = 0.05

BackfillSeries = tuple[str, Mapping[str, str], Sequence[tuple[float, SeriesValue]]]
"""One series to backfill: metric name, labels, and (Unix seconds, value) steps."""


class LocalPrometheusError(RuntimeError):
    """A local prometheus or promtool is missing, failed, or did not become ready; the message says which."""


class BinaryNotFoundError(LocalPrometheusError):
    """No usable `prometheus` or `promtool`: the message names the flag and the environment variable."""


class BackfillError(LocalPrometheusError):
    """promtool could not turn the series into TSDB blocks; the message carries its output."""


@dataclass(frozen=True, kw_only=True)
class PrometheusBinaries:
    """Paths of the `prometheus` server and its `promtool`."""

    prometheus: Path
    promtool: Path


def find_binary(name: str, *, given: Path | None, flag: str, env_var: str) -> Path:
    """`name` from the flag's value, else from `env_var`, else from PATH; fails naming all three."""
    configured = os.environ.get(env_var)
    if given is not None:
        source, candidate = flag, given
    elif configured:
        source, candidate = env_var, Path(configured)
    else:
        on_path = shutil.which(name)
        if on_path is None:
            raise BinaryNotFoundError(f"{name} not found: pass {flag} PATH or set {env_var} (or put {name} on PATH)")
        return Path(on_path)
    if not candidate.is_file() or not os.access(candidate, os.X_OK):
        raise BinaryNotFoundError(f"{name} not found: {source} names {candidate}, which is not an executable file")
    return candidate


def find_promtool(*, given: Path | None = None) -> Path:
    return find_binary("promtool", given=given, flag="--promtool", env_var=PROMTOOL_ENV)


def find_binaries(*, prometheus: Path | None = None, promtool: Path | None = None) -> PrometheusBinaries:
    """Both binaries, each from its flag's value, its environment variable or PATH."""
    return PrometheusBinaries(
        prometheus=find_binary("prometheus", given=prometheus, flag="--prometheus-bin", env_var=PROMETHEUS_ENV),
        promtool=find_promtool(given=promtool),
    )


# --- backfill ----------------------------------------------------------------------------------------


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


def backfill_openmetrics(*, series: Sequence[BackfillSeries], tsdb_dir: Path, promtool: Path) -> None:
    """Write `series` as TSDB blocks into `tsdb_dir` with `promtool tsdb create-blocks-from`."""
    families = _families(series)
    tsdb_dir.mkdir(parents=True, exist_ok=True)
    if not any(samples for members in families.values() for samples in members.values()):
        return  # promtool refuses an input without samples; an empty TSDB says the same
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
        except OSError as error:
            raise BackfillError(f"could not run {promtool}: {error}") from error
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


# --- serving ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ScrapeTarget:
    """A `host:port` to scrape, with the labels its series get (e.g. the broker's pod name)."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


class RunningProcess(Protocol):
    """A started `prometheus`, as its launcher sees it."""

    @property
    def log_path(self) -> Path: ...

    def log_tail(self, lines: int = 20) -> str: ...

    def exited(self, *, within_seconds: float) -> bool:
        """Wait at most `within_seconds` for the process to end; True if it has."""
        ...

    def stop(self) -> None: ...


Launcher = Callable[[str, Sequence[str], Path], RunningProcess]
"""Starts `argv` under a name, logging into the run dir: (name, argv, run_dir) -> the process."""


class ChildProcess:
    """A `prometheus` run as a child of this process, its output in `run_dir/<name>.log`."""

    def __init__(self, name: str, argv: Sequence[str], run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = run_dir / f"{name}.log"
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    @property
    def log_path(self) -> Path:
        return self._log_path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def exited(self, *, within_seconds: float) -> bool:
        try:
            self.process.wait(timeout=within_seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> None:
        self.process.terminate()
        if not self.exited(within_seconds=10):
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LocalPrometheus:
    """A `prometheus` on 127.0.0.1 over `tsdb_dir`, ready when entered and stopped on exit.

    Without scrape targets it only serves what was backfilled (rule tests); with targets
    ("host:port") it scrapes them every `scrape_interval_seconds` as job `job_name` (the sandbox).
    `launcher` starts the process: a child of this one by default.
    """

    def __init__(
        self,
        *,
        prometheus: Path,
        tsdb_dir: Path,
        run_dir: Path | None = None,
        name: str = "prometheus",
        scrape_targets: Sequence[str | ScrapeTarget] = (),
        scrape_interval_seconds: float = 15.0,
        ready_timeout_seconds: float = 60.0,
        port: int | None = None,
        job_name: str = "scrape",
        launcher: Launcher = ChildProcess,
        clock: Clock | None = None,
    ) -> None:
        self.prometheus = prometheus
        self.fixed_port = port
        self.tsdb_dir = tsdb_dir
        self.run_dir = run_dir if run_dir is not None else tsdb_dir.parent
        self.name = name
        self.scrape_targets = tuple(
            target if isinstance(target, ScrapeTarget) else ScrapeTarget(address=target) for target in scrape_targets
        )
        self.scrape_interval_seconds = scrape_interval_seconds
        self.job_name = job_name
        self.ready_timeout_seconds = ready_timeout_seconds
        self.launcher = launcher
        self.clock = clock or WallClock()
        self.port: int | None = None
        self.process: RunningProcess | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise LocalPrometheusError(f"{self.name} is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.tsdb_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / f"{self.name}.yml"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        for attempt in range(3):
            self.port = self.fixed_port or free_port()
            argv = [
                str(self.prometheus),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.tsdb_dir}",
                f"--storage.tsdb.retention.time={RETENTION}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ]
            try:
                self.process = self.launcher(self.name, argv, self.run_dir)
            except OSError as error:
                raise LocalPrometheusError(f"could not run {self.prometheus}: {error}") from error
            try:
                self._wait_until_ready(self.process)
                return
            except LocalPrometheusError:
                # Another process may have taken the free port between probe and bind.
                lost_port = "address already in use" in self.process.log_tail(5)
                self.stop()
                if not lost_port or attempt == 2 or self.fixed_port:
                    raise

    def _wait_until_ready(self, process: RunningProcess) -> None:
        deadline = self.clock.monotonic() + self.ready_timeout_seconds
        while self.clock.monotonic() < deadline:
            if self._ready():
                return
            if process.exited(within_seconds=READY_POLL_SECONDS):
                raise LocalPrometheusError(
                    f"{self.name} exited before /-/ready; log {process.log_path}:\n{process.log_tail()}"
                )
        raise LocalPrometheusError(
            f"{self.name}: /-/ready not reached within {self.ready_timeout_seconds:.0f}s; "
            f"log {process.log_path}:\n{process.log_tail()}"
        )

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except (OSError, http.client.HTTPException):  # not listening yet, or 503 while it loads the TSDB
            return False

    def _config(self) -> dict[str, object]:
        interval = f"{max(1, round(self.scrape_interval_seconds * 1000))}ms"
        config: dict[str, object] = {"global": {"scrape_interval": interval, "evaluation_interval": interval}}
        by_path: dict[str, list[ScrapeTarget]] = {}
        for target in self.scrape_targets:
            by_path.setdefault(target.metrics_path, []).append(target)
        config["scrape_configs"] = [
            {
                "job_name": self.job_name if index == 0 else f"{self.job_name}-{index}",
                "metrics_path": path,
                "static_configs": [{"targets": [t.address], "labels": dict(t.labels)} for t in targets],
            }
            for index, (path, targets) in enumerate(by_path.items())
        ]
        return config

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        self.port = None

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
