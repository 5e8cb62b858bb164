"""Helpers shared by the integration and end-to-end tests (importable as `helpers`)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import matplotlib.image
import pytest

from sandbox.scenarios import ScenarioTimeoutError, poll


def load_script(path: Path) -> ModuleType:
    """A script that is not in a package (e.g. a benchmark under bench/), imported as a module by its stem."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def eventually(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll until `check()` returns something truthy and return it; an exception means "not yet".

    Fails the test on timeout, showing the last answer (or exception).
    """
    try:
        return poll(check, timeout=timeout, what=what, interval=interval)
    except ScenarioTimeoutError as timed_out:
        pytest.fail(str(timed_out))


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
