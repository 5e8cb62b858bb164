"""The wheel as a user installs it: the agent without the checkout's sandbox, and `test`/`lint` still work.

The wheel is built from this checkout (`pip wheel . --no-deps`) and installed with `--no-deps` into a
fresh virtualenv. Its dependencies come from the environment running this test: a `.pth` file puts that
environment's site-packages on the new one's path, after its own (that directory's `.pth` files, which
point into the checkout, are not read). Every command runs from a scratch folder outside the checkout,
with promtool and prometheus named by flags, as a user of the wheel names theirs.

tests/integration/test_dockerfile.py installs the same wheel with the locked dependencies instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from chart_support import cache_dir

from sandbox.prometheus import binaries

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.prometheus


def run(argv: list[str | Path], *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PIP_CACHE_DIR"] = str(cache_dir() / "pip")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    for variable in ("KAFKA_AUTOPILOT_PROMTOOL", "KAFKA_AUTOPILOT_PROMETHEUS", "KAFKA_AUTOPILOT_CACHE"):
        env.pop(variable, None)
    return subprocess.run(
        [str(part) for part in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", dist, REPO], cwd=dist)
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = dist.glob("kafka_autopilot-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin` folder of a fresh virtualenv holding the wheel."""
    venv = tmp_path_factory.mktemp("wheel-venv")
    created = run([sys.executable, "-m", "venv", venv], cwd=venv)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=venv).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    done = run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel], cwd=venv)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def test_the_wheel_holds_the_agent_and_no_sandbox(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "agent/cli.py" in names and "agent/adapters/local_prometheus.py" in names
    assert [name for name in names if name.startswith("sandbox/") or "agent/sandbox" in name] == []
    assert [name for name in names if name.endswith("demo.py")] == []


def test_the_installed_agent_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    script = "import agent, importlib.util; print(agent.__file__); print(importlib.util.find_spec('sandbox'))"
    done = run([installed / "python", "-c", script], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    location, sandbox = done.stdout.splitlines()
    assert Path(location).is_relative_to(installed.parent), location
    assert sandbox == "None"


def test_sandbox_and_demo_are_not_offered(installed: Path, tmp_path: Path) -> None:
    shown = run([installed / "kafka-autopilot", "--help"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    commands = shown.stdout.split("commands:", 1)[1].split("Exit codes", 1)[0]
    assert "lint" in commands and "test" in commands and "run" in commands
    assert "sandbox" not in commands and "demo" not in commands
    for command in ("sandbox", "demo"):
        refused = run([installed / "kafka-autopilot", command], cwd=tmp_path)
        assert refused.returncode == 2
        assert f"invalid choice: '{command}'" in refused.stderr


def test_rule_tests_run_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    cached = binaries()
    test_file = REPO / "tests" / "rules" / "kafka-resize.test.yaml"
    flags = ["--promtool", cached.promtool, "--prometheus-bin", cached.prometheus]
    done = run([installed / "kafka-autopilot", "test", test_file, *flags], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rules: 1 passed, 0 failed" in done.stdout


def test_lint_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    done = run([installed / "kafka-autopilot", "lint", "--promtool", binaries().promtool, REPO / "rules"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = len(list((REPO / "rules").glob("*.yaml")))
    assert f"{shipped} rules valid, 0 errors" in done.stderr
