"""The subscriber behaviour suite: one set of rules, run once per transport (native WebSocket, ASGI WebSocket,
SSE) against real gateways, through one parametrised fixture and one client API (tests/subscribers.py).

Where a transport must say something differently (an HTTP status instead of a close code), the expectation
comes from the causes table (app/causes.py) through ``expected``; nothing here is written per transport.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.causes import Cause, CloseCode
from tests.clients import batch, publish
from tests.observability.helpers import scrape, value
from tests.security.helpers import SECRET, make_token
from tests.servers import Gateway
from tests.subscribers import (
    ENGINE_ENV,
    TRANSPORTS,
    WEBSOCKETS,
    Client,
    Outcome,
    WsClient,
    expected,
    open_client,
    subscribe,
)

GatewayMaker = Callable[..., Gateway]


@pytest.fixture(params=TRANSPORTS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_gateway(kind: str, gateway_factory: GatewayMaker) -> GatewayMaker:
    """Gateways serving ``kind`` (the ASGI WebSocket is an engine setting of its own)."""

    def make(**kwargs: Any) -> Gateway:
        env = {**ENGINE_ENV[kind], **kwargs.pop("env", {})}
        return gateway_factory(env=env, **kwargs)

    return make


def counted(gateway: Gateway, counter: str, label: str) -> float:
    """A counter's value for one ``reason`` label, scraped from the gateway."""
    _, samples = scrape(f"{gateway.http}/metrics")
    return value(samples, f"eventcast_connections_{counter}_total", reason=label)


def refused_total(gateway: Gateway, label: str) -> float:
    return counted(gateway, "refused", label)


# ------------------------------------------------------------------------------------ welcome and order
async def test_the_welcome_comes_first_then_every_event_in_order(
    kind: str, make_gateway: GatewayMaker
) -> None:
    gateway = make_gateway()
    client = await open_client(kind, gateway, "channels=a,b")
    welcome = client.welcome
    assert welcome["type"] == "eventcast.welcome"
    assert (welcome["recovered"], welcome["reason"], welcome["channels"]) == (False, "no_since", ["a", "b"])
    assert welcome["replica"] == f"gw-{gateway.port}" and welcome["protocol"] == "eventcast.v1.json"
    ids = (await publish(gateway.http, [*batch("a", 5), *batch("c", 2), *batch("b", 5)])).json()["ids"]
    received = await client.collect(10)
    assert [e["id"] for e in received] == ids[:5] + ids[7:]
    assert set(received[0]) == {"id", "channel", "type", "data", "ts"}
    await client.close()


# ------------------------------------------------------------------------------------ filters
async def test_filters_on_the_filtered_path(kind: str, make_gateway: GatewayMaker) -> None:
    gateway = make_gateway()
    client = await open_client(kind, gateway, "channels=g&types=edge.*&where=repo=a", path="/events/filtered")
    events = [
        {"channel": "g", "type": "edge.added", "data": {"repo": "a", "n": 1}},
        {"channel": "g", "type": "node.added", "data": {"repo": "a", "n": 2}},
        {"channel": "g", "type": "edge.added", "data": {"repo": "b", "n": 3}},
        {"channel": "g", "type": "edge.removed", "data": {"repo": "a", "n": 4}},
    ]
    await publish(gateway.http, events)
    assert [e["data"]["n"] for e in await client.collect(2)] == [1, 4]
    await client.close()


async def test_filters_on_the_plain_path_are_refused_not_ignored(
    kind: str, make_gateway: GatewayMaker
) -> None:
    gateway = make_gateway()
    outcome = await subscribe(kind, gateway, "channels=g&types=edge.*")
    assert isinstance(outcome, Outcome) and outcome.same_as(expected(kind, Cause.BAD_QUERY))
    assert outcome.reason.startswith("filters need /")


@pytest.mark.parametrize("kind", WEBSOCKETS)
async def test_a_websocket_client_replaces_its_filter_in_band(kind: str, make_gateway: GatewayMaker) -> None:
    gateway = make_gateway()
    client = await open_client(kind, gateway, "channels=g&types=a.*", path="/events/filtered")
    assert isinstance(client, WsClient)
    await client.send({"op": "filter", "types": ["b.*"]})
    assert await client.next_control() == {"type": "eventcast.filter", "ok": True}
    await publish(gateway.http, [{"channel": "g", "type": t, "data": {"t": t}} for t in ("a.x", "b.x")])
    assert [e["type"] for e in await client.collect(1)] == ["b.x"]
    await client.send({"op": "ping"})
    assert await client.next_control() == {"type": "eventcast.pong"}
    await client.send({"op": "filter", "types": "not a list"})
    assert await client.closed() == Outcome(
        code=CloseCode.BAD_REQUEST, reason="filter needs types: [globs] and where: {field: value}"
    )


# ------------------------------------------------------------------------------------ resume
async def test_resume_gives_what_was_missed_then_live_without_gaps_or_repeats(
    kind: str, make_gateway: GatewayMaker
) -> None:
    gateway = make_gateway()
    client = await open_client(kind, gateway, "channels=r")
    first = (await publish(gateway.http, batch("r", 3))).json()["ids"]
    await client.collect(3)
    await client.close()
    missed = (await publish(gateway.http, batch("r", 4, start=3))).json()["ids"]
    back = await open_client(kind, gateway, f"channels=r&since={first[-1]}")
    assert back.welcome["recovered"] is True
    live = (await publish(gateway.http, batch("r", 2, start=7))).json()["ids"]
    assert back.ids == [] and [e["id"] for e in await back.collect(6)] == missed + live
    await asyncio.sleep(0.2)
    assert len(back.events) == 6  # nothing twice
    gap = await open_client(kind, gateway, "channels=r&since=ffffffff.1-0")
    assert (gap.welcome["recovered"], gap.welcome["reason"]) == (False, "epoch_changed")
    await back.close()
    await gap.close()


# ------------------------------------------------------------------------------------ slow consumers
async def test_a_client_that_stops_reading_is_closed_4008_and_can_resume(
    kind: str, make_gateway: GatewayMaker
) -> None:
    gateway = make_gateway(
        env={"EVENTCAST_SEND_QUEUE_BYTES": "262144", "EVENTCAST_IDLE_TIMEOUT_SECONDS": "300"}
    )
    slow = await open_client(kind, gateway, "channels=s", small_buffer=True)
    bystander = await open_client(kind, gateway, "channels=s")
    if isinstance(slow, WsClient):
        slow.pause()
    payload = "x" * 20_000
    ids: list[str] = []
    for start in range(0, 1200, 10):  # 24 MB: past what loopback socket buffers can hide
        # 200 KB a publish: within the 256 KB bound of a client that reads.
        events = [
            {"channel": "s", "type": "big", "data": {"n": n, "p": payload}} for n in range(start, start + 10)
        ]
        ids += (await publish(gateway.http, events)).json()["ids"]
        await bystander.collect(len(ids), timeout=60)  # a client that reads keeps up
    if isinstance(slow, WsClient):
        slow.resume()
    outcome = await slow.closed(timeout=60)
    assert (outcome.code, outcome.reason) == (CloseCode.SLOW_CONSUMER, "slow consumer")
    # What it got is a gap-free prefix, and a resume from it delivers the rest.
    assert slow.ids == ids[: len(slow.ids)] and len(slow.ids) < len(ids)
    back = await open_client(kind, gateway, f"channels=s&since={slow.last_id}")
    assert back.welcome["recovered"] is True
    assert [e["id"] for e in await back.collect(len(ids) - len(slow.ids), timeout=60)] == ids[len(slow.ids) :]
    await back.close()
    await bystander.close()


# ------------------------------------------------------------------------------------ drain and shed
@pytest.mark.parametrize(
    ("op", "body", "reason"),
    [("shed", {"fraction": 1}, "service restart: shed"), ("drain", {"seconds": 0}, "service restart: drain")],
)
async def test_shed_and_drain_close_with_1012_and_say_which(
    kind: str, make_gateway: GatewayMaker, op: str, body: dict[str, Any], reason: str
) -> None:
    gateway = make_gateway()
    clients = [await open_client(kind, gateway, "channels=d") for _ in range(3)]
    ids = (await publish(gateway.http, batch("d", 2))).json()["ids"]
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{gateway.http}/admin/{op}", json=body, headers=gateway.admin)
    assert answer.status_code == 202, answer.text
    for client in clients:
        assert await client.closed() == Outcome(code=CloseCode.SERVICE_RESTART, reason=reason)
        assert client.ids == ids  # what was queued went out before the close
    if op == "drain":
        outcome = await subscribe(kind, gateway, "channels=d")
        assert isinstance(outcome, Outcome) and outcome.same_as(expected(kind, Cause.DRAINING))


# ------------------------------------------------------------------------------------ refusals
async def test_refusals_follow_the_table_and_are_counted_once(kind: str, make_gateway: GatewayMaker) -> None:
    gateway = make_gateway(
        env={
            "EVENTCAST_JWT_SECRET": SECRET,
            "EVENTCAST_ALLOWED_ORIGINS": "https://app.example.com",
            "EVENTCAST_MAX_CONNECTIONS": "1",
        }
    )
    token = make_token(["r.*"])
    cases: list[tuple[Cause, str, dict[str, str] | None, str]] = [
        (Cause.UNAUTHENTICATED, "channels=r.a", None, "unauthenticated"),
        (Cause.UNAUTHENTICATED, f"channels=r.a&token={token}x", None, "unauthenticated"),
        (Cause.FORBIDDEN, f"channels=other&token={token}", None, "forbidden"),
        (Cause.ORIGIN, f"channels=r.a&token={token}", {"origin": "https://evil.example"}, "forbidden"),
        (Cause.BAD_QUERY, f"channels=r.a&token={token}&since=garbage", None, "bad_request"),
        (Cause.BAD_QUERY, f"channels=a%20b&token={token}", None, "bad_request"),
    ]
    for cause, query, headers, label in cases:
        before = refused_total(gateway, label)
        outcome = await subscribe(kind, gateway, query, headers=headers)
        assert isinstance(outcome, Outcome), (cause, query)
        assert outcome.same_as(expected(kind, cause)), (cause, outcome)
        assert refused_total(gateway, label) == before + 1, (cause, label)
    held = await open_client(kind, gateway, f"channels=r.a&token={token}")  # the one connection allowed
    outcome = await subscribe(kind, gateway, f"channels=r.a&token={token}")
    assert isinstance(outcome, Outcome) and outcome.same_as(expected(kind, Cause.OVERLOAD))
    await held.close()


# ------------------------------------------------------------------------------------ token expiry
async def test_the_connection_is_closed_when_its_token_expires(kind: str, make_gateway: GatewayMaker) -> None:
    gateway = make_gateway(env={"EVENTCAST_JWT_SECRET": SECRET})
    client = await open_client(kind, gateway, f"channels=t&token={make_token(['t'], exp_in=2)}")
    started = time.monotonic()
    assert await client.closed(timeout=15) == Outcome(code=CloseCode.UNAUTHENTICATED, reason="token expired")
    assert time.monotonic() - started < 10


# ------------------------------------------------------------------------------------ keepalive
async def test_keepalive_finds_silent_clients(kind: str, make_gateway: GatewayMaker) -> None:
    """WebSocket: the server pings, and a client that answers nothing for the idle timeout is closed
    (native: the gateway's sweeper; ASGI: uvicorn's pings). SSE: heartbeat comments keep the stream
    alive and find dead clients by failing to write."""
    gateway = make_gateway(
        env={"EVENTCAST_IDLE_TIMEOUT_SECONDS": "2", "EVENTCAST_SSE_HEARTBEAT_SECONDS": "0.5"}
    )
    client = await open_client(kind, gateway, "channels=k")
    if isinstance(client, WsClient):
        client.pause()  # reads nothing, so it answers no ping
        started = time.monotonic()
        await asyncio.sleep(4)
        client.resume()
        outcome = await client.closed()
        assert outcome.code in (CloseCode.INTERNAL_ERROR, 1006), outcome
        assert time.monotonic() - started < 15
    else:
        assert isinstance(client, Client)
        assert await client.next_comment(timeout=5) == "heartbeat"  # type: ignore[attr-defined]
        await client.close()


async def test_filters_apply_to_replayed_history(kind: str, make_gateway: GatewayMaker) -> None:
    gateway = make_gateway()
    first = await open_client(kind, gateway, "channels=g", path="/events/filtered")
    position = first.welcome["position"]
    await first.close()
    events = [
        {"channel": "g", "type": "node.created", "data": {"n": 1}},
        {"channel": "g", "type": "edge.added", "data": {"n": 2}},
        {"channel": "g", "type": "edge.added", "data": [1, 2]},
    ]
    await publish(gateway.http, events)
    back = await open_client(
        kind, gateway, f"channels=g&types=edge.added&since={position}", path="/events/filtered"
    )
    assert back.welcome["recovered"] is True
    assert [e["data"] for e in await back.collect(2)] == [{"n": 2}, [1, 2]]
    await back.close()


# ------------------------------------------------------------------------------------ what a client sends
@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{not json", "malformed control message: not valid JSON"),
        ('["op"]', "control message must be an object with an op"),
        ('{"op": "subscribe-all"}', "unknown op 'subscribe-all'"),
        ('{"op": "filter", "types": "x"}', "filter needs types"),
        ('{"op": "filter", "types": ["[a"]}', "bad glob '[a' in types"),
        ('{"op": "filter", "where": {"k": {"x": 1}}}', "where k: only scalar"),
        ('{"op": "filter", "types": ["a*a*a*a*a*a*a*a*a*"]}', "glob 'a*a*a*a*a*a*a*a*a*' has more than"),
    ],
)
@pytest.mark.parametrize("kind", WEBSOCKETS)
async def test_a_bad_control_message_closes_4400_with_a_reason_and_others_keep_going(
    kind: str, make_gateway: GatewayMaker, frame: str, reason: str
) -> None:
    gateway = make_gateway()
    bystander = await open_client(kind, gateway, "channels=calm")
    client = await open_client(kind, gateway, "channels=x")
    assert isinstance(client, WsClient)
    await client.ws.send(frame)
    outcome = await client.closed()
    assert outcome.code == CloseCode.BAD_REQUEST and outcome.reason.startswith(reason)
    ids = (await publish(gateway.http, batch("calm", 2))).json()["ids"]
    assert [e["id"] for e in await bystander.collect(2)] == ids
    await bystander.close()


@pytest.mark.parametrize("kind", WEBSOCKETS)
async def test_frames_past_the_limits_close_1009_1007_and_1008(kind: str, make_gateway: GatewayMaker) -> None:
    gateway = make_gateway(env={"EVENTCAST_MAX_CONTROL_BYTES": "1024", "EVENTCAST_CLIENT_FRAME_BURST": "10"})
    big = await open_client(kind, gateway, "channels=x")
    assert isinstance(big, WsClient)
    await big.ws.send('{"op": "filter", "types": ["' + "a" * 2000 + '"]}')
    assert (await big.closed()).code == CloseCode.TOO_BIG
    utf = await open_client(kind, gateway, "channels=x")
    assert isinstance(utf, WsClient)
    await utf.ws.send(b"\xff\xfe", text=True)  # a text frame that is not UTF-8
    assert (await utf.closed()).code == CloseCode.INVALID_DATA  # RFC 6455 8.1
    chatty = await open_client(kind, gateway, "channels=x")
    assert isinstance(chatty, WsClient)
    for _ in range(30):  # past a burst of 10 frames
        await chatty.ws.send('{"op": "ping"}')
    outcome = await chatty.closed()
    assert (outcome.code, outcome.reason) == (CloseCode.POLICY, "too many messages: slow down")
