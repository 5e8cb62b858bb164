"""Where `lint` and `test` find promtool and prometheus: the flag, else the variable, else PATH; else exit 2.

Fake executables stand in for the binaries (nothing is run); the command line is checked up to the point
where it would start them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import cli
from agent.adapters.local_prometheus import (
    PROMETHEUS_ENV,
    PROMTOOL_ENV,
    BinaryNotFoundError,
    find_binaries,
    find_promtool,
)


def executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Neither variable set, and a PATH of one empty folder (returned, to put binaries in)."""
    monkeypatch.delenv(PROMTOOL_ENV, raising=False)
    monkeypatch.delenv(PROMETHEUS_ENV, raising=False)
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    monkeypatch.setenv("PATH", str(path_dir))
    return path_dir


def test_the_flag_wins_over_the_variable_and_path(
    nowhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executable(nowhere, "promtool")
    monkeypatch.setenv(PROMTOOL_ENV, str(executable(tmp_path / "env", "promtool")))
    flag = executable(tmp_path / "flag", "promtool")
    assert find_promtool(given=flag) == flag


def test_the_variable_wins_over_path(nowhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    executable(nowhere, "promtool")
    from_env = executable(tmp_path / "env", "promtool")
    monkeypatch.setenv(PROMTOOL_ENV, str(from_env))
    assert find_promtool() == from_env


def test_path_is_searched_when_nothing_names_them(nowhere: Path) -> None:
    prometheus, promtool = executable(nowhere, "prometheus"), executable(nowhere, "promtool")
    found = find_binaries()
    assert (found.prometheus, found.promtool) == (prometheus, promtool)


@pytest.mark.parametrize(
    ("name", "flag", "variable"),
    [("prometheus", "--prometheus-bin", PROMETHEUS_ENV), ("promtool", "--promtool", PROMTOOL_ENV)],
)
def test_a_missing_binary_names_its_flag_and_variable(nowhere: Path, name: str, flag: str, variable: str) -> None:
    other = "promtool" if name == "prometheus" else "prometheus"
    executable(nowhere, other)
    with pytest.raises(BinaryNotFoundError) as caught:
        find_binaries()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{name} not found") and flag in message and variable in message


def test_a_named_file_that_is_not_executable_is_refused(nowhere: Path, tmp_path: Path) -> None:
    plain = tmp_path / "promtool"
    plain.write_text("")
    with pytest.raises(BinaryNotFoundError, match=r"--promtool names .*promtool, which is not an executable file"):
        find_promtool(given=plain)


@pytest.mark.parametrize(
    ("argv", "flag", "variable"),
    [
        (["test", "tests/rules/kafka-resize.test.yaml"], "--prometheus-bin", PROMETHEUS_ENV),
        (["lint", "rules/"], "--promtool", PROMTOOL_ENV),
    ],
)
def test_the_command_exits_2_with_one_line(
    nowhere: Path, argv: list[str], flag: str, variable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert cli.main([argv[0], str(repo / argv[1])]) == cli.EXIT_CANNOT_RUN
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert flag in line and variable in line


def test_lint_without_promql_needs_no_promtool(nowhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert cli.main(["lint", "--no-promql", str(repo / "rules")]) == cli.EXIT_OK
    assert "0 errors" in capsys.readouterr().err
