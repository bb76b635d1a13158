"""Drain over time, shed fractions, keepalive spread and Redis outages, against real processes.

What every transport must do alike (slow consumers, refusals, keepalive, expiry) is tests/test_session.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from app.causes import CloseCode
from tests.clients import (
    Subscriber,
    batch,
    close_code,
    publish,
    raw_subscriber,
    read_frame,
)
from tests.servers import Gateway, RedisServer


async def test_sigterm_drains_with_1012_and_clients_resume_elsewhere_without_loss(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    leaving = gateway_factory(broker=redis_server.url, env={"EVENTCAST_DRAIN_SECONDS": "2"})
    staying = gateway_factory(broker=redis_server.url)
    subs = [await Subscriber.open(f"{leaving.ws}/ws/events?channels=live") for _ in range(20)]

    published: list[str] = []
    stop = asyncio.Event()

    async def producer() -> None:  # publishes through the replica that stays, all through the drain
        n = 0
        while not stop.is_set():
            response = await publish(staying.http, batch("live", 5, n))
            published.extend(response.json()["ids"])
            n += 5
            await asyncio.sleep(0.02)

    task = asyncio.create_task(producer())
    await asyncio.sleep(0.3)
    leaving.terminate()
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient() as client:  # unready at once, while clients are still being closed
        assert (await client.get(f"{leaving.http}/readyz")).status_code == 503
    closes = await asyncio.gather(*(s.closed(timeout=15) for s in subs))
    assert {code for code, _ in closes} == {CloseCode.SERVICE_RESTART}
    assert all("drain" in reason for _, reason in closes)

    resumed = [await Subscriber.open(f"{staying.ws}/ws/events?channels=live&since={s.last_id}") for s in subs]
    assert all(r.welcome["recovered"] for r in resumed)
    await asyncio.sleep(0.3)
    stop.set()
    await task
    for before, after in zip(subs, resumed, strict=True):
        expected = len(published) - len(before.events)
        await after.collect(expected, timeout=20)
        assert [e["id"] for e in before.events + after.events] == published  # nothing missed, nothing twice
    # It exits by itself once drained (uvicorn re-raises the SIGTERM it handled, hence -15).
    assert leaving.wait(15) in (0, -15)
    for r in resumed:
        await r.close()


async def test_drain_spreads_closes_and_refuses_new_clients(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory()
    subs = [await Subscriber.open(f"{gateway.ws}/ws/events") for _ in range(10)]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{gateway.http}/admin/drain", json={"seconds": 1}, headers=gateway.admin
        )
        assert response.status_code == 202 and response.json()["connections"] == 10
        assert (await client.get(f"{gateway.http}/readyz")).status_code == 503
    assert await close_code(f"{gateway.ws}/ws/events") == (
        CloseCode.SERVICE_RESTART,
        "draining: reconnect to another replica",
    )
    codes = await asyncio.gather(*(s.closed() for s in subs))
    assert {c for c, _ in codes} == {CloseCode.SERVICE_RESTART}


async def test_shed_closes_the_asked_fraction(gateway: Gateway) -> None:
    subs = [await Subscriber.open(f"{gateway.ws}/ws/events") for _ in range(10)]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{gateway.http}/admin/shed", json={"fraction": 0.3}, headers=gateway.admin
        )
        assert response.status_code == 202 and response.json()["shed"] == 3
        assert (await client.get(f"{gateway.http}/readyz")).status_code == 200
        bad = await client.post(f"{gateway.http}/admin/shed", json={"fraction": 2}, headers=gateway.admin)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_fraction"
    await asyncio.sleep(0.5)
    closed = [s for s in subs if s.ws.protocol.close_rcvd is not None]
    assert len(closed) == 3
    assert {s.ws.protocol.close_rcvd.code for s in closed if s.ws.protocol.close_rcvd} == {
        CloseCode.SERVICE_RESTART
    }
    ids = (await publish(gateway.http, batch("default", 2))).json()["ids"]
    for s in subs:
        if s not in closed:
            assert [e["id"] for e in await s.collect(2)] == ids


async def test_keepalive_pings_are_spread_over_the_period_not_sent_at_once(
    gateway_factory: Callable[..., Gateway],
) -> None:
    """Pinging every client in one burst would stall a broadcast behind it: each one still gets its ping."""
    gateway = gateway_factory(env={"EVENTCAST_IDLE_TIMEOUT_SECONDS": "4"})  # a ping every 2 s per client

    async def first_ping() -> float:
        reader, writer = await raw_subscriber(gateway.host, gateway.port)
        try:
            while True:
                opcode, _ = await read_frame(reader)
                if opcode == 0x9:  # ping (the welcome comes first)
                    return time.monotonic()
        finally:
            writer.close()

    pings = await asyncio.wait_for(asyncio.gather(*(first_ping() for _ in range(40))), 10)
    assert max(pings) - min(pings) > 0.4, "every client was pinged in the same burst"


async def test_redis_outage_answers_503_keeps_clients_and_recovers(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory(broker=redis_server.url)
    subs = [await Subscriber.open(f"{gateway.ws}/ws/events?channels=o") for _ in range(5)]
    before = (await publish(gateway.http, batch("o", 3))).json()["ids"]
    for s in subs:
        await s.collect(3)

    redis_server.kill()
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{gateway.http}/events", json=batch("o", 1))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "broker_unavailable"
        assert (await client.get(f"{gateway.http}/readyz")).status_code == 503
        assert (await client.get(f"{gateway.http}/healthz")).status_code == 200
    # A resume needs history: with Redis down it is refused with 1013 (try later), never a false "recovered".
    assert (await close_code(f"{gateway.ws}/ws/events?channels=o&since={before[-1]}"))[
        0
    ] == CloseCode.TRY_AGAIN_LATER
    await asyncio.sleep(1.0)
    assert all(s.ws.protocol.close_rcvd is None for s in subs)  # connected clients stay connected

    redis_server.restart(wipe=False)
    gateway.wait_ready("Redis restarted")
    after = (await publish(gateway.http, batch("o", 4, 10))).json()["ids"]
    for s in subs:
        assert [e["id"] for e in await s.collect(7)] == before + after
        await s.close()


async def test_sigterm_drains_every_worker(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory(broker=redis_server.url, workers=2, env={"EVENTCAST_DRAIN_SECONDS": "1"})
    subs = [await Subscriber.open(f"{gateway.ws}/ws/events?channels=w") for _ in range(30)]
    gateway.terminate()  # the supervisor passes SIGTERM to each worker, and each drains its own clients
    closes = await asyncio.gather(*(s.closed(timeout=15) for s in subs))
    assert {code for code, _ in closes} == {CloseCode.SERVICE_RESTART}
    assert {reason for _, reason in closes} == {"service restart: drain"}  # drained, not cut at shutdown
    assert gateway.wait(20) in (0, -15)
