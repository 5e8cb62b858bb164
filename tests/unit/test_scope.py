"""Sidecar mode's narrowing (`--scope-pod`): which rules run, which claims a pod mounts, the flag's
parsing; and rule folders mounted from a ConfigMap load each rule once.

The scoped inventory itself is exercised against the real apiserver in
tests/integration/test_helm_chart.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.actions.registry import CATALOG
from agent.adapters.files import expand_paths, load_rule_paths
from agent.adapters.kubernetes import PodInfo, PvcInfo
from agent.core.loader import merge_results
from agent.core.rules import TargetKind
from agent.runtime.scope import PodScope, ScopeError, mounted_claims, split_rules

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
RUN = [sys.executable, "-m", "agent.cli", "run"]


def broker_pod(*, namespace: str = "kafka", name: str = "kafka-0", claims: tuple[str, ...] = ()) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": "kafka-config"}}]
    volumes += [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": claim}} for i, claim in enumerate(claims)]
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": "u-1", "labels": {"app": "kafka"}},
        "spec": {"nodeName": "node-1", "volumes": volumes},
        "status": {"phase": "Running"},
    }


def claim(name: str, *, namespace: str = "kafka") -> PvcInfo:
    return PvcInfo.from_raw(
        {
            "metadata": {"namespace": namespace, "name": name, "labels": {"app": "kafka"}},
            "spec": {"resources": {"requests": {"storage": "400Gi"}}, "storageClassName": "standard"},
            "status": {"capacity": {"storage": "400Gi"}},
        }
    )


def test_a_pod_lists_the_claims_its_volumes_mount() -> None:
    pod = PodInfo.from_raw(broker_pod(claims=("data-kafka-0", "logs-kafka-0")))
    assert pod.claims == ("data-kafka-0", "logs-kafka-0")
    assert PodInfo.from_raw(broker_pod()).claims == ()


def test_only_the_pods_own_claims_in_its_own_namespace_are_in_scope() -> None:
    pod = PodInfo.from_raw(broker_pod(claims=("data-kafka-0",)))
    everything = [claim("data-kafka-0"), claim("data-kafka-1"), claim("data-kafka-0", namespace="other")]
    selected = mounted_claims(pod, everything)
    assert [(c.namespace, c.name) for c in selected] == [("kafka", "data-kafka-0")]


def test_node_and_pool_rules_do_not_run_in_sidecar_mode_and_say_why() -> None:
    loaded = merge_results(load_rule_paths([RULES], catalog=CATALOG))
    assert not loaded.errors
    by_kind = {rule.name: rule.target for rule in loaded.rules}
    running, not_run = split_rules(loaded.rules, PodScope.parse("kafka/kafka-0"))
    assert {rule.name for rule in running} == {
        name for name, kind in by_kind.items() if kind in (TargetKind.PVC, TargetKind.BROKER)
    }
    assert set(not_run) == {
        name for name, kind in by_kind.items() if kind in (TargetKind.NODE, TargetKind.STORAGE_POOL)
    }
    assert "kafka-node-failure" in not_run and "kafka-resize" not in not_run
    assert all(reason.startswith("not run in sidecar mode (--scope-pod kafka/kafka-0)") for reason in not_run.values())


@pytest.mark.parametrize("text", ["kafka-0", "/kafka-0", "kafka/", "a/b/c", ""])
def test_a_scope_that_is_not_namespace_slash_name_is_refused(text: str) -> None:
    with pytest.raises(ScopeError, match="NAMESPACE/NAME"):
        PodScope.parse(text)


def test_run_refuses_a_malformed_scope_with_exit_2() -> None:
    done = subprocess.run(
        [*RUN, "--rules", str(RULES), "--prometheus", "http://127.0.0.1:1", "--scope-pod", "kafka-0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "--scope-pod must be NAMESPACE/NAME" in done.stderr


def test_a_configmap_mounted_folder_loads_each_rule_once(tmp_path: Path) -> None:
    """The layout the kubelet writes: files in a timestamped folder, `..data` linking to it, and
    one link per key at the top."""
    hidden = tmp_path / "..2026_11_23_19_00_00.000000001"
    hidden.mkdir()
    (hidden / "kafka-resize.yaml").write_text((RULES / "kafka-resize.yaml").read_text())
    (tmp_path / "..data").symlink_to(hidden.name)
    (tmp_path / "kafka-resize.yaml").symlink_to("..data/kafka-resize.yaml")
    assert list(expand_paths([tmp_path])) == [tmp_path / "kafka-resize.yaml"]
    loaded = merge_results(load_rule_paths([tmp_path], catalog=CATALOG))
    assert [rule.name for rule in loaded.rules] == ["kafka-resize"] and not loaded.problems
