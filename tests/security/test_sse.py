"""GET /sse/events: the same events, filters and auth as WebSocket; Last-Event-ID resume (across a gateway
restart with Redis); heartbeat comments; drain and expiry end the stream with a reason and a retry hint."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from app.causes import CloseCode
from tests.clients import Subscriber, batch, publish
from tests.security.helpers import SECRET, bearer, make_token, open_sse
from tests.servers import Gateway, RedisServer


async def test_sse_streams_the_same_events_as_websocket(gateway: Gateway) -> None:
    ws = await Subscriber.open(f"{gateway.ws}/ws/events?channels=s1")
    async with open_sse(f"{gateway.http}/sse/events?channels=s1") as sse:
        assert sse.response.status_code == 200
        assert sse.response.headers["content-type"].startswith("text/event-stream")
        first = await sse.next()
        assert first.retry is not None and first.retry > 0
        welcome = await sse.next_event()
        assert welcome.event == "eventcast.welcome"
        assert welcome.id == welcome.json()["position"]
        response = await publish(
            gateway.http, [*batch("s1", 3), {"channel": "s1", "type": "t", "data": "a\nb"}]
        )
        ids = response.json()["ids"]
        received = [await sse.next_event() for _ in range(4)]
        assert [m.id for m in received] == ids
        assert all(m.event == "message" for m in received)
        assert [m.json() for m in received] == await ws.collect(4)
    await ws.close()


async def test_sse_filters(gateway: Gateway) -> None:
    url = f"{gateway.http}/sse/events/filtered?channels=f&types=node.*&where=color=red"
    async with open_sse(url) as sse:
        await sse.next_event()  # welcome
        events = [
            {"channel": "f", "type": "edge.created", "data": {"color": "red"}},
            {"channel": "f", "type": "node.created", "data": {"color": "blue"}},
            {"channel": "f", "type": "node.created", "data": {"color": "red", "n": 1}},
        ]
        await publish(gateway.http, events)
        message = await sse.next_event()
        assert message.json()["data"] == {"color": "red", "n": 1}
    async with httpx.AsyncClient() as client:
        bad = await client.get(f"{gateway.http}/sse/events/filtered?types=bad%20glob")
        unfiltered = await client.get(f"{gateway.http}/sse/events?types=node.*")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    # As on WebSocket, filters are for the /filtered path: never silently ignored elsewhere.
    assert unfiltered.status_code == 400
    assert unfiltered.json()["error"]["message"] == "filters need /sse/events/filtered"


async def test_sse_heartbeat_comments(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_SSE_HEARTBEAT_SECONDS": "0.2"})
    async with open_sse(f"{gw.http}/sse/events") as sse:
        comments = 0
        while comments < 2:
            if (await sse.next(timeout=5)).comment == "heartbeat":
                comments += 1


async def test_sse_auth_401_403_and_expiry(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_JWT_SECRET": SECRET})
    async with httpx.AsyncClient() as client:
        missing = await client.get(f"{gw.http}/sse/events?channels=a.b")
        forbidden = await client.get(f"{gw.http}/sse/events?channels=b&token={make_token(['a.*'])}")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthenticated"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    token = make_token(["a.*"], exp_in=2)
    async with open_sse(f"{gw.http}/sse/events?channels=a.b", headers=bearer(token)) as sse:
        assert sse.response.status_code == 200
        assert (await sse.next_event()).event == "eventcast.welcome"
        closing = await sse.next_event(timeout=6)
        assert closing.event == "eventcast.close"
        assert closing.json() == {
            "type": "eventcast.close",
            "code": CloseCode.UNAUTHENTICATED,
            "reason": "token expired",
        }


async def test_sse_drain_sends_close_and_retry_hint(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_SSE_RETRY_MS": "2500"})
    async with open_sse(f"{gw.http}/sse/events") as sse:
        await sse.next_event()
        async with httpx.AsyncClient() as client:
            assert (
                await client.post(f"{gw.http}/admin/drain", json={"seconds": 0}, headers=gw.admin)
            ).status_code == 202
        closing = await sse.next_event()
        assert closing.event == "eventcast.close"
        assert closing.json()["code"] == CloseCode.SERVICE_RESTART
        assert (await sse.next()).retry == 2500
        with pytest.raises(StopAsyncIteration):
            await sse.next()
    async with httpx.AsyncClient() as client:
        refused = await client.get(f"{gw.http}/sse/events")
    assert refused.status_code == 503 and refused.headers["retry-after"]


async def test_sse_last_event_id_resume_after_restart_with_redis(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    first = gateway_factory(broker=redis_server.url)
    url = "/sse/events?channels=r1,r2"
    async with open_sse(first.http + url) as sse:
        await sse.next_event()
        await publish(first.http, batch("r1", 2))
        seen = [await sse.next_event() for _ in range(2)]
        last_id = seen[-1].id
    first.stop()

    second = gateway_factory(broker=redis_server.url)
    missed = (await publish(second.http, batch("r2", 3, 10) + batch("r1", 2, 20))).json()["ids"]
    await publish(second.http, batch("elsewhere", 2))
    async with open_sse(second.http + url, headers={"last-event-id": str(last_id)}) as sse:
        welcome = await sse.next_event()
        assert welcome.json()["recovered"] is True
        replayed = [await sse.next_event() for _ in range(5)]
        assert [m.id for m in replayed] == missed
        live = (await publish(second.http, batch("r1", 1, 30))).json()["ids"]
        assert (await sse.next_event()).id == live[0]
    # A Last-Event-ID that is not an eventcast id is a bad request.
    async with httpx.AsyncClient() as client:
        bad = await client.get(second.http + url, headers={"last-event-id": "nonsense"})
    assert bad.status_code == 400
    assert json.loads(bad.text)["error"]["code"] == "bad_request"
