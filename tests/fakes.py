"""A fake socket for unit tests of the one delivery path (app/connection.py), without a network.

``FakeSocket`` is a Transport with the native framing: it keeps the bytes a connection writes as a socket
would (``buffered``), a peer takes them (``take``) unless it is ``blocked``, and it calls the connection's
``on_writable`` when it drains below a quarter of the high-water mark after being above it, as uvloop's
``resume_writing`` does. It parses what was taken back into WebSocket frames, so tests read exactly what a
client would.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack

from app.connection import HIGH_WATER, Connection
from app.protocol import WELCOME_TYPE, Event, Frame, Framing, Position


def parse_ws_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """(opcode, payload) of every complete unmasked frame in ``data``, and what is left over."""
    frames: list[tuple[int, bytes]] = []
    offset = 0
    while len(data) - offset >= 2:
        first, second = data[offset], data[offset + 1]
        size, header = second & 0x7F, 2
        if size == 126:
            if len(data) - offset < 4:
                break
            size, header = int.from_bytes(data[offset + 2 : offset + 4], "big"), 4
        elif size == 127:
            if len(data) - offset < 10:
                break
            size, header = int.from_bytes(data[offset + 2 : offset + 10], "big"), 10
        if len(data) - offset < header + size:
            break
        frames.append((first & 0x0F, data[offset + header : offset + header + size]))
        offset += header + size
    return frames, data[offset:]


class FakeSocket:
    """A Transport as the native WebSocket is one: writes never await, a peer reads at its own pace."""

    kind = "websocket"

    def __init__(self, *, framing: Framing = Framing.WS_JSON, blocked: bool = False) -> None:
        self.framing = framing
        self.blocked = blocked
        self.conn: Connection | None = None
        self.writes: list[bytes] = []  # every write() call's bytes, as they came
        self.closed: tuple[int, str] | None = None
        self.frames: list[tuple[int, bytes]] = []  # what the peer took, as frames
        self._pending = bytearray()  # written, not yet taken by the peer
        self._rest = b""
        self._above = False
        self.high = HIGH_WATER

    def watermark(self, high: int) -> None:
        self.high = high

    # ------------------------------------------------------------------------------ Transport
    def write(self, frames: list[Frame]) -> None:
        data = b"".join(f if isinstance(f, bytes) else f.encode() for f in frames)
        self.writes.append(data)
        self._pending += data
        if len(self._pending) > self.high:
            self._above = True
        if not self.blocked:
            asyncio.get_running_loop().call_soon(self.take)

    def buffered(self) -> int:
        return len(self._pending)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        if not self.blocked and self.conn is not None:  # the client answers the close: the hub sees it go
            asyncio.get_running_loop().call_soon(self.conn.finished)

    # ------------------------------------------------------------------------------ the peer
    def take(self, limit: int | None = None) -> None:
        """The peer reads (up to ``limit`` bytes)."""
        size = len(self._pending) if limit is None else min(limit, len(self._pending))
        chunk, self._pending = bytes(self._pending[:size]), self._pending[size:]
        frames, self._rest = parse_ws_frames(self._rest + chunk)
        self.frames += frames
        if self._above and len(self._pending) <= self.high // 4:
            self._above = False
            if self.conn is not None:
                self.conn.on_writable()

    def unblock(self) -> None:
        self.blocked = False
        self.take()
        if self.closed is not None and self.conn is not None:
            self.conn.finished()

    # ------------------------------------------------------------------------------ what the peer saw
    @property
    def messages(self) -> list[dict[str, Any]]:
        decoded: list[dict[str, Any]] = []
        for opcode, payload in self.frames:
            if opcode == 0x1:
                decoded.append(json.loads(payload))
            elif opcode == 0x2:
                decoded.append(msgpack.unpackb(payload))
        return decoded

    @property
    def welcome(self) -> dict[str, Any]:
        first = self.messages[0]
        assert first["type"] == WELCOME_TYPE
        return first

    @property
    def events(self) -> list[dict[str, Any]]:
        messages = self.messages
        if not messages:
            return []
        assert messages[0]["type"] == WELCOME_TYPE, "the welcome frame comes first"
        return [m for m in messages[1:] if "id" in m]

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.events]


_DEFAULT: Any = object()


def make_event(
    type_: str = "node.created", data: Any = _DEFAULT, *, channel: str = "a", ts: float = 1700000000123.5
) -> Event:
    position = Position(1700000000123, 7)
    return Event(
        id=f"ab12cd34.{position}",
        position=position,
        channel=channel,
        type=type_,
        data_json=json.dumps(
            {"n": 1} if data is _DEFAULT else data, separators=(",", ":"), ensure_ascii=False
        ),
        ts=ts,
    )
