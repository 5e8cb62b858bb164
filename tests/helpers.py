"""Helpers shared by the integration and end-to-end tests (importable as `helpers`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest


def eventually(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll until `check()` returns something truthy and return it; an exception means "not yet".

    Fails the test on timeout, showing the last answer (or exception).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as error:  # not there yet
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"{what}: not reached within {timeout:.0f}s (last: {last!r})")


REFERENCE_RULE = """\
apiVersion: autopilot.libopenstorage.org/v1alpha1
kind: AutopilotRule
metadata:
  name: kafka-resize
spec:
  selector:
    matchLabels:
      app: kafka
  pollInterval: 2
  conditions:
    expressions:
      - key: "100 * (px_volume_usage_bytes / px_volume_capacity_bytes)"
        operator: Gt
        values: ["80"]
  actions:
    - name: openstorage.io.action.volume/resize
      params:
        scalepercentage: "100"
        maxsize: "1Ti"
"""
"""The reference rule of the vendor papers, character for character."""


def distinct_colours(png: Path) -> int:
    """How many different pixel colours a PNG has: 1 for a blank image."""
    pixels = matplotlib.image.imread(png)
    return len({tuple(pixel) for row in pixels for pixel in row})
