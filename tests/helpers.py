"""Helpers shared by the integration and end-to-end tests (importable as `helpers`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

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
