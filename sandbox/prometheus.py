"""The sandbox's Prometheus: the cached binaries, and a scraping server that runs as a sandbox daemon.

Serving, backfill and the Prometheus configuration are the shipped package's
(`agent.adapters.local_prometheus`, also used by `kafka-autopilot test`); this module adds what only
the checkout has: the binaries that `scripts/install-prometheus.sh` put in the cache, and a launcher
that runs `prometheus` under the sandbox's time-to-live, with a pid file, so `sandbox down` and
`status` find it from another process.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from agent.adapters.local_prometheus import (
    LocalPrometheus,
    LocalPrometheusError,
    PrometheusBinaries,
    ScrapeTarget,
)
from sandbox.process import Daemon, SandboxProcessError, cache_root, start_daemon


class PrometheusNotInstalledError(SandboxProcessError):
    """The cached prometheus or promtool binary is missing."""


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


def _launch_daemon(name: str, argv: Sequence[str], run_dir: Path, *, ttl_seconds: int | None) -> Daemon:
    return start_daemon(name=name, argv=argv, run_dir=run_dir, ttl_seconds=ttl_seconds)


class PrometheusServer(LocalPrometheus):
    """The cached `prometheus` on 127.0.0.1 as a sandbox daemon (job `sandbox` for its scrape targets).

    Fails with SandboxProcessError, like every other part of the sandbox.
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
        super().__init__(
            prometheus=binaries().prometheus,
            tsdb_dir=tsdb_dir,
            run_dir=run_dir,
            name=name,
            scrape_targets=scrape_targets,
            scrape_interval_seconds=scrape_interval_seconds,
            ready_timeout_seconds=ready_timeout_seconds,
            port=port,
            job_name="sandbox",
            launcher=partial(_launch_daemon, ttl_seconds=ttl_seconds),
        )

    def start(self) -> None:
        try:
            super().start()
        except LocalPrometheusError as error:
            raise SandboxProcessError(str(error)) from error

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self
