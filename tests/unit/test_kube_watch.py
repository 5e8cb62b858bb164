"""The watch of the Kubernetes access layer, without an apiserver: it lists, follows, resumes after a
temporary failure on the client's Clock (backing off), lists again after 410, and raises a permanent error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import FakeClock

from agent.adapters.kubernetes import KubeClient, KubeError, WatchEvent
from agent.adapters.kubernetes import client as kubernetes_client


def node(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


def failure(status: int | None, *, temporary: bool) -> KubeError:
    return KubeError("failed", server="fake", verb="WATCH", resource="nodes", status=status, temporary=temporary)


class ScriptedKube(KubeClient):
    """A KubeClient whose list and watch requests answer from scripts instead of the network."""

    def __init__(self, *, lists: list[Any], streams: list[Any], clock: FakeClock) -> None:
        api_client = SimpleNamespace(configuration=SimpleNamespace(host="https://fake"), user_agent="")
        super().__init__(api_client=api_client, clock=clock, reporting_instance="test")
        self.lists = lists
        self.streams = streams
        self.watched_from: list[str | None] = []

    async def _send(self, operation: Any, call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        answer = self.lists.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return dict(answer)

    async def _stream(
        self, source: Any, namespace: str | None, version: str | None
    ) -> AsyncGenerator[tuple[str, Mapping[str, Any]], None]:
        self.watched_from.append(version)
        for item in self.streams.pop(0):
            if isinstance(item, BaseException):
                raise item
            yield item


async def take(kube: KubeClient, count: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    watch = kube.watch("nodes")
    async for event in watch:
        events.append(event)
        if len(events) == count:
            break
    await watch.aclose()
    return events


def test_the_watch_lists_follows_and_resumes_after_a_temporary_failure_with_backoff_on_the_clock() -> None:
    clock = FakeClock()
    kube = ScriptedKube(
        lists=[{"metadata": {"resourceVersion": "10"}, "items": [node("a", "9")]}],
        streams=[
            [("MODIFIED", node("a", "11")), failure(None, temporary=True)],
            [failure(503, temporary=True)],
            [("BOOKMARK", node("", "12")), ("ADDED", node("b", "13"))],
        ],
        clock=clock,
    )
    events = asyncio.run(take(kube, 3))
    assert [(event.type, event.object_name) for event in events] == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b")]
    assert kube.watched_from == ["10", "11", "11"]
    policy = kubernetes_client.WATCH_RECONNECT
    first, second = clock.waits  # the pause is a wait that close() cuts short
    assert policy.base_seconds <= first <= policy.base_seconds + policy.jitter_seconds
    assert 2 * policy.base_seconds <= second <= 2 * policy.base_seconds + policy.jitter_seconds


def test_an_expired_resource_version_lists_again_and_says_resync() -> None:
    clock = FakeClock()
    kube = ScriptedKube(
        lists=[
            {"metadata": {"resourceVersion": "10"}, "items": [node("a", "9")]},
            {"metadata": {"resourceVersion": "20"}, "items": [node("a", "19"), node("b", "18")]},
        ],
        streams=[[failure(410, temporary=False)], [("DELETED", node("b", "21"))]],
        clock=clock,
    )
    events = asyncio.run(take(kube, 3))
    assert [event.type for event in events] == ["ADDED", "RESYNC", "DELETED"]
    assert len(events[1].raw["items"]) == 2
    assert kube.watched_from == ["10", "20"]
    assert clock.sleeps == [] and clock.waits == []


def test_a_permanent_error_reaches_the_consumer() -> None:
    kube = ScriptedKube(
        lists=[{"metadata": {"resourceVersion": "10"}, "items": []}],
        streams=[[failure(403, temporary=False)]],
        clock=FakeClock(),
    )
    with pytest.raises(KubeError) as raised:
        asyncio.run(take(kube, 1))
    assert raised.value.status == 403


def test_autopilotrules_are_watched_as_cluster_custom_objects_of_the_agents_group() -> None:
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    class Recorded(kubernetes_client.client.CustomObjectsApi):  # type: ignore[misc]
        def list_cluster_custom_object(self, *args: object, **kwargs: object) -> None:
            calls.append((args, kwargs))

    kube = ScriptedKube(lists=[], streams=[], clock=FakeClock())
    source = kubernetes_client._WATCHABLE["autopilotrules"]
    kube._lister(kubernetes_client._Watchable(**{**vars(source), "api": Recorded}), None)(watch=True)
    assert calls == [(("kafka-autopilot.io", "v1alpha1", "autopilotrules"), {"watch": True})]
