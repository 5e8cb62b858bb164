"""Check PromQL syntax with the real Prometheus parser, through `promtool check rules`.

Rule conditions are PromQL; a typo there should fail `kafka-autopilot lint` with file:line, not wait
for the first query in production. We have no PromQL parser of our own and want none: each
expression becomes a recording rule in a scratch file, promtool parses them all at once, and its
errors are mapped back to the expressions.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

_ERROR_LINE = re.compile(r'"e(\d+)": (?:could not parse expression: )?(.*)$')


class PromtoolError(RuntimeError):
    """promtool could not be run, or answered in a way we do not understand."""


def check_promql(queries: Sequence[str], *, promtool: Path) -> dict[int, str]:
    """Index of each query promtool rejects -> promtool's parse error for it."""
    if not queries:
        return {}
    group = {"name": "kafka-autopilot-lint", "rules": [{"record": f"e{i}", "expr": q} for i, q in enumerate(queries)]}
    with tempfile.TemporaryDirectory(prefix="kafka-autopilot-promql-") as scratch:
        rules_file = Path(scratch) / "conditions.yaml"
        rules_file.write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
        try:
            done = subprocess.run(
                [str(promtool), "check", "rules", str(rules_file)],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PromtoolError(f"could not run {promtool}: {error}") from error
    if done.returncode == 0:
        return {}
    errors: dict[int, str] = {}
    for line in (done.stdout + done.stderr).splitlines():
        match = _ERROR_LINE.search(line)
        if match:
            errors[int(match.group(1))] = match.group(2).strip()
    if not errors:
        raise PromtoolError(f"promtool failed without naming an expression: {(done.stderr or done.stdout).strip()}")
    return errors
