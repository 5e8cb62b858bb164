"""The agent's Kafka connection is made on demand: Kafka away at start-up fails only the questions
asked of it, each retry waits out a doubling backoff, and a connection made later serves again."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from fakes import FakeClock

from agent.adapters.errors import KafkaUnavailableError
from agent.adapters.kafka import KafkaAdmin, KafkaSettings
from agent.adapters.kafka import admin as admin_module


class ScriptedClient:
    """Stands for aiokafka's client: its bootstrap fails while `down` is set."""

    down = True
    bootstraps = 0

    def __init__(self, **_kwargs: Any) -> None:
        pass

    async def bootstrap(self) -> None:
        ScriptedClient.bootstraps += 1
        if ScriptedClient.down:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, <AddressFamily.AF_INET: 2>)]")

    async def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    ScriptedClient.down, ScriptedClient.bootstraps = True, 0
    monkeypatch.setattr(admin_module, "AIOKafkaClient", ScriptedClient)


SETTINGS = KafkaSettings(bootstrap_servers="127.0.0.1:1")


async def test_entering_lazily_connects_nothing_and_each_question_retries_after_a_backoff() -> None:
    clock = FakeClock()
    async with KafkaAdmin(settings=SETTINGS, clock=clock, lazily=True) as kafka:
        assert ScriptedClient.bootstraps == 0

        with pytest.raises(KafkaUnavailableError, match="connecting to a bootstrap server"):
            await kafka.broker_endpoints()
        with pytest.raises(KafkaUnavailableError):
            await kafka.broker_endpoints()  # within the 1 s backoff: the last error, no new attempt
        assert ScriptedClient.bootstraps == 1

        clock.advance(1.0)
        with pytest.raises(KafkaUnavailableError):
            await kafka.broker_endpoints()
        clock.advance(1.0)  # the backoff doubled to 2 s
        with pytest.raises(KafkaUnavailableError):
            await kafka.broker_endpoints()
        assert ScriptedClient.bootstraps == 2

        ScriptedClient.down = False
        clock.advance(2.0)
        assert await kafka._connected("a question") is not None
        assert ScriptedClient.bootstraps == 3


async def test_entering_eagerly_still_fails_at_once() -> None:
    with pytest.raises(KafkaUnavailableError, match="connecting to a bootstrap server"):
        async with KafkaAdmin(settings=SETTINGS, clock=FakeClock()):
            pass


async def test_a_question_outside_the_context_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="outside `async with KafkaAdmin"):
        await KafkaAdmin(settings=SETTINGS, lazily=True).cluster_view()
