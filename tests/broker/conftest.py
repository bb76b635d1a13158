"""Fixtures for the broker contract: the same suite runs against ``memory://`` and ``redis://``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from app.broker.base import Broker, create_broker
from app.protocol import Event

PREFIX = "eventcast"
WAIT_SECONDS = 10.0


@dataclass
class Recorder:
    """A broker listener that keeps every delivered batch, and the broker's up/down reports."""

    batches: list[list[Event]] = field(default_factory=list)
    states: list[bool] = field(default_factory=list)

    def __call__(self, events: Sequence[Event]) -> None:
        self.batches.append(list(events))

    def on_state(self, up: bool) -> None:
        self.states.append(up)

    @property
    def events(self) -> list[Event]:
        return [event for batch in self.batches for event in batch]

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events]

    async def wait_for_ids(self, ids: Sequence[str], timeout: float = WAIT_SECONDS) -> None:
        """Wait (bounded) until every id in ``ids`` has been delivered."""
        wanted = set(ids)
        await wait_until(lambda: wanted <= set(self.ids), timeout, f"delivery of {len(wanted)} events")


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_SECONDS, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


@dataclass
class Started:
    broker: Broker
    recorder: Recorder


BrokerFactory = Callable[..., Awaitable[Started]]


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    server = request.getfixturevalue("redis_server")
    return str(server.url)


@pytest.fixture
async def make_broker(broker_url: str) -> AsyncIterator[BrokerFactory]:
    """Create and start brokers (stopped at teardown); each gets its own Recorder."""
    started: list[Broker] = []

    async def make(*, max_events: int = 10_000, max_age_seconds: float = 3600.0) -> Started:
        broker = create_broker(
            broker_url,
            prefix=PREFIX,
            max_events=max_events,
            max_age_seconds=max_age_seconds,
            retry_seconds=0.05,
        )
        recorder = Recorder()
        await broker.start(recorder, recorder.on_state)
        started.append(broker)
        return Started(broker, recorder)

    yield make
    for broker in started:
        await broker.stop()


@pytest.fixture
async def started(make_broker: BrokerFactory) -> Started:
    return await make_broker()
