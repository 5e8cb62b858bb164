"""Fixtures of the end-to-end tests: one real sandbox per test module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from agent.sandbox.environment import Sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    os.environ.setdefault("KAFKA_AUTOPILOT_SANDBOX_TTL", "3600")
    environment = Sandbox(work_dir=tmp_path_factory.mktemp("sandbox"))
    try:
        environment.up(progress=lambda message: print(message, flush=True))
        yield environment
    finally:
        environment.down(progress=lambda message: None)
