"""Real WebSocket and HTTP clients for tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class Subscriber:
    """A websockets client that keeps the welcome frame and parses event frames."""

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, url: str, *, timeout: float = 10, **kwargs: Any) -> Subscriber:
        ws = await asyncio.wait_for(connect(url, max_size=None, open_timeout=timeout, **kwargs), timeout)
        first = await asyncio.wait_for(ws.recv(), timeout)
        welcome = json.loads(first)
        assert welcome["type"] == "eventcast.welcome", welcome
        return cls(ws, welcome)

    async def next_event(self, timeout: float = 10) -> dict[str, Any]:
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if "id" in message:
                self.events.append(message)
                return message

    async def collect(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                await self.next_event(timeout)
        return self.events

    async def closed(self, timeout: float = 10) -> tuple[int, str]:
        """Read until the server closes; return its (code, reason)."""
        try:
            async with asyncio.timeout(timeout):
                async for raw in self.ws:
                    message = json.loads(raw)
                    if "id" in message:
                        self.events.append(message)
        except ConnectionClosed:
            pass
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd is not None else (1006, "")

    @property
    def last_id(self) -> str:
        return str(self.events[-1]["id"]) if self.events else str(self.welcome["position"])

    async def close(self) -> None:
        await self.ws.close()


async def close_code(
    url: str, send: str | bytes | None = None, timeout: float = 10, **kwargs: Any
) -> tuple[int, str]:
    """Connect (optionally send one frame) and return the server's close (code, reason)."""
    async with connect(url, max_size=None, **kwargs) as ws:
        if send is not None:
            await ws.send(send)
        try:
            async with asyncio.timeout(timeout):
                async for _ in ws:
                    pass
        except ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd is not None else (1006, "")


async def publish(base: str, events: list[dict[str, Any]] | dict[str, Any], **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{base}/events", json=events, **kwargs)


def batch(channel: str, count: int, start: int = 0, type: str = "test.event") -> list[dict[str, Any]]:
    return [{"channel": channel, "type": type, "data": {"n": n}} for n in range(start, start + count)]


RAW_UPGRADE = (
    b"GET /ws/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def raw_subscriber(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare socket past the upgrade (101 read): for tests that need many clients or raw frames."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(RAW_UPGRADE)
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n")[0], head
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of the next unmasked server frame."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(size)
