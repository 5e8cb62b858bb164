"""The agent's own logs, configured in one place: structlog to stderr, JSON by default.

Why it exists: stdout is the audit trail (one JSON record per line, unless `--audit FILE`), so what
the agent says about itself (warnings, retries, resumed actions) must go elsewhere, and be as easy
to parse. Every log line is a JSON object with `event` (the message), `level` and `timestamp`; an
audit record never has `level`, which tells the two apart in `kubectl logs` (which merges both
streams). `--log-format console` gives human-readable lines instead; `--log-level` filters.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


class _CurrentStderr:
    """sys.stderr as it is at each write (not when logging was configured: tests and the demo swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, log_format: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Send every structlog logger to `stream` (stderr by default) in `log_format`, at `level` and above."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    target: TextIO = stream if stream is not None else _CurrentStderr()  # type: ignore[assignment]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(default=str)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=target),
        cache_logger_on_first_use=False,
    )
