"""Start, watch and stop the sandbox's daemons (etcd, kube-*, Kafka, Prometheus, ...).

Every daemon runs under coreutils `timeout`, so none outlives its time-to-live even when the
process that started it is killed: a forgotten sandbox stops by itself. Each daemon writes its
output to a log file and its pid to a pid file, so `sandbox down` and `status` work from another
process than the one that ran `up`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.adapters.local_prometheus import free_port

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "Daemon",
    "SandboxProcessError",
    "cache_root",
    "daemon_from_pid_file",
    "free_port",
    "pid_is_running",
    "port_is_open",
    "sandbox_ttl_seconds",
    "start_daemon",
    "stop_daemon",
    "wait_until",
]

DEFAULT_TTL_SECONDS = 3 * 3600
"""How long a sandbox daemon may live unless `KAFKA_AUTOPILOT_SANDBOX_TTL` says otherwise."""


class SandboxProcessError(RuntimeError):
    """A daemon failed to start, or did not become ready in time; the message names its log."""


def cache_root() -> Path:
    """The git-ignored directory where downloads and builds are cached and reused."""
    configured = os.environ.get("KAFKA_AUTOPILOT_CACHE")
    if configured:
        return Path(configured).resolve()
    return Path(__file__).resolve().parents[1] / ".cache"


def sandbox_ttl_seconds() -> int:
    return int(os.environ.get("KAFKA_AUTOPILOT_SANDBOX_TTL", DEFAULT_TTL_SECONDS))


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


@dataclass(frozen=True, kw_only=True)
class Daemon:
    """A started daemon: its name, pid (of the `timeout` wrapper) and files."""

    name: str
    pid: int
    log_path: Path
    pid_path: Path

    def is_running(self) -> bool:
        return pid_is_running(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def exited(self, *, within_seconds: float) -> bool:
        """Wait at most `within_seconds` for the daemon to end; True if it has."""
        if not self.is_running():
            return True
        time.sleep(within_seconds)
        return not self.is_running()

    def stop(self) -> None:
        stop_daemon(self)


def pid_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return reaped == 0


def start_daemon(
    *,
    name: str,
    argv: Sequence[str],
    run_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ttl_seconds: int | None = None,
) -> Daemon:
    """Start `argv` in its own session under `timeout`, logging to `run_dir/<name>.log`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{name}.log"
    pid_path = run_dir / f"{name}.pid"
    ttl = ttl_seconds if ttl_seconds is not None else sandbox_ttl_seconds()
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    wrapped = ["timeout", "--kill-after=10s", f"{ttl}s", *argv]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            wrapped,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    pid_path.write_text(str(process.pid))
    return Daemon(name=name, pid=process.pid, log_path=log_path, pid_path=pid_path)


def daemon_from_pid_file(*, name: str, run_dir: Path) -> Daemon | None:
    """The daemon `name` started earlier (maybe by another process), if its pid file exists."""
    pid_path = run_dir / f"{name}.pid"
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None
    return Daemon(name=name, pid=pid, log_path=run_dir / f"{name}.log", pid_path=pid_path)


def stop_daemon(daemon: Daemon, *, grace_seconds: float = 10.0) -> None:
    """SIGTERM the daemon's whole process group, then SIGKILL what is left after the grace."""
    _signal_group(daemon.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not pid_is_running(daemon.pid):
            break
        time.sleep(0.1)
    _signal_group(daemon.pid, signal.SIGKILL)
    for _ in range(50):
        if not pid_is_running(daemon.pid):
            break
        time.sleep(0.1)
    daemon.pid_path.unlink(missing_ok=True)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def wait_until(
    check: Callable[[], bool],
    *,
    daemon: Daemon,
    timeout_seconds: float,
    what: str,
    interval_seconds: float = 0.2,
) -> None:
    """Poll `check()` until it is true; fail naming the daemon and its log if it dies or times out."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not ready yet: poll again
            pass
        if not daemon.is_running():
            raise SandboxProcessError(
                f"{daemon.name} exited before {what}; log {daemon.log_path}:\n{daemon.log_tail()}"
            )
        time.sleep(interval_seconds)
    raise SandboxProcessError(
        f"{daemon.name}: {what} not reached within {timeout_seconds:.0f}s; log {daemon.log_path}:\n{daemon.log_tail()}"
    )
