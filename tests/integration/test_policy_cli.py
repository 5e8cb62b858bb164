"""Policies on the command line: `lint` takes them by kind next to rules, `run --policy` refuses a bad one.

Runs `python -m agent.cli` in a subprocess, as users do.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BAD_POLICY = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotPolicy
metadata:
  name: typos
spec:
  maxConcurrentActions: none
  rateLimits:
    perRule: {count: 1, period: 1 hour}
"""


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def test_lint_of_the_shipped_policies_is_clean() -> None:
    done = run_cli("lint", "--no-promql", "policies/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""
    assert "0 rules valid, 0 errors; 3 policies valid" in done.stderr


def test_lint_takes_rules_and_policies_by_kind_and_reports_policy_errors_at_their_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_POLICY)
    done = run_cli("lint", "--no-promql", "rules/kafka-resize.yaml", "policies/", bad)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{bad}:6:25: typos: spec.maxConcurrentActions: must be a whole number of at least 1, got the string 'none'",
        f"{bad}:8:33: typos: spec.rateLimits.perRule.period: must be whole seconds or a duration like 5m, got '1 hour'",
    ]
    assert "1 rules valid, 2 errors; 3 policies valid" in done.stderr


def test_run_refuses_a_bad_policy_before_touching_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_POLICY)
    done = run_cli("run", "--rules", "rules/kafka-resize.yaml", "--prometheus", "http://127.0.0.1:1", "--policy", bad)
    assert done.returncode == 1, done.stderr
    assert f"policy problem: {bad}:6:25: typos: spec.maxConcurrentActions" in done.stderr
    assert "not running without the guardrails asked for" in done.stderr
    missing = run_cli("run", "--rules", "rules/", "--prometheus", "http://127.0.0.1:1", "--policy", tmp_path / "no")
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    rules_as_policy = run_cli(
        "run", "--rules", "rules/", "--prometheus", "http://x:1", "--policy", "rules/kafka-resize.yaml"
    )
    assert rules_as_policy.returncode == 1
    assert "a policy file holds AutopilotPolicy documents only, got 'AutopilotRule'" in rules_as_policy.stderr
