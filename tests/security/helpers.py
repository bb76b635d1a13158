"""Shared helpers for the security tests: tokens, keys, an SSE client and a MessagePack subscriber."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import msgpack
from websockets.asyncio.client import ClientConnection, connect

SECRET = "hs256-test-secret-0123456789abcdef-do-not-log"


def make_token(
    channels: list[str] | str | None = None,
    *,
    exp_in: float | None = 300,
    publish: list[str] | None = None,
    key: Any = SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
) -> str:
    claims: dict[str, Any] = {"sub": "tester"}
    if channels is not None:
        claims["channels"] = channels
    if publish is not None:
        claims["publish"] = publish
    if exp_in is not None:
        claims["exp"] = int(time.time() + exp_in)
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@dataclass
class SSEMessage:
    event: str = "message"
    id: str | None = None
    data: str = ""
    retry: int | None = None
    comment: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEStream:
    """Parses a text/event-stream response block by block (comments and retry-only blocks included)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 10) -> SSEMessage:
        message, data, seen = SSEMessage(), [], False
        async with asyncio.timeout(timeout):
            while True:
                line = await anext(self._lines)
                if line == "":
                    if seen:
                        message.data = "\n".join(data)
                        return message
                    continue
                seen = True
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "":
                    message.comment = value
                elif name == "event":
                    message.event = value
                elif name == "id":
                    message.id = value
                elif name == "data":
                    data.append(value)
                elif name == "retry":
                    message.retry = int(value)

    async def next_event(self, timeout: float = 10) -> SSEMessage:
        """The next block that is not a comment or a bare retry hint."""
        while True:
            message = await self.next(timeout)
            if message.comment is None and (message.data or message.event != "message"):
                return message


@asynccontextmanager
async def open_sse(url: str, **kwargs: Any) -> AsyncIterator[SSEStream]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as client:
        async with client.stream("GET", url, **kwargs) as response:
            yield SSEStream(response)


class MsgpackSubscriber:
    """A subscriber speaking eventcast.v1.msgpack: binary frames, same envelope."""

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome

    @classmethod
    async def open(cls, url: str) -> MsgpackSubscriber:
        ws = await connect(url, subprotocols=["eventcast.v1.msgpack"], max_size=None)  # type: ignore[list-item]
        first = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(first, bytes), "msgpack frames are binary"
        return cls(ws, msgpack.unpackb(first))

    async def collect(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while len(events) < count:
                raw = await self.ws.recv()
                assert isinstance(raw, bytes)
                message = msgpack.unpackb(raw)
                if "id" in message:
                    events.append(message)
        return events
