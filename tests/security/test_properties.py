"""Property: no event, however malformed, stops delivery to anyone, and no answer is a 5xx.

Hypothesis publishes arbitrary JSON (and arbitrary bytes) over HTTP, and arbitrary bytes and field sets
straight into the Redis log, to a real gateway on a real Redis with a JSON WebSocket, a MessagePack WebSocket
and an SSE subscriber attached. After every case a good event must reach all three, and the gateway must
still be ready.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect

from tests.security.helpers import SSEStream
from tests.servers import Gateway, RedisServer

CHANNEL = "p"
LOG_KEY = "eventcast:log"
EXAMPLES = 60

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
names = st.sampled_from([CHANNEL, "other"]) | st.text(max_size=12)
deep_text = st.integers(200, 1200).map(lambda depth: "[" * depth + "]" * depth)


@st.composite
def http_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["event", "batch", "deep", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        return f'{{"channel": "{CHANNEL}", "type": "t", "data": {draw(deep_text)}}}'.encode()
    event = {"channel": draw(names), "type": draw(names), "data": draw(json_values)}
    if kind == "batch":
        return json.dumps([event, {"channel": CHANNEL, "type": "t", "data": draw(json_values)}]).encode()
    return json.dumps(event).encode()


field_values = (
    st.binary(max_size=120) | json_values.map(lambda v: json.dumps(v).encode()) | deep_text.map(str.encode)
)


@st.composite
def log_entries(draw: st.DrawFn) -> dict[bytes, bytes]:
    fields = draw(
        st.dictionaries(
            st.sampled_from([b"channel", b"type", b"data", b"ts", b"trace"])
            | st.binary(min_size=1, max_size=8),
            field_values,
            min_size=1,
            max_size=6,
        )
    )
    if draw(st.booleans()):
        fields[b"channel"] = CHANNEL.encode()  # most land where the subscribers listen
    return fields


class Subscribers:
    """A JSON WebSocket, a MessagePack WebSocket and an SSE stream on ``CHANNEL``."""

    def __init__(
        self, json_ws: ClientConnection, msgpack_ws: ClientConnection, http: httpx.AsyncClient, sse: SSEStream
    ) -> None:
        self.json_ws, self.msgpack_ws, self.http, self.sse = json_ws, msgpack_ws, http, sse

    @classmethod
    async def open(cls, gateway: Gateway) -> Subscribers:
        url = f"{gateway.ws}/ws/events?channels={CHANNEL}"
        json_ws = await connect(url, max_size=None)
        msgpack_ws = await connect(url, max_size=None, subprotocols=["eventcast.v1.msgpack"])  # type: ignore[list-item]
        await json_ws.recv()
        await msgpack_ws.recv()
        http = httpx.AsyncClient(timeout=httpx.Timeout(10, read=60))
        response = await http.send(
            http.build_request("GET", f"{gateway.http}/sse/events?channels={CHANNEL}"), stream=True
        )
        sse = SSEStream(response)
        while (await sse.next()).event != "eventcast.welcome":
            pass
        return cls(json_ws, msgpack_ws, http, sse)

    async def wait_for(self, marker: int) -> None:
        """Every subscriber receives the good event ``marker`` (skipping whatever came before it)."""

        async def websocket(ws: ClientConnection, decode: Any) -> None:
            while True:
                message = decode(await ws.recv())
                if message.get("type") == "marker" and message["data"] == {"n": marker}:
                    return

        async def sse() -> None:
            while True:
                message = await self.sse.next_event(timeout=10)
                if message.event == "message" and message.json().get("type") == "marker":
                    if message.json()["data"] == {"n": marker}:
                        return

        async with asyncio.timeout(10):
            await asyncio.gather(
                websocket(self.json_ws, json.loads), websocket(self.msgpack_ws, msgpack.unpackb), sse()
            )

    async def close(self) -> None:
        await self.json_ws.close()
        await self.msgpack_ws.close()
        await self.sse.response.aclose()
        await self.http.aclose()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_nothing_published_or_written_to_the_log_stops_delivery(
    redis_server: RedisServer, gateway_factory: Any, loop: asyncio.AbstractEventLoop
) -> None:
    gateway = gateway_factory(broker=redis_server.url)
    run = loop.run_until_complete
    subscribers = run(Subscribers.open(gateway))
    http = httpx.AsyncClient(timeout=10)
    raw = aioredis.Redis.from_url(redis_server.url)  # writes bytes as given
    counter = iter(range(10**9))

    async def check() -> None:
        marker = next(counter)
        good = await http.post(
            f"{gateway.http}/events", json={"channel": CHANNEL, "type": "marker", "data": {"n": marker}}
        )
        assert good.status_code == 202, good.text
        await subscribers.wait_for(marker)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=http_bodies())
    def published(body: bytes) -> None:
        async def case() -> None:
            answer = await http.post(
                f"{gateway.http}/events", content=body, headers={"content-type": "application/json"}
            )
            assert answer.status_code < 500, (answer.status_code, answer.text)
            await check()

        run(case())

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(fields=log_entries())
    def produced(fields: dict[bytes, bytes]) -> None:
        async def case() -> None:
            await raw.xadd(LOG_KEY, fields)  # type: ignore[arg-type]
            await check()

        run(case())

    try:
        published()
        produced()
        ready = run(http.get(f"{gateway.http}/readyz"))
        assert ready.status_code == 200 and ready.json()["broker"] == "up"
    finally:
        run(subscribers.close())
        run(http.aclose())
        run(raw.aclose())
