"""The command line as users run it: exit codes, file:line:col messages, never a traceback.

Runs `python -m agent.cli` in a subprocess, against the real Prometheus and promtool from the cache
(given through KAFKA_AUTOPILOT_PROMTOOL and KAFKA_AUTOPILOT_PROMETHEUS, as a user would).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.adapters.local_prometheus import PROMETHEUS_ENV, PROMTOOL_ENV
from agent.audit.trail import AUDIT_KEYS
from sandbox.prometheus import binaries

REPO = Path(__file__).resolve().parents[2]
BROKEN = REPO / "tests" / "fixtures" / "broken-rules"

pytestmark = pytest.mark.prometheus


def binaries_env() -> dict[str, str]:
    """The environment with the cached binaries named the way a user names theirs."""
    cached = binaries()
    return {**os.environ, PROMTOOL_ENV: str(cached.promtool), PROMETHEUS_ENV: str(cached.prometheus)}


def without_binaries_env() -> dict[str, str]:
    """The environment with neither variable, and a PATH (without the cache) where neither binary is."""
    env = {key: value for key, value in os.environ.items() if key not in (PROMTOOL_ENV, PROMETHEUS_ENV)}
    env["PATH"] = "/usr/bin:/bin"
    return env


def run_cli(*args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *map(str, args)],
        cwd=cwd,
        env=binaries_env() if env is None else env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )


def test_lint_of_the_shipped_rules_is_clean() -> None:
    done = run_cli("lint", "rules/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""
    assert "6 rules valid, 0 errors" in done.stderr


def test_lint_lists_every_error_with_its_position_and_keeps_the_good_rule() -> None:
    done = run_cli("lint", BROKEN.relative_to(REPO))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stdout.splitlines()
    expected = [
        'mixed.yaml:10:3: typo-in-fields: spec.pollIntreval: unknown field "pollIntreval" '
        '(did you mean "pollInterval"?)',
        "mixed.yaml:14:19: typo-in-fields: spec.conditions.expressions[0].operator: unknown operator 'Gtt'",
        'mixed.yaml:19:9: typo-in-fields: spec.actions[0].params.scalepercentag: unknown field "scalepercentag"',
        "mixed.yaml:20:18: typo-in-fields: spec.actions[0].params.maxsize: '1Tb' is not a valid quantity",
        "mixed.yaml:47:17: bad-promql-and-mixed-kinds: spec.conditions.expressions[0].values: InRange takes exactly 2",
        "mixed.yaml:49:5: bad-promql-and-mixed-kinds: spec.actions: actions of one rule must act on one kind",
        "not-yaml.yaml:5:1: -: -: invalid YAML",
        "bad-promql.yaml:8:14: bad-promql: spec.conditions.expressions[0].key: bad PromQL in `sum by (pvc namespace)",
    ]
    for fragment in expected:
        assert any(fragment in line for line in lines), f"missing {fragment!r} in:\n{done.stdout}"
    assert len(lines) == len(expected)
    assert "1 rules valid, 8 errors" in done.stderr


def test_lint_json_output_has_one_object_per_problem() -> None:
    done = run_cli("lint", "--format", "json", BROKEN / "bad-promql.yaml")
    assert done.returncode == 1
    (problem,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (problem["line"], problem["column"], problem["rule"]) == (8, 14, "bad-promql")
    assert "parse error" in problem["message"]


def test_lint_of_a_missing_path_cannot_run() -> None:
    done = run_cli("lint", "no/such/rules")
    assert done.returncode == 2
    assert "no/such/rules: no such file or folder" in done.stderr


def test_rule_tests_pass_and_print_a_closing_count() -> None:
    done = run_cli("test", "tests/rules/")
    assert done.returncode == 0, done.stdout + done.stderr
    passed = len([line for line in done.stdout.splitlines() if line.startswith("PASS ")])
    assert passed >= 7
    assert f"rules: {passed} passed, 0 failed" in done.stdout


def test_flags_name_the_binaries_before_the_environment() -> None:
    cached = binaries()
    env = without_binaries_env() | {PROMTOOL_ENV: "/no/such/promtool", PROMETHEUS_ENV: "/no/such/prometheus"}
    flags = ("--promtool", cached.promtool, "--prometheus-bin", cached.prometheus)
    done = run_cli("test", *flags, "tests/rules/kafka-resize.test.yaml", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    linted = run_cli("lint", "--promtool", cached.promtool, "rules/", env=env)
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize(
    ("command", "flag", "variable"),
    [("test", "--prometheus-bin", PROMETHEUS_ENV), ("lint", "--promtool", PROMTOOL_ENV)],
)
def test_missing_binaries_cannot_run_and_say_how_to_name_them(command: str, flag: str, variable: str) -> None:
    path = "tests/rules/kafka-resize.test.yaml" if command == "test" else "rules/"
    done = run_cli(command, path, env=without_binaries_env())
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert flag in line and variable in line, line


def test_a_flag_naming_no_file_cannot_run() -> None:
    done = run_cli("lint", "--promtool", "/no/such/promtool", "rules/", env=without_binaries_env())
    assert done.returncode == 2
    assert "--promtool names /no/such/promtool, which is not an executable file" in done.stderr


def write_test_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "case.test.yaml"
    path.write_text(body.replace("RULES", str(REPO / "rules" / "kafka-resize.yaml")))
    return path


REFERENCE_TEST = """
rule_files: [RULES]
tests:
  - name: one volume
    objects:
      - {kind: PersistentVolumeClaim, namespace: kafka, name: data-kafka-0, labels: {app: kafka}, capacity: 400Gi}
    input_series:
      - {series: 'px_volume_usage_bytes{namespace="kafka", pvc="data-kafka-0"}', values: '330x5'}
      - {series: 'px_volume_capacity_bytes{namespace="kafka", pvc="data-kafka-0"}', values: '400x5'}
    expected:
      - {eval_time: 1m, object: kafka/data-kafka-0, state: STATE, actions: ACTIONS}
"""


def test_a_failing_expectation_fails_with_its_position(tmp_path: Path) -> None:
    path = write_test_file(tmp_path, REFERENCE_TEST.replace("STATE", "Normal").replace("ACTIONS", "[]"))
    done = run_cli("test", path)
    assert done.returncode == 1
    assert f"{path}:11:9: at 60s, kafka-resize kafka/data-kafka-0: state ActiveActionsTaken" in done.stdout
    assert "rules: 0 passed, 1 failed" in done.stdout


def test_the_same_file_passes_with_the_right_expectation(tmp_path: Path) -> None:
    body = REFERENCE_TEST.replace("STATE", "ActiveActionsTaken").replace("ACTIONS", '["400Gi -> 800Gi"]')
    done = run_cli("test", write_test_file(tmp_path, body), "--audit", tmp_path / "trail.jsonl")
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (tmp_path / "trail.jsonl").read_text().splitlines()]
    assert records, "the audit trail is empty"
    for record in records:
        assert list(record)[: len(AUDIT_KEYS)] == list(AUDIT_KEYS)
        assert record["dry_run"] is True
    applied = [record for record in records if record["event"] == "action-applied"]
    assert [(r["before"], r["after"]) for r in applied] == [("400Gi", "800Gi")]


def test_a_malformed_test_file_cannot_run_and_names_each_problem(tmp_path: Path) -> None:
    body = REFERENCE_TEST.replace("STATE", "Normal").replace("ACTIONS", "[]")
    body = body.replace("values: '330x5'", "values: '330xx5'").replace("objects:", "objectz:")
    done = run_cli("test", write_test_file(tmp_path, body))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert 'unknown field "objectz" (did you mean "objects"?)' in done.stderr
    assert ":8:90: tests[0].input_series[0].values: bad value `330xx5`" in done.stderr.replace(" -: ", " ")


BAD_PROMQL_RULE = """
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata: {name: kafka-resize}
spec:
  selector: {matchLabels: {app: kafka}}
  conditions:
    expressions:
      - key: "100 * (px_volume_usage_bytes / on(pvc namespace) px_volume_capacity_bytes)"
        operator: Gt
        values: ["80"]
  actions:
    - name: openstorage.io.action.volume/resize
"""


def test_bad_promql_in_a_rule_makes_the_test_unable_to_run(tmp_path: Path) -> None:
    (tmp_path / "rule.yaml").write_text(BAD_PROMQL_RULE)
    body = REFERENCE_TEST.replace("RULES", str(tmp_path / "rule.yaml"))
    done = run_cli("test", write_test_file(tmp_path, body.replace("STATE", "Normal").replace("ACTIONS", "[]")))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "bad PromQL in `100 * (px_volume_usage_bytes / on(pvc namespace)" in done.stderr
    assert "parse error" in done.stderr


def test_demo_plays_the_reference_table() -> None:
    done = run_cli("demo", "--simulated")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "action-applied: 400Gi -> 800Gi" in done.stdout
    assert "action-applied: 800Gi -> 1Ti (capped at maxsize)" in done.stdout
    assert "action-declined: AtMaxSize" in done.stdout
    assert "matches the reference table" in done.stderr


def test_demo_json_prints_audit_records_with_the_stable_keys() -> None:
    done = run_cli("demo", "--simulated", "--json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert {record["event"] for record in records} >= {"evaluation", "transition", "action-applied", "action-declined"}
    assert all(set(AUDIT_KEYS) <= set(record) for record in records)
