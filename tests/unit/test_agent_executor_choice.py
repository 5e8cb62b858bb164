"""A rule with `enforcement: dryRun` must never reach an executor built on the live applier."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from agent.actions.broker_restart.spec import BROKER_RESTART
from agent.actions.registry import CATALOG
from agent.actions.volume_resize.spec import VOLUME_RESIZE
from agent.adapters.files import load_rule_paths
from agent.core.loader import merge_results
from agent.runtime.runner import ActionRunner

RULES = Path(__file__).resolve().parents[2] / "rules"


def _runner(*, live: dict[str, Any], dry: dict[str, Any]) -> ActionRunner:
    unused = cast(Any, None)
    return ActionRunner(
        store=unused, recorder=unused, clock=unused, catalog=CATALOG, executors=live, dry_run_executors=dry
    )


def test_a_dry_run_rule_gets_the_dry_run_executor_and_a_live_rule_the_live_one() -> None:
    result = merge_results(
        load_rule_paths([RULES / "kafka-offline-partitions.yaml", RULES / "kafka-resize.yaml"], catalog=CATALOG)
    )
    rules = {rule.name: rule for rule in result.rules}
    dry_rule, live_rule = rules["kafka-offline-partitions"], rules["kafka-resize"]
    assert dry_rule.dry_run and not live_rule.dry_run
    live, dry = object(), object()
    runner = _runner(
        live={BROKER_RESTART: live, VOLUME_RESIZE: live},
        dry={BROKER_RESTART: dry, VOLUME_RESIZE: dry},
    )
    assert runner.executor_for(dry_rule, BROKER_RESTART) is dry
    assert runner.executor_for(live_rule, VOLUME_RESIZE) is live


def test_a_dry_run_rule_without_dry_run_executors_has_none_rather_than_a_live_one() -> None:
    result = merge_results(load_rule_paths([RULES / "kafka-offline-partitions.yaml"], catalog=CATALOG))
    runner = _runner(live={BROKER_RESTART: object()}, dry={})
    assert runner.executor_for(result.rules[0], BROKER_RESTART) is None
