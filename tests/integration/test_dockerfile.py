"""The Dockerfile, without a container engine (none runs on this machine):

- its build stage's steps are read from the Dockerfile and run here, in order, with the image's
  paths moved under a scratch folder (WORKDIR, COPY, RUN with the same pip commands and the same
  lock files, PyPI as the only source); then the final stage's entrypoint runs as the image's
  non-root user: `kafka-autopilot --help` (the default CMD) and `kafka-autopilot lint rules/`;
- its shape: multi-stage on python:3.11-slim, pinned and hashed dependencies that cover
  pyproject.toml, a numeric non-root USER, `kafka-autopilot` as ENTRYPOINT;
- hadolint (installed by scripts/install-hadolint.sh) finds nothing.

The one liberty taken: pip may use the pip cache here (the image build sets PIP_NO_CACHE_DIR); with
--require-hashes that changes where the same files come from, not what is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chart_support import cache_dir

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT_VERSION = "2.15.1"  # scripts/install-hadolint.sh pins the same


@dataclass(frozen=True, kw_only=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass(kw_only=True)
class Stage:
    base: str
    name: str | None
    steps: list[Instruction] = field(default_factory=list)


def instructions(text: str) -> Iterator[Instruction]:
    """Dockerfile instructions with their line continuations joined; comments and blanks dropped."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(part for part in pending if part and not part.startswith("#"))
        pending = []
        keyword, _, arguments = joined.partition(" ")
        yield Instruction(keyword=keyword.upper(), arguments=arguments.strip(), line=start)


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    found: list[Stage] = []
    for step in instructions(text):
        if step.keyword == "ARG" and not found:
            name, _, default = step.arguments.partition("=")
            args[name] = default
        elif step.keyword == "FROM":
            words = step.arguments.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            found.append(Stage(base=base, name=words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        else:
            found[-1].steps.append(step)
    return args, found


ARGS, STAGES = stages(DOCKERFILE.read_text())


# --- shape -------------------------------------------------------------------------------------------


def test_multi_stage_on_a_slim_python_311() -> None:
    assert len(STAGES) == 2 and STAGES[0].name == "build"
    assert all(re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base) for stage in STAGES)
    copies = [step.arguments for step in STAGES[1].steps if step.keyword == "COPY"]
    assert copies == ["--from=build /opt/kafka-autopilot /opt/kafka-autopilot"], "the final stage takes the venv only"


def test_runs_as_a_numeric_non_root_user_with_the_agent_as_entrypoint() -> None:
    final = {step.keyword: step.arguments for step in STAGES[1].steps}
    user = final["USER"].split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user)
    assert json.loads(final["ENTRYPOINT"]) == ["kafka-autopilot"]
    assert "useradd --uid 10001" in final["RUN"]


def test_the_image_caps_glibcs_malloc_arenas() -> None:
    """What bench/bench_cluster.py measures the agent with: the image's environment, MALLOC_ARENA_MAX=2."""
    final = {step.keyword: step.arguments for step in STAGES[1].steps}
    assert "MALLOC_ARENA_MAX=2" in final["ENV"].split()


def test_every_pip_install_is_pinned_and_hashed() -> None:
    runs = [step.arguments for stage in STAGES for step in stage.steps if step.keyword == "RUN"]
    installs = [part for run in runs for part in run.split("&&") if "pip install" in part]
    assert installs
    for install in installs:
        assert "--require-hashes" in install or "--no-index" in install, install


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def test_the_lock_pins_every_dependency_of_pyproject_with_hashes() -> None:
    pins = lock_pins(REPO / "requirements.lock")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ \[]", dep)[0]).lower() for dep in declared}
    assert names <= set(pins), f"requirements.lock lacks {sorted(names - set(pins))}: run scripts/lock-requirements.sh"
    text = (REPO / "requirements.lock").read_text()
    assert text.count("==") == len(pins) and text.count("--hash=sha256:") >= len(pins)


# --- the build, without an engine ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    """A scratch folder standing for the image's /; readable by the image's user (uid 10001)."""
    root = Path(tempfile.mkdtemp(prefix="kafka-autopilot-image-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def in_image(root: Path, text: str) -> str:
    """A path or command of the Dockerfile, with the image's folders moved under `root`."""
    return re.sub(r"(?<![\w/.-])/(opt|src)(?=/|\b)", lambda m: f"{root}/{m.group(1)}", text)


@pytest.fixture(scope="module")
def built(image_root: Path) -> Path:
    """Run the build stage's steps; returns the folder standing for /opt/kafka-autopilot."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PIP_CACHE_DIR"] = str(cache_dir() / "pip")
    python = shutil.which("python3.11")
    assert python, "python3.11 (the image's Python) is needed to rebuild the image's environment"
    shim = image_root / "bin"
    shim.mkdir()
    (shim / "python").symlink_to(python)  # the image's `python` is 3.11
    env["PATH"] = f"{shim}:{env['PATH']}"
    workdir = image_root
    for step in STAGES[0].steps:
        if step.keyword == "ENV":
            for assignment in shlex.split(step.arguments):
                key, _, value = assignment.partition("=")
                if key != "PIP_NO_CACHE_DIR":
                    env[key] = value
        elif step.keyword == "WORKDIR":
            workdir = Path(in_image(image_root, step.arguments))
            workdir.mkdir(parents=True, exist_ok=True)
        elif step.keyword == "COPY":
            *sources, destination = step.arguments.split()
            target = workdir / destination
            for source in sources:
                origin = REPO / source
                if origin.is_dir():
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
                else:
                    shutil.copy(origin, target / origin.name if destination.endswith("/") else target)
        elif step.keyword == "RUN":
            command = in_image(image_root, step.arguments)
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert done.returncode == 0, f"Dockerfile:{step.line}: RUN {command}\n{done.stdout}{done.stderr}"
        else:
            raise AssertionError(f"Dockerfile:{step.line}: {step.keyword} is not handled by this test")
    venv = image_root / "opt" / "kafka-autopilot"
    for path in [image_root, *image_root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o055)
    return venv


def as_image_user(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The final stage's ENTRYPOINT with its ENV, as its USER (uid:gid 10001), from a neutral folder."""
    final = {step.keyword: step.arguments for step in STAGES[1].steps}
    uid, gid = final["USER"].split(":")
    entrypoint = json.loads(final["ENTRYPOINT"])
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOME": "/tmp"}
    env["KAFKA_AUTOPILOT_PROMTOOL"] = str(cache_dir() / "prometheus" / "bin" / "promtool")
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *entrypoint, *args],
        cwd="/tmp",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_built_environment_holds_exactly_the_lock(built: Path) -> None:
    frozen = subprocess.run(
        [str(built / "bin" / "pip"), "freeze", "--exclude", "kafka-autopilot"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    installed = {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, _, version in (line.partition("==") for line in frozen.splitlines() if "==" in line)
    }
    assert installed == lock_pins(REPO / "requirements.lock")
    assert not (built / "bin" / "wheel").exists(), "build tools stay in the build stage"


def test_the_entrypoint_runs_as_the_non_root_user(built: Path) -> None:
    shown = as_image_user(built, *json.loads(next(s.arguments for s in STAGES[1].steps if s.keyword == "CMD")))
    assert shown.returncode == 0, shown.stderr
    assert "run" in shown.stdout and "lint" in shown.stdout


def test_the_image_lints_the_shipped_rules(built: Path, image_root: Path) -> None:
    rules = image_root / "rules"
    shutil.copytree(REPO / "rules", rules)
    rules.chmod(0o755)
    linted = as_image_user(built, "lint", str(rules))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    shipped = len(list((REPO / "rules").glob("*.yaml")))
    assert f"{shipped} rules valid, 0 errors" in linted.stderr


# --- the linter ---------------------------------------------------------------------------------------


@pytest.mark.sandbox
def test_hadolint_finds_nothing() -> None:
    hadolint = cache_dir() / "hadolint" / HADOLINT_VERSION / "venv" / "bin" / "hadolint"
    if not hadolint.is_file():
        pytest.fail(f"hadolint {HADOLINT_VERSION} is not installed at {hadolint}: run scripts/install-hadolint.sh")
    done = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = DOCKERFILE.read_text().replace("USER 10001:10001", "USER root")
    caught = subprocess.run([str(hadolint), "-"], input=bad, capture_output=True, text=True, timeout=60, check=False)
    assert caught.returncode != 0 and "DL3002" in caught.stdout, "hadolint must flag a root USER (the check can fail)"


def test_the_build_context_is_only_what_the_dockerfile_copies() -> None:
    """A legacy `docker build .` sends the whole context: .dockerignore keeps .cache/ (sandbox keys) out."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for stage in STAGES
        for step in stage.steps
        if step.keyword == "COPY" and "--from" not in step.arguments
        for source in shlex.split(step.arguments)[:-1]
    }
    assert copied == allowed
