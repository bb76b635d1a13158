"""app.client against real gateways (and Redis): resume across drains with nothing lost or doubled, no retry on
4400/4401/4403, backoff on 1013 with an injected sleep and random, token refresh on expiry, recovered: false,
in-band filters and MessagePack."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.client import Backoff, Client, Disconnect, Event, Stopped
from tests.clients import Subscriber, batch, publish
from tests.observability.helpers import scrape, value
from tests.security.helpers import SECRET, make_token
from tests.servers import Gateway, RedisServer, free_port

API_KEY = "client-test-publisher-key"
AUTH_ENV = {"EVENTCAST_JWT_SECRET": SECRET, "EVENTCAST_API_KEYS": API_KEY}


class Reader:
    """Iterates a Client in a task, keeping every event, welcome and disconnect it reports."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []
        self.welcomes: list[dict[str, Any]] = []
        self.disconnects: list[Disconnect] = []
        self.resyncs: list[dict[str, Any]] = []
        self.stopped: Stopped | None = None
        client.on_welcome = self.welcomes.append
        client.on_disconnect = self.disconnects.append
        client.on_resync = self.resyncs.append
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self.client:
                self.events.append(event)
        except Stopped as exc:
            self.stopped = exc

    async def until(self, check: Callable[[], bool], what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.task.done():
                self.task.result()
                raise AssertionError(f"the client ended while waiting for {what}: {self.stopped}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 10)


@pytest.fixture
def redis_pair(redis_server: RedisServer, gateway_factory: Callable[..., Gateway]) -> tuple[Gateway, Gateway]:
    env = {"EVENTCAST_DRAIN_SECONDS": "1"}
    return (
        gateway_factory(broker=redis_server.url, env=env),
        gateway_factory(broker=redis_server.url, env=env),
    )


async def test_resumes_across_drains_of_both_replicas_with_nothing_lost_or_doubled(
    redis_pair: tuple[Gateway, Gateway],
) -> None:
    a, b = redis_pair
    reader = Reader(Client([a.ws, b.ws], channels=["drain", "other"]))
    await reader.until(lambda: len(reader.welcomes) == 1, "the welcome")
    ids: list[str] = []

    async def publish_some(gateway: Gateway, count: int) -> None:
        for _ in range(0, count, 5):  # small batches, so some land while the client is away
            ids.extend((await publish(gateway.http, batch("drain", 5, len(ids)))).json()["ids"])

    await publish_some(b, 20)
    a.terminate()  # SIGTERM: drain (1012), exit; the client moves to the other replica
    await publish_some(b, 40)
    await reader.until(lambda: len(reader.welcomes) == 2, "the resume on the second replica")
    await asyncio.to_thread(a.wait, 30)
    await asyncio.to_thread(a.start)
    await publish_some(a, 20)
    b.terminate()
    await publish_some(a, 40)
    await reader.until(lambda: len(reader.welcomes) == 3, "the resume back on the first replica")
    await publish_some(a, 20)
    await reader.until(lambda: len(reader.events) >= len(ids), f"{len(ids)} events")
    await asyncio.sleep(0.3)
    await reader.close()
    assert [e.id for e in reader.events] == ids  # every event once, in order, across two drains
    assert [e.data["n"] for e in reader.events] == list(range(len(ids)))
    assert [w["replica"] for w in reader.welcomes] == [f"gw-{a.port}", f"gw-{b.port}", f"gw-{a.port}"]
    assert [w["recovered"] for w in reader.welcomes[1:]] == [True, True]
    assert {d.code for d in reader.disconnects} == {1012}
    assert reader.resyncs == []


@pytest.fixture
def guarded(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(env=AUTH_ENV)


async def test_never_retries_4400_4401_4403(guarded: Gateway) -> None:
    cases = [
        (make_token(["public.*"]), None, 4403, "forbidden"),
        (None, None, 4401, "unauthenticated"),
        (make_token(["*"], key="another-secret-0123456789abcdef-x"), None, 4401, "unauthenticated"),
        (make_token(["*"]), ["bad glob!"], 4400, "bad_request"),
    ]
    for token, types, code, label in cases:
        slept: list[float] = []

        async def sleep(seconds: float, slept: list[float] = slept) -> None:
            slept.append(seconds)

        client = Client(guarded.ws, channels=["secret"], token=token, types=types, sleep=sleep)
        with pytest.raises(Stopped) as stopped:
            async for _ in client:
                pass
        assert stopped.value.code == code, (label, stopped.value)
        assert (client.connects, slept) == (1, []), label
    await asyncio.sleep(0.2)
    _, samples = scrape(f"{guarded.http}/metrics")
    refused = {
        label: value(samples, "eventcast_connections_refused_total", reason=label) for *_, label in cases
    }
    assert refused == {"forbidden": 1, "unauthenticated": 2, "bad_request": 1}  # one attempt each


async def test_backs_off_longer_on_1013_with_injected_sleep_and_random(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = gateway_factory(env={"EVENTCAST_MAX_CONNECTIONS": "1"})
    holder = await Subscriber.open(f"{gateway.ws}/ws/events")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # no real waiting: the delays are what is checked
        slept.append(seconds)
        if len(slept) == 3:
            await holder.close()
            await asyncio.sleep(0.3)

    client = Client(gateway.ws, channels=["o"], sleep=sleep, random=lambda: 0.0)
    reader = Reader(client)
    await reader.until(lambda: len(reader.welcomes) == 1, "the client getting in")
    await reader.close()
    assert [d.code for d in reader.disconnects] == [1013, 1013, 1013]
    assert slept == [5.0, 10.0, 20.0]  # overload: from 5 s, doubling (random 0: no jitter taken off)
    assert client.connects == 4


async def test_asks_for_a_fresh_token_when_it_expired_and_resumes(guarded: Gateway) -> None:
    asked: list[float] = []

    async def get_token() -> str:
        asked.append(time.time())
        return make_token(["exp"])

    # The first token expires in 2 s; the client's clock runs 10 s behind so it does not replace it early itself.
    client = Client(
        guarded.ws,
        channels=["exp"],
        token=make_token(["exp"], exp_in=2),
        get_token=get_token,
        clock=lambda: time.time() - 10,
    )
    reader = Reader(client)
    key = {"x-api-key": API_KEY}
    await reader.until(lambda: len(reader.welcomes) == 1, "the welcome")
    ids = (await publish(guarded.http, batch("exp", 2), headers=key)).json()["ids"]
    await reader.until(lambda: len(reader.disconnects) == 1, "the close at expiry", timeout=8)
    ids += (await publish(guarded.http, batch("exp", 2, 2), headers=key)).json()["ids"]
    await reader.until(lambda: len(reader.events) == 4, "4 events")
    await reader.close()
    assert (reader.disconnects[0].code, reader.disconnects[0].reason) == (4401, "token expired")
    assert len(asked) == 1
    assert reader.welcomes[1]["recovered"] is True
    assert [e.id for e in reader.events] == ids


async def test_tells_the_application_when_history_was_lost(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory(broker=redis_server.url)
    reader = Reader(Client(gateway.ws, channels=["lost"]))
    await reader.until(lambda: len(reader.welcomes) == 1, "the welcome")
    await publish(gateway.http, batch("lost", 2))
    await reader.until(lambda: len(reader.events) == 2, "2 events")
    redis_server.restart(wipe=True)
    gateway.wait_ready("Redis restarted empty")
    async with httpx.AsyncClient() as http:
        shed = await http.post(f"{gateway.http}/admin/shed", json={"fraction": 1}, headers=gateway.admin)
        assert shed.status_code == 202
    await reader.until(lambda: len(reader.resyncs) == 1, "recovered: false")
    live = (await publish(gateway.http, batch("lost", 2, 10))).json()["ids"]
    await reader.until(lambda: len(reader.events) == 4, "live events after the gap")
    await reader.close()
    assert reader.resyncs[0]["reason"] == "epoch_changed"
    assert [e.id for e in reader.events[2:]] == live


async def test_filters_in_band_and_speaks_msgpack(gateway: Gateway) -> None:
    reader = Reader(Client(gateway.ws, channels=["f"], types=["a.*"], encoding="msgpack"))
    await reader.until(lambda: len(reader.welcomes) == 1, "the welcome")
    assert reader.welcomes[0]["protocol"] == "eventcast.v1.msgpack"
    await publish(gateway.http, batch("f", 1, 0, "a.x") + batch("f", 1, 1, "b.x"))
    await reader.until(lambda: len(reader.events) == 1, "the a.x event")
    await reader.client.set_filter(["b.*"], {"n": 3})
    await asyncio.sleep(0.3)  # the filter frame is in flight; events published after it are filtered
    await publish(gateway.http, batch("f", 3, 2, "b.x") + batch("f", 1, 5, "a.x"))
    await reader.until(lambda: len(reader.events) == 2, "the filtered event")
    await asyncio.sleep(0.2)
    await reader.close()
    assert [(e.type, e.data["n"]) for e in reader.events] == [("a.x", 0), ("b.x", 3)]


async def test_close_ends_a_long_reconnect_pause_at_once() -> None:
    nobody = f"ws://127.0.0.1:{free_port()}"  # nothing listens: every attempt fails with 1006
    reader = Reader(Client(nobody, backoff=Backoff(initial=30.0)))
    await reader.until(lambda: len(reader.disconnects) == 1, "the first failed attempt")
    assert reader.disconnects[0].code == 1006 and reader.disconnects[0].will_retry
    assert reader.disconnects[0].delay is not None and reader.disconnects[0].delay >= 15
    started = time.monotonic()
    await reader.close()
    assert time.monotonic() - started < 2 and reader.task.done() and reader.stopped is None
