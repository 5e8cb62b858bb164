"""A dry-run agent and a live one on the same cluster keep their states apart.

The real `StateStore` over an in-memory AutopilotRuleObject API (labels and selectors as the apiserver
reads them): what a dry-run agent records (an action started, the object in cooldown) is invisible to a
live agent started later, whose guardrails count only live actions, and the reverse.
"""

from __future__ import annotations

from typing import cast

import pytest
from shell_support import InMemoryRuleObjects

from agent.adapters.kubernetes import KubeClient
from agent.adapters.kubernetes.statestore import StateStore
from agent.adapters.kubernetes.statuscodec import MODE_LABEL, LastAction, object_name
from agent.core.states import ObjectState, RuleState

RULE = "volume-resize"
PVC = "kafka/data-kafka-0"
T0 = 1_700_000_000.0


def store(api: InMemoryRuleObjects, *, dry_run: bool) -> StateStore:
    return StateStore(kube=cast(KubeClient, api), dry_run=dry_run)


async def act(store_: StateStore, *, at: float) -> None:
    """What the runner writes around one action: in flight, then done and in cooldown."""
    await store_.record_in_flight(
        rule=RULE, object_key=PVC, object_kind="PersistentVolumeClaim", action="resize", requested_at=at
    )
    await store_.clear_in_flight(
        rule=RULE,
        object_key=PVC,
        object_kind="PersistentVolumeClaim",
        state=ObjectState(state=RuleState.ACTIVE_ACTIONS_TAKEN, since=at, cooldown_until=at + 3600),
        last_action=LastAction(name="resize", started_at=at, finished_at=at + 1, outcome="DryRun"),
    )


@pytest.mark.asyncio
async def test_a_dry_run_agents_action_leaves_a_live_agent_free_to_act_at_once() -> None:
    api = InMemoryRuleObjects()
    await act(store(api, dry_run=True), at=T0)

    live = store(api, dry_run=False)
    assert await live.load(RULE) == {}, "the dry-run's cooldown must not hold the live agent back"
    assert (await live.action_history()).starts == (), "the dry-run's actions must not count against rate limits"
    assert (await live.status(RULE, PVC)).in_flight is None

    await act(live, at=T0 + 1)  # at once: no conflict with the dry-run's object, no "already in flight"
    assert (await live.load(RULE))[PVC].cooldown_until == T0 + 1 + 3600
    assert [start.at for start in (await live.action_history()).starts] == [T0 + 1]

    dry = store(api, dry_run=True)
    assert (await dry.load(RULE))[PVC].cooldown_until == T0 + 3600
    assert [start.at for start in (await dry.action_history()).starts] == [T0]


@pytest.mark.asyncio
async def test_a_dry_run_agents_objects_are_named_labelled_and_marked_apart() -> None:
    api = InMemoryRuleObjects()
    await act(store(api, dry_run=True), at=T0)
    await act(store(api, dry_run=False), at=T0)

    dry_name = object_name(rule=RULE, object_key=PVC, dry_run=True)
    live_name = object_name(rule=RULE, object_key=PVC)
    assert sorted(api.objects) == sorted([dry_name, live_name]) and dry_name == f"dry-run.{live_name}"
    assert api.objects[dry_name]["metadata"]["labels"][MODE_LABEL] == "dry-run"
    assert api.objects[dry_name]["spec"]["mode"] == "dry-run"
    assert MODE_LABEL not in api.objects[live_name]["metadata"]["labels"]
    assert "mode" not in api.objects[live_name]["spec"]
