"""MessagePack and JSON subscribers of one channel get identical events; permessage-deflate is opt-in."""

from __future__ import annotations

from collections.abc import Callable

from websockets.asyncio.client import connect

from tests.clients import Subscriber, publish
from tests.security.helpers import MsgpackSubscriber
from tests.servers import Gateway

EVENTS = [
    {
        "channel": "mix",
        "type": "node.created",
        "data": {"k": "é", "n": 1, "f": 1.5, "ok": True, "none": None},
    },
    {"channel": "mix", "type": "edge.removed", "data": [1, "two", {"3": [4]}]},
    {"channel": "mix", "type": "scalar", "data": "just a string"},
    {"channel": "mix", "type": "big", "data": {"n": 2**40, "neg": -7, "nested": {"deep": {"deeper": []}}}},
]


async def test_msgpack_and_json_clients_get_identical_events(gateway: Gateway) -> None:
    url = f"{gateway.ws}/ws/events?channels=mix"
    as_json = await Subscriber.open(url)
    as_msgpack = await MsgpackSubscriber.open(url)
    assert as_msgpack.welcome["type"] == "eventcast.welcome"
    assert as_msgpack.welcome["protocol"] == "eventcast.v1.msgpack"
    response = await publish(gateway.http, EVENTS)
    assert response.status_code == 202
    from_json = await as_json.collect(len(EVENTS))
    from_msgpack = await as_msgpack.collect(len(EVENTS))
    assert from_msgpack == from_json
    assert [e["id"] for e in from_msgpack] == response.json()["ids"]
    assert [e["data"] for e in from_msgpack] == [e["data"] for e in EVENTS]
    await as_json.close()
    await as_msgpack.ws.close()


async def test_permessage_deflate_is_off_by_default(gateway: Gateway) -> None:
    async with connect(f"{gateway.ws}/ws/events", compression="deflate") as ws:
        assert ws.response is not None
        assert "sec-websocket-extensions" not in ws.response.headers
        assert ws.protocol.extensions == []


async def test_permessage_deflate_can_be_turned_on(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_WS_PER_MESSAGE_DEFLATE": "true"})
    async with connect(f"{gw.ws}/ws/events", compression="deflate") as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers["sec-websocket-extensions"]
    sub = await Subscriber.open(f"{gw.ws}/ws/events?channels=z", compression="deflate")
    await publish(gw.http, {"channel": "z", "type": "t", "data": "x" * 10_000})
    assert (await sub.collect(1))[0]["data"] == "x" * 10_000
    await sub.close()
