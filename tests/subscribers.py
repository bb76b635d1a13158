"""One client API over every transport, for the subscriber behaviour suite (tests/test_session.py).

``subscribe(kind, gateway, ...)`` opens a subscriber over the native WebSocket, the ASGI WebSocket or SSE
and returns a ``Client`` (welcome, events, close) or, when the gateway turned it away, the ``Outcome`` it
saw: an HTTP status, or a close code after the upgrade. ``expected(kind, cause)`` is what the causes table
(app/causes.py) says that transport must show for a cause, so every test asserts one rule for all three.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.causes import Cause
from tests.security.helpers import SSEMessage, SSEStream
from tests.servers import Gateway

WEBSOCKETS = ("native", "asgi")
TRANSPORTS = (*WEBSOCKETS, "sse")
#: The gateway setting each transport needs (the ASGI WebSocket is an engine of its own).
ENGINE_ENV = {"native": {}, "asgi": {"EVENTCAST_WS_ENGINE": "asgi"}, "sse": {}}


@dataclass(frozen=True)
class Outcome:
    """How a refusal looked to the client: an HTTP status, or a close code after the upgrade."""

    status: int | None = None
    code: int | None = None
    reason: str = ""

    def same_as(self, other: Outcome) -> bool:
        return (self.status, self.code) == (other.status, other.code)


def expected(kind: str, cause: Cause) -> Outcome:
    """What ``kind`` must show for ``cause``: the rule of the causes table."""
    ending = cause.ending
    if kind == "sse" or ending.before_upgrade:
        return Outcome(status=ending.status)
    return Outcome(code=ending.code)


class Client:
    """A subscriber over any transport."""

    kind: str
    welcome: dict[str, Any]
    events: list[dict[str, Any]]

    async def next_event(self, timeout: float = 10) -> dict[str, Any]:
        raise NotImplementedError

    async def collect(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                await self.next_event(timeout)
        return self.events

    async def closed(self, timeout: float = 15) -> Outcome:
        """Read until the server ends the stream: its close code and reason (1006 when it just hung up)."""
        raise NotImplementedError

    async def send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError(f"{self.kind} has no way to send")

    async def close(self) -> None:
        raise NotImplementedError

    @property
    def ids(self) -> list[str]:
        return [event["id"] for event in self.events]

    @property
    def last_id(self) -> str:
        return str(self.events[-1]["id"]) if self.events else str(self.welcome["position"])


class WsClient(Client):
    def __init__(self, kind: str, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.kind, self.ws, self.welcome, self.events = kind, ws, welcome, []
        self.controls: list[dict[str, Any]] = []

    async def next_event(self, timeout: float = 10) -> dict[str, Any]:
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if "id" in message:
                self.events.append(message)
                return message
            self.controls.append(message)

    async def next_control(self, timeout: float = 10) -> dict[str, Any]:
        while not self.controls:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            (self.events if "id" in message else self.controls).append(message)
        return self.controls.pop(0)

    async def closed(self, timeout: float = 15) -> Outcome:
        try:
            async with asyncio.timeout(timeout):
                async for raw in self.ws:
                    message = json.loads(raw)
                    if "id" in message:
                        self.events.append(message)
        except ConnectionClosed:
            pass
        received = self.ws.protocol.close_rcvd
        return Outcome(code=received.code, reason=received.reason) if received else Outcome(code=1006)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    def pause(self) -> None:
        self.ws.transport.pause_reading()

    def resume(self) -> None:
        self.ws.transport.resume_reading()

    async def close(self) -> None:
        await self.ws.close()


class SseClient(Client):
    kind = "sse"

    def __init__(self, http: httpx.AsyncClient, stream: SSEStream, welcome: dict[str, Any]) -> None:
        self.http, self.stream, self.welcome, self.events = http, stream, welcome, []
        self.comments: list[str] = []
        self.close_event: dict[str, Any] | None = None

    async def _next(self, timeout: float) -> SSEMessage | None:
        try:
            message = await self.stream.next(timeout)
        except StopAsyncIteration:
            return None
        if message.comment is not None:
            self.comments.append(message.comment)
        elif message.event == "eventcast.close":
            self.close_event = message.json()
        elif message.event == "message" and message.data:
            self.events.append(message.json())
        return message

    async def next_event(self, timeout: float = 10) -> dict[str, Any]:
        count = len(self.events)
        async with asyncio.timeout(timeout):
            while len(self.events) == count:
                if await self._next(timeout) is None:
                    raise ConnectionError("the stream ended")
        return self.events[-1]

    async def next_comment(self, timeout: float = 10) -> str:
        count = len(self.comments)
        async with asyncio.timeout(timeout):
            while len(self.comments) == count:
                if await self._next(timeout) is None:
                    raise ConnectionError("the stream ended")
        return self.comments[-1]

    async def closed(self, timeout: float = 15) -> Outcome:
        try:
            async with asyncio.timeout(timeout):
                while self.close_event is None and await self._next(timeout) is not None:
                    pass
        except (httpx.HTTPError, ConnectionError):
            pass
        await self.close()
        if self.close_event is None:
            return Outcome(code=1006)
        return Outcome(code=self.close_event["code"], reason=self.close_event["reason"])

    async def close(self) -> None:
        await self.stream.response.aclose()
        await self.http.aclose()


def url_for(kind: str, gateway: Gateway, path: str = "/events", query: str = "") -> str:
    base = f"{gateway.ws}/ws" if kind in WEBSOCKETS else f"{gateway.http}/sse"
    return f"{base}{path}" + (f"?{query}" if query else "")


async def subscribe(
    kind: str,
    gateway: Gateway,
    query: str = "",
    *,
    path: str = "/events",
    headers: dict[str, str] | None = None,
    small_buffer: bool = False,
    timeout: float = 10,
) -> Client | Outcome:
    """A subscriber, or the Outcome of its refusal. ``small_buffer``: a tiny receive buffer (WebSocket), so
    that a client that stops reading is found slow after little data."""
    url = url_for(kind, gateway, path, query)
    if kind in WEBSOCKETS:
        options: dict[str, Any] = {"max_size": None, "ping_interval": None, "open_timeout": timeout}
        if headers:
            options["additional_headers"] = headers
        if small_buffer:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((gateway.host, gateway.port))
            options["sock"] = sock
        try:
            ws = await connect(url, **options)
        except InvalidStatus as exc:
            return Outcome(status=exc.response.status_code)
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        except ConnectionClosed:
            received = ws.protocol.close_rcvd
            return Outcome(
                code=received.code if received else 1006, reason=received.reason if received else ""
            )
        assert first["type"] == "eventcast.welcome", first
        return WsClient(kind, ws, first)
    http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=120))
    response = await http.send(http.build_request("GET", url, headers=headers), stream=True)
    if response.status_code != 200:
        body = json.loads(await response.aread())
        await response.aclose()
        await http.aclose()
        return Outcome(status=response.status_code, reason=body["error"]["message"])
    stream = SSEStream(response)
    while True:
        message = await stream.next(timeout)
        if message.event == "eventcast.welcome":
            return SseClient(http, stream, message.json())
        if message.event == "eventcast.close":  # refused after the stream started (attach failed)
            close = message.json()
            await response.aclose()
            await http.aclose()
            return Outcome(code=close["code"], reason=close["reason"])


async def open_client(kind: str, gateway: Gateway, query: str = "", **kwargs: Any) -> Client:
    """A subscriber that must be accepted."""
    client = await subscribe(kind, gateway, query, **kwargs)
    assert isinstance(client, Client), f"refused: {client}"
    return client
