"""The architecture, checked: imports flow cli -> runtime -> actions -> adapters -> core, and nothing loops.

Each layer may import only the layers to its right; `agent/audit` sits beside the adapters (it imports the
core only; the runtime and the command line use it). On top of the rows:
- the core is pure: nothing that does I/O, reads the clock or runs an event loop;
- nothing in `agent/` imports the checkout's sandbox (`sandbox`, or the old `agent.sandbox`), not even
  inside a function: `agent/cli.py` finds `sandbox.cli` by name (see its docstring);
- adapters are independent: a module of one adapter (a module or package directly under
  `agent/adapters`) imports no other adapter, except the shared base modules `errors`, `retry` and
  `clock`; a package's modules may import their own package;
- there is no import cycle in `agent/`.

Imports are read from the syntax tree (no module is imported): `import`, `from ... import` (absolute and
relative), wherever they are (inside functions, under `if TYPE_CHECKING:`). An imported name is the
deepest module of ours it names (`from agent.adapters import kafka` is `agent.adapters.kafka`).
Every checker takes the root of the tree, so the tests below also plant violations in a scratch tree.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "agent"

ALLOWED_LAYERS = {
    "cli": {"runtime", "actions", "adapters", "audit", "core"},
    "runtime": {"actions", "adapters", "audit", "core"},
    "actions": {"adapters", "core"},
    "adapters": {"core"},
    "audit": {"core"},
    "core": set(),
}
"""Layer -> the other layers it may import (each may import itself and the bare `agent` package)."""

IMPURE_FOR_THE_CORE = {
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
}
SANDBOX_PACKAGES = ("sandbox", "agent.sandbox")
SHARED_ADAPTER_MODULES = {"errors", "retry", "clock"}


@dataclass(frozen=True, kw_only=True)
class Import:
    importer: str
    imported: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}"


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module in `root/agent` (a package is its __init__.py)."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


@functools.cache
def imports(root: Path) -> tuple[Import, ...]:
    """Every import statement of every module under `root/agent`, resolved to full dotted names (read once)."""
    return tuple(_read_imports(root))


def _read_imports(root: Path) -> Iterator[Import]:
    known = modules(root)
    for importer, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base(importer, is_package=is_package, level=node.level, module=node.module)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            for target in dict.fromkeys(targets):
                yield Import(importer=importer, imported=target, path=path.relative_to(root), line=node.lineno)


def _base(importer: str, *, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    anchor = package[: len(package) - (level - 1)]
    return ".".join([*anchor, module] if module else anchor)


def layer_of(module: str) -> str | None:
    """`cli`, `runtime`, ... for a module of ours; None for the bare package and for anything else."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(root: Path, layer: str) -> list[str]:
    """Imports of `layer`'s modules that go against the flow (and, for the core, anything impure)."""
    allowed = ALLOWED_LAYERS[layer] | {layer}
    problems = []
    for found in imports(root):
        if layer_of(found.importer) != layer:
            continue
        target_layer = layer_of(found.imported)
        if _within(found.imported, PACKAGE) and target_layer is not None and target_layer not in allowed:
            problems.append(str(found))
        if layer == "core" and any(_within(found.imported, banned) for banned in IMPURE_FOR_THE_CORE):
            problems.append(str(found))
    return problems


def sandbox_imports(root: Path) -> list[str]:
    return [str(found) for found in imports(root) if any(_within(found.imported, p) for p in SANDBOX_PACKAGES)]


def adapter_of(module: str) -> str | None:
    """The adapter a module belongs to: the module or package directly under agent/adapters."""
    parts = module.split(".")
    if parts[:2] != [PACKAGE, "adapters"] or len(parts) < 3:
        return None
    return parts[2]


def adapter_dependencies(root: Path) -> list[str]:
    """Imports from one adapter into another (the shared base modules excepted)."""
    problems = []
    for found in imports(root):
        own, other = adapter_of(found.importer), adapter_of(found.imported)
        if own is not None and other is not None and other != own and other not in SHARED_ADAPTER_MODULES:
            problems.append(f"{found} (adapter {own} -> adapter {other})")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Each set of our modules that import each other in a loop (Tarjan's strongly connected components)."""
    known = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for found in imports(root):
        if found.imported in known:
            graph[found.importer].add(found.imported)
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(cycles)


# --- the checkout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", sorted(ALLOWED_LAYERS))
def test_imports_follow_the_layers(layer: str) -> None:
    assert (ROOT / PACKAGE / layer).is_dir() or (ROOT / PACKAGE / f"{layer}.py").is_file()
    assert layer_violations(ROOT, layer) == []


def test_every_module_is_in_a_layer() -> None:
    strays = [name for name in modules(ROOT) if name != PACKAGE and layer_of(name) not in ALLOWED_LAYERS]
    assert strays == [], "add a row to ALLOWED_LAYERS for the new layer"


def test_nothing_in_agent_imports_the_sandbox() -> None:
    assert sandbox_imports(ROOT) == []


def test_adapters_do_not_import_each_other() -> None:
    assert adapter_dependencies(ROOT) == []


def test_no_import_cycles() -> None:
    assert import_cycles(ROOT) == []


def test_the_core_reads_no_clock() -> None:
    calls = []
    for path in sorted((ROOT / PACKAGE / "core").rglob("*.py")):
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


# --- each checker catches what it is for, in a planted tree -------------------------------------------


def plant(root: Path, files: dict[str, str]) -> Path:
    """A scratch `agent/` tree: every layer present (empty), plus `files` (path -> source)."""
    for layer in ALLOWED_LAYERS:
        if layer == "cli":
            (root / PACKAGE / "cli.py").parent.mkdir(parents=True, exist_ok=True)
            (root / PACKAGE / "cli.py").touch()
        else:
            (root / PACKAGE / layer).mkdir(parents=True, exist_ok=True)
            (root / PACKAGE / layer / "__init__.py").touch()
    (root / PACKAGE / "__init__.py").touch()
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


def test_a_clean_planted_tree_passes(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            "agent/cli.py": "from agent import runtime\nfrom agent.runtime.loop import run\n",
            "agent/runtime/loop.py": "from agent.actions.resize import plan\nfrom agent.audit.trail import write\n",
            "agent/actions/resize.py": "from agent.adapters.kube import patch\nfrom agent.core.rules import Rule\n",
            "agent/adapters/kube/__init__.py": "from .client import Client\nfrom agent.adapters import clock\n",
            "agent/adapters/kube/client.py": "from . import errors\nfrom agent.adapters.errors import E\n",
            "agent/adapters/kube/errors.py": "",
            "agent/adapters/clock.py": "import time\n",
            "agent/adapters/errors.py": "",
            "agent/audit/trail.py": "from agent.core import rules\n",
            "agent/core/rules.py": "import dataclasses\n",
        },
    )
    assert [layer_violations(root, layer) for layer in sorted(ALLOWED_LAYERS)] == [[]] * len(ALLOWED_LAYERS)
    assert sandbox_imports(root) == []
    assert adapter_dependencies(root) == []
    assert import_cycles(root) == []


@pytest.mark.parametrize(
    ("layer", "source", "imported"),
    [
        ("core", "import asyncio\n", "asyncio"),
        ("core", "from ..adapters import kube\n", "agent.adapters.kube"),
        ("core", "def f():\n    from agent.runtime.loop import run\n", "agent.runtime.loop"),
        ("adapters", "from agent.actions.resize import plan\n", "agent.actions.resize"),
        ("adapters", "from agent.audit.trail import write\n", "agent.audit.trail"),
        ("actions", "from agent.runtime import loop\n", "agent.runtime.loop"),
        ("actions", "import agent.audit.trail\n", "agent.audit.trail"),
        ("audit", "from agent.adapters.kube import patch\n", "agent.adapters.kube"),
        ("runtime", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import agent.cli\n", "agent.cli"),
    ],
)
def test_a_layer_row_catches_an_import_against_the_flow(tmp_path: Path, layer: str, source: str, imported: str) -> None:
    root = plant(
        tmp_path,
        {
            f"agent/{layer}/bad.py": source,
            "agent/runtime/loop.py": "",
            "agent/actions/resize.py": "",
            "agent/adapters/kube.py": "",
            "agent/audit/trail.py": "",
        },
    )
    line = source.count("\n")  # each planted import is on the source's last line
    assert layer_violations(root, layer) == [f"agent/{layer}/bad.py:{line}: agent.{layer}.bad imports {imported}"]


def test_the_command_line_may_not_be_imported_by_the_runtime_but_may_import_it(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {"agent/cli.py": "from agent.runtime import loop\n", "agent/runtime/loop.py": "from agent import cli\n"},
    )
    assert layer_violations(root, "cli") == []
    assert layer_violations(root, "runtime") == ["agent/runtime/loop.py:1: agent.runtime.loop imports agent.cli"]


def test_the_sandbox_ban_catches_every_spelling(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            "agent/cli.py": "def commands():\n    import sandbox.cli\n",
            "agent/runtime/demo.py": "from sandbox import environment\n",
            "agent/core/old.py": "from ..sandbox import kube\n",
            "agent/sandbox/kube.py": "",
            "agent/adapters/fine.py": "import importlib\nNAME = 'sandbox.cli'\n",
        },
    )
    assert sandbox_imports(root) == [
        "agent/cli.py:2: agent.cli imports sandbox.cli",
        "agent/core/old.py:1: agent.core.old imports agent.sandbox.kube",
        "agent/runtime/demo.py:1: agent.runtime.demo imports sandbox",
    ]


def test_adapter_independence_catches_one_adapter_importing_another(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            "agent/adapters/approvals.py": "from agent.adapters.kubernetes import KubeClient\n",
            "agent/adapters/kubernetes/__init__.py": "",
            "agent/adapters/kubernetes/watch.py": "from . import client\nfrom agent.adapters.retry import retry\n",
            "agent/adapters/kubernetes/client.py": "",
            "agent/adapters/kafka/__init__.py": "def f():\n    from ..kubernetes import watch\n",
            "agent/adapters/retry.py": "from agent.adapters import clock\n",
            "agent/adapters/clock.py": "",
        },
    )
    assert adapter_dependencies(root) == [
        "agent/adapters/approvals.py:1: agent.adapters.approvals imports agent.adapters.kubernetes "
        "(adapter approvals -> adapter kubernetes)",
        "agent/adapters/kafka/__init__.py:2: agent.adapters.kafka imports agent.adapters.kubernetes.watch "
        "(adapter kafka -> adapter kubernetes)",
    ]


def test_the_cycle_finder_catches_loops_of_any_length(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            "agent/runtime/agent.py": "from agent.runtime.approvals import Approvals\n",
            "agent/runtime/approvals.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .agent import Agent\n"
            ),
            "agent/core/a.py": "from agent.core import b\n",
            "agent/core/b.py": "import agent.core.c\n",
            "agent/core/c.py": "def late():\n    from . import a\n",
            "agent/core/d.py": "from agent.core import a\n",
            "agent/core/selfish.py": "from agent.core import selfish\n",
        },
    )
    assert import_cycles(root) == [
        ["agent.core.a", "agent.core.b", "agent.core.c"],
        ["agent.core.selfish"],
        ["agent.runtime.agent", "agent.runtime.approvals"],
    ]
