"""Resume with `since`: exactly the missed events, then live; `recovered: false` when history cannot cover it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.clients import Subscriber, batch, publish
from tests.servers import Gateway, RedisServer


@pytest.fixture(params=["memory", "redis"])
def resumable(request: pytest.FixtureRequest, gateway_factory: Callable[..., Gateway]) -> Gateway:
    if request.param == "memory":
        return gateway_factory()
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    return gateway_factory(broker=redis_server.url)


async def test_resume_gives_the_gap_then_live_without_duplicates(resumable: Gateway) -> None:
    url = f"{resumable.ws}/ws/events?channels=r,s"
    sub = await Subscriber.open(url)
    first = (await publish(resumable.http, batch("r", 10))).json()["ids"]
    await sub.collect(10)
    last_seen = sub.last_id
    await sub.close()

    missed = (await publish(resumable.http, batch("r", 50, 10) + batch("s", 50, 60))).json()["ids"]
    await publish(resumable.http, batch("other", 5))  # not subscribed: must not show up

    back = await Subscriber.open(f"{url}&since={last_seen}")
    assert back.welcome["recovered"] is True
    replayed = await back.collect(100)
    assert [e["id"] for e in replayed] == missed
    live = (await publish(resumable.http, batch("s", 5, 200))).json()["ids"]
    assert [e["id"] for e in await back.collect(105)][100:] == live
    assert len({e["id"] for e in back.events}) == len(back.events)
    assert not set(first) & {e["id"] for e in back.events}
    await back.close()


async def test_resume_from_welcome_position_before_any_event(resumable: Gateway) -> None:
    url = f"{resumable.ws}/ws/events?channels=p"
    sub = await Subscriber.open(url)
    position = sub.welcome["position"]
    await sub.close()
    ids = (await publish(resumable.http, batch("p", 3))).json()["ids"]
    back = await Subscriber.open(f"{url}&since={position}")
    assert back.welcome["recovered"] is True
    assert [e["id"] for e in await back.collect(3)] == ids
    await back.close()


async def test_resume_after_history_trimmed_is_not_recovered(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory(env={"EVENTCAST_HISTORY_MAX_EVENTS": "10"})
    url = f"{gateway.ws}/ws/events?channels=t"
    sub = await Subscriber.open(url)
    await publish(gateway.http, batch("t", 1))
    await sub.collect(1)
    await sub.close()
    await publish(gateway.http, batch("t", 50, 1))
    back = await Subscriber.open(f"{url}&since={sub.last_id}")
    assert back.welcome["recovered"] is False
    assert back.welcome["reason"] == "trimmed"
    live = (await publish(gateway.http, batch("t", 1, 100))).json()["ids"]
    assert [e["id"] for e in await back.collect(1)] == live  # after a gap the client still gets live events
    await back.close()


async def test_resume_after_redis_trimmed_is_not_recovered(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory(broker=redis_server.url, env={"EVENTCAST_HISTORY_MAX_EVENTS": "10"})
    url = f"{gateway.ws}/ws/events?channels=t"
    sub = await Subscriber.open(url)
    await publish(gateway.http, batch("t", 1))
    await sub.collect(1)
    await sub.close()
    for start in range(1, 1001, 100):  # MAXLEN ~ trims whole radix-tree nodes: publish well past them
        await publish(gateway.http, batch("t", 100, start))
    back = await Subscriber.open(f"{url}&since={sub.last_id}")
    assert back.welcome["recovered"] is False
    assert back.welcome["reason"] == "trimmed"
    await back.close()


async def test_resume_after_redis_restarted_empty_is_not_recovered(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory(broker=redis_server.url)
    url = f"{gateway.ws}/ws/events?channels=e"
    sub = await Subscriber.open(url)
    await publish(gateway.http, batch("e", 3))
    await sub.collect(3)
    await sub.close()

    redis_server.restart(wipe=True)
    gateway.wait_ready("Redis restarted empty")
    back = await Subscriber.open(f"{url}&since={sub.last_id}")
    assert back.welcome["recovered"] is False
    assert back.welcome["reason"] == "epoch_changed"
    live = (await publish(gateway.http, batch("e", 2, 10))).json()["ids"]
    assert [e["id"] for e in await back.collect(2)] == live
    await back.close()


async def test_resume_survives_a_redis_restart_with_persistence(
    gateway_factory: Callable[..., Gateway],
) -> None:
    durable = RedisServer(appendonly=True)
    durable.start()
    try:
        gateway = gateway_factory(broker=durable.url)
        url = f"{gateway.ws}/ws/events?channels=d"
        sub = await Subscriber.open(url)
        await publish(gateway.http, batch("d", 2))
        await sub.collect(2)
        await sub.close()
        missed = (await publish(gateway.http, batch("d", 5, 2))).json()["ids"]
        durable.restart(wipe=False)
        gateway.wait_ready("Redis restarted from its AOF")
        back = await Subscriber.open(f"{url}&since={sub.last_id}")
        assert back.welcome["recovered"] is True
        assert [e["id"] for e in await back.collect(5)] == missed
        await back.close()
    finally:
        durable.stop()
