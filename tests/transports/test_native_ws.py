"""app/transports/native_ws.py over real sockets: permessage-deflate compressed once per event, and what a
client may send (fragmented, compressed) within its limits."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable

from websockets.asyncio.client import connect

from app.causes import CloseCode
from app.protocol import Event, Framing, Position
from tests.clients import Subscriber, batch, close_code, publish
from tests.servers import Gateway

GatewayMaker = Callable[..., Gateway]
DEFLATE = {"EVENTCAST_WS_PER_MESSAGE_DEFLATE": "true"}


def test_a_compressed_frame_is_built_once_and_inflates_on_its_own() -> None:
    event = Event("e1.1-0", Position(1, 0), "c", "t", json.dumps({"text": "x" * 500}), 1.0)
    frame = event.frame(Framing.WS_JSON_DEFLATE)
    assert isinstance(frame, bytes) and event.frame(Framing.WS_JSON_DEFLATE) is frame
    assert frame[0] == 0xC1  # FIN, RSV1 (compressed), text
    size, offset = frame[1] & 0x7F, 2
    if size == 126:
        size, offset = int.from_bytes(frame[2:4], "big"), 4
    payload = zlib.decompressobj(wbits=-15).decompress(frame[offset : offset + size] + b"\x00\x00\xff\xff")
    assert payload.decode() == event.frame(Framing.JSON)
    assert len(frame) < len(event.frame(Framing.WS_JSON))  # type: ignore[arg-type]


async def test_deflate_clients_and_plain_clients_get_the_same_events(gateway_factory: GatewayMaker) -> None:
    gateway = gateway_factory(env=DEFLATE)
    compressed = await Subscriber.open(f"{gateway.ws}/ws/events?channels=z")  # websockets offers deflate
    assert compressed.ws.protocol.extensions, "deflate was agreed"
    plain = await Subscriber.open(f"{gateway.ws}/ws/events?channels=z", compression=None)
    assert not plain.ws.protocol.extensions
    ids = (
        await publish(gateway.http, [*batch("z", 5), {"channel": "z", "type": "big", "data": "y" * 5000}])
    ).json()["ids"]
    for sub in (compressed, plain):
        got = await sub.collect(6)
        assert [e["id"] for e in got] == ids and got[-1]["data"] == "y" * 5000
    # A compressed control message from the client is understood (and answered uncompressed).
    await compressed.ws.send('{"op": "ping"}')
    assert json.loads(await compressed.ws.recv()) == {"type": "eventcast.pong"}
    await compressed.close()
    await plain.close()


async def test_a_compressed_message_that_inflates_past_the_limit_is_closed_1009(
    gateway_factory: GatewayMaker,
) -> None:
    gateway = gateway_factory(env={**DEFLATE, "EVENTCAST_MAX_CONTROL_BYTES": "4096"})
    bystander = await Subscriber.open(f"{gateway.ws}/ws/events?channels=calm")
    async with connect(f"{gateway.ws}/ws/events", max_size=None) as ws:
        await ws.recv()  # welcome
        await ws.send('{"op": "ping", "pad": "' + "a" * 1_000_000 + '"}')  # ~1 KB on the wire, 1 MB inflated
        try:
            async for _ in ws:
                pass
        except Exception:
            pass
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == CloseCode.TOO_BIG
    ids = (await publish(gateway.http, batch("calm", 1))).json()["ids"]
    assert [e["id"] for e in await bystander.collect(1)] == ids


async def test_a_fragmented_message_is_put_back_together(gateway: Gateway) -> None:
    async with connect(f"{gateway.ws}/ws/events", max_size=None) as ws:
        await ws.recv()
        await ws.send(iter(['{"op": ', '"ping"}']))  # two frames: TEXT (not final), CONT
        assert json.loads(await ws.recv()) == {"type": "eventcast.pong"}
    assert await close_code(f"{gateway.ws}/ws/events", send='{"op": "nope"}') == (
        CloseCode.BAD_REQUEST,
        "unknown op 'nope'",
    )
