"""The agent's /metrics from the first scrape: every series an alert may need exists at 0 from load, the
`object` label appears only for target kinds with few objects, a rule that is not configured here is
neither healthy nor failing, and the text keeps its integral values (`... 1`, not `... 1.0`)."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from fakes import FakeClock, FakeEvents
from helpers import REFERENCE_RULE
from metrics_text import metric_total
from shell_support import load_rule

from agent.actions.registry import CATALOG
from agent.audit.trail import AuditTrail
from agent.core.loader import merge_results, parse_rules
from agent.core.matching import TargetObject, broker_object, pvc_object
from agent.core.rules import Rule, TargetKind
from agent.core.states import RuleState
from agent.runtime.inventory import split_storage_pool_rules
from agent.runtime.recorder import Recorder
from agent.runtime.scheduler import Scheduler, Triggers
from agent.runtime.telemetry import ACTION_OUTCOMES, Telemetry

RULES_DIR = Path(__file__).resolve().parents[3] / "rules"
BROKER_RULE = load_rule((RULES_DIR / "kafka-leader-rebalance.yaml").read_text(encoding="utf-8"))
PVC_RULE = load_rule(REFERENCE_RULE)


def shipped_rules() -> list[Rule]:
    merged = merge_results(
        [
            parse_rules(path.read_text(encoding="utf-8"), file=str(path), catalog=CATALOG)
            for path in RULES_DIR.glob("*.yaml")
        ]
    )
    assert merged.problems == ()
    return list(merged.rules)


def test_a_fresh_agent_shows_every_action_outcome_of_every_shipped_rule_at_zero() -> None:
    telemetry = Telemetry()
    rules = shipped_rules()
    telemetry.rules_loaded(rules)

    lines = telemetry.render().splitlines()
    for rule in rules:
        for action in rule.actions:
            failed = f'kafka_autopilot_actions_total{{action="{action.name}",outcome="failed",rule="{rule.name}"}} 0'
            assert failed in lines
            for outcome in ACTION_OUTCOMES:
                assert (
                    telemetry.registry.get_sample_value(
                        "kafka_autopilot_actions_total", {"rule": rule.name, "action": action.name, "outcome": outcome}
                    )
                    == 0
                )
        assert f'kafka_autopilot_query_errors_total{{rule="{rule.name}"}} 0' in lines
        assert f'kafka_autopilot_approvals_total{{outcome="used",rule="{rule.name}"}} 0' in lines
        assert f'kafka_autopilot_rule_not_configured{{rule="{rule.name}"}} 0' in lines
    assert f"kafka_autopilot_rules_loaded {len(rules)}" in lines


def test_the_text_has_integral_values_no_created_series_and_process_metrics() -> None:
    telemetry = Telemetry()
    telemetry.inc("kafka_autopilot_approvals_total", rule="kafka-resize", outcome="used")
    telemetry.set("kafka_autopilot_leader", 1)
    telemetry.observe("kafka_autopilot_loop_duration_seconds", 0.25, rule="kafka-resize")

    text = telemetry.render()
    assert 'kafka_autopilot_approvals_total{outcome="used",rule="kafka-resize"} 1' in text.splitlines()
    assert "kafka_autopilot_leader 1" in text.splitlines()
    assert 'kafka_autopilot_loop_duration_seconds_sum{rule="kafka-resize"} 0.25' in text.splitlines()
    assert "# TYPE kafka_autopilot_approvals_total counter" in text.splitlines()
    assert "_created" not in text
    assert "process_cpu_seconds_total" in text
    assert telemetry.value("kafka_autopilot_approvals_total", rule="kafka-resize", outcome="used") == 1


def broker(pod: str) -> TargetObject:
    return broker_object(namespace="kafka", pod=pod, broker_id=0, labels={"app": "kafka"})


def claim(name: str) -> TargetObject:
    return pvc_object(namespace="kafka", name=name, labels={}, capacity_bytes=1)


async def test_the_object_label_is_written_for_brokers_and_for_pvcs_only_when_asked() -> None:
    for kinds, pvc_labelled in ((None, False), ({TargetKind.PVC, TargetKind.BROKER}, True)):
        telemetry = Telemetry() if kinds is None else Telemetry(object_label_kinds=kinds)
        telemetry.action(BROKER_RULE, BROKER_RULE.actions[0].name, "failed", broker("kafka-0"))
        telemetry.action(PVC_RULE, PVC_RULE.actions[0].name, "failed", claim("data-kafka-0"))

        labelled = _object_labels(telemetry.render())
        assert f'object="{broker("kafka-0").key}"' in labelled
        assert (f'object="{claim("data-kafka-0").key}"' in labelled) is pvc_labelled
        assert (
            telemetry.value(
                "kafka_autopilot_actions_total", rule=PVC_RULE.name, action=PVC_RULE.actions[0].name, outcome="failed"
            )
            == 1
        )


def _object_labels(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("kafka_autopilot_object_actions_total{"))


def test_objects_per_state_count_pending_approvals() -> None:
    telemetry = Telemetry()
    states = [RuleState.ACTION_AWAITING_APPROVAL, RuleState.ACTION_AWAITING_APPROVAL, RuleState.NORMAL]
    telemetry.object_states(PVC_RULE, Counter(states))

    assert telemetry.value("kafka_autopilot_approvals_pending", rule=PVC_RULE.name) == 2
    assert telemetry.value("kafka_autopilot_objects", rule=PVC_RULE.name, state="Normal") == 1
    assert f'kafka_autopilot_objects{{rule="{PVC_RULE.name}",state="ActiveActionsTaken"}} 0' in telemetry.render()

    telemetry.object_states(PVC_RULE, {RuleState.NORMAL: 1})
    assert telemetry.value("kafka_autopilot_approvals_pending", rule=PVC_RULE.name) == 0


async def test_a_pool_rule_without_a_storage_api_is_not_configured_neither_healthy_nor_failing() -> None:
    rules = shipped_rules()
    running, not_run = split_storage_pool_rules(rules)
    (pool_rule,) = (rule for rule in rules if rule.target is TargetKind.STORAGE_POOL)
    assert pool_rule not in running
    assert set(not_run) == {pool_rule.name}
    assert "--storage-api" in not_run[pool_rule.name]

    async def cycle(_rule: Rule) -> str:
        return "ok"

    async def resume(_rule: Rule) -> None:
        return None

    telemetry = Telemetry()
    clock = FakeClock()
    recorder = Recorder(trail=AuditTrail(stream=io.StringIO()), telemetry=telemetry, clock=clock, events=FakeEvents())
    scheduler = Scheduler(
        rules=running,
        cycle=cycle,
        resume=resume,
        clock=clock,
        recorder=recorder,
        telemetry=telemetry,
        triggers=Triggers(running),
        not_configured=not_run,
    )
    telemetry.rules_loaded(scheduler.rules, not_configured=scheduler.not_configured)
    for rule in running:
        await scheduler.cycle_safely(rule)

    assert scheduler.health[pool_rule.name] == not_run[pool_rule.name]
    text = telemetry.render()
    assert f'kafka_autopilot_rule_not_configured{{rule="{pool_rule.name}"}} 1' in text.splitlines()
    assert f'kafka_autopilot_rule_healthy{{rule="{pool_rule.name}"}}' not in text
    assert f'kafka_autopilot_query_errors_total{{rule="{pool_rule.name}"}}' not in text
    assert all(f'kafka_autopilot_rule_healthy{{rule="{rule.name}"}} 1' in text for rule in running)


def test_metric_total_sums_the_samples_whose_labels_match() -> None:
    telemetry = Telemetry()
    telemetry.rules_loaded([PVC_RULE, BROKER_RULE])
    text = telemetry.render()
    assert metric_total(text, "kafka_autopilot_actions_total", outcome="verified") == 0

    telemetry.action(PVC_RULE, PVC_RULE.actions[0].name, "verified", None)
    telemetry.action(BROKER_RULE, BROKER_RULE.actions[0].name, "verified", None)
    telemetry.action(BROKER_RULE, BROKER_RULE.actions[0].name, "failed", None)
    text = telemetry.render()
    assert metric_total(text, "kafka_autopilot_actions_total", outcome="verified") == 2
    assert metric_total(text, "kafka_autopilot_actions_total", outcome="verified", rule=PVC_RULE.name) == 1
    assert metric_total(text, "kafka_autopilot_actions_total", rule=BROKER_RULE.name) == 2
    assert metric_total(text, "kafka_autopilot_leader") == 0
