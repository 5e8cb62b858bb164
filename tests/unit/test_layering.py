"""The architecture, checked: imports flow runtime -> actions -> adapters -> core, and the core is pure.

`agent/core` may import nothing of ours above it, and nothing that does I/O, reads the clock or runs
an event loop. Each rule below is one row; a new module is checked without being listed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"

FORBIDDEN = {
    "core": {
        "agent.adapters",
        "agent.actions",
        "agent.runtime",
        "agent.audit",
        "sandbox",
        "agent.cli",
        "asyncio",
        "socket",
        "subprocess",
        "requests",
        "aiohttp",
        "aiokafka",
        "kubernetes_asyncio",
        "prometheus_api_client",
        "time",
        "os",
        "structlog",
        "tenacity",
    },
    "adapters": {"agent.actions", "agent.runtime", "agent.cli", "sandbox"},
    "actions": {"agent.runtime", "agent.cli", "sandbox"},
    "audit": {"agent.actions", "agent.runtime", "agent.cli", "sandbox"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def violations(layer: str) -> list[str]:
    problems = []
    for path in sorted((AGENT / layer).rglob("*.py")):
        for module in imported_modules(path):
            for banned in FORBIDDEN[layer]:
                if module == banned or module.startswith(banned + "."):
                    problems.append(f"{path.relative_to(AGENT.parent)} imports {module}")
    return problems


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_follow_the_layers(layer: str) -> None:
    assert (AGENT / layer).is_dir()
    assert violations(layer) == []


def test_the_check_catches_a_violation(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import asyncio\nfrom agent.runtime.agent import Agent\n")
    assert imported_modules(module) == {"asyncio", "agent.runtime.agent"}


def test_the_core_reads_no_clock() -> None:
    calls = []
    for path in sorted((AGENT / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("now", "utcnow", "today")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("datetime", "date")
            ):
                calls.append(f"{path.name}:{node.lineno} {node.func.value.id}.{node.func.attr}()")
    assert calls == []
