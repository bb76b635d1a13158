"""Fan-out to many real WebSocket clients: every event to every client, in order, counted per client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.clients import Subscriber, batch, publish
from tests.servers import Gateway, RedisServer

EVENTS = 20


async def open_many(url: str, count: int) -> list[Subscriber]:
    gate = asyncio.Semaphore(100)

    async def one() -> Subscriber:
        async with gate:
            return await Subscriber.open(url, timeout=30)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def check_everyone_gets_everything(gateway: Gateway, clients: int) -> None:
    subscribers = await open_many(f"{gateway.ws}/ws/events?channels=graph", clients)
    response = await publish(gateway.http, batch("graph", EVENTS))
    assert response.status_code == 202
    ids = response.json()["ids"]
    assert len(ids) == EVENTS
    results = await asyncio.gather(*(s.collect(EVENTS, timeout=60) for s in subscribers))
    for received in results:
        assert [e["id"] for e in received] == ids  # every event, once, in publish order
        assert [e["data"]["n"] for e in received] == list(range(EVENTS))
    await asyncio.gather(*(s.close() for s in subscribers))


@pytest.mark.parametrize("clients", [1, 10, 100])
async def test_every_client_gets_every_event_in_order(gateway: Gateway, clients: int) -> None:
    await check_everyone_gets_everything(gateway, clients)


@pytest.mark.slow
async def test_thousand_clients(gateway: Gateway) -> None:
    await check_everyone_gets_everything(gateway, 1000)


async def test_thousand_clients_on_redis(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    await check_everyone_gets_everything(gateway_factory(broker=redis_server.url), 1000)


async def test_channels_are_isolated_and_one_connection_reads_several(gateway: Gateway) -> None:
    both = await Subscriber.open(f"{gateway.ws}/ws/events?channels=a,b")
    only_b = await Subscriber.open(f"{gateway.ws}/ws/events?channels=b")
    default = await Subscriber.open(f"{gateway.ws}/ws/events")
    assert both.welcome["channels"] == ["a", "b"] and default.welcome["channels"] == ["default"]
    events = batch("a", 3) + batch("b", 3, start=3) + batch("default", 1, start=6)
    assert (await publish(gateway.http, events)).status_code == 202
    assert [e["data"]["n"] for e in await both.collect(6)] == [0, 1, 2, 3, 4, 5]
    assert [e["channel"] for e in await only_b.collect(3)] == ["b", "b", "b"]
    assert [e["data"]["n"] for e in await default.collect(1)] == [6]
    for s in (both, only_b, default):
        await s.close()


async def test_event_frame_shape(gateway: Gateway) -> None:
    sub = await Subscriber.open(f"{gateway.ws}/ws/events?channels=shape")
    welcome = sub.welcome
    assert set(welcome) >= {"type", "connection", "replica", "recovered", "position"}
    assert welcome["recovered"] is False and welcome["reason"] == "no_since"
    response = await publish(gateway.http, {"channel": "shape", "type": "node.created", "data": {"k": "é"}})
    [event] = await sub.collect(1)
    assert set(event) == {"id", "channel", "type", "data", "ts"}
    assert event["id"] == response.json()["ids"][0]
    assert event["type"] == "node.created" and event["data"] == {"k": "é"}
    assert isinstance(event["ts"], float | int) and event["ts"] > 1.6e12
    await sub.close()
