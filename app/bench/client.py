"""The subscriber side of the load generator: one light WebSocket client per simulated user.

`RawClient` is a minimal RFC 6455 client written on an asyncio `Protocol`: it does the opening handshake,
parses unmasked server frames straight out of the receive buffer, answers pings, and hands every text frame
to its `Tracker` with the time the bytes arrived. It is several times cheaper per frame than the
`websockets` asyncio client (`--client websockets`, kept as `LibraryClient` for comparison), which matters
because the load generator must never be what limits a measurement.

`Tracker` does the per-client bookkeeping of a measurement phase: which event sequence numbers arrived (a
bitmap, so duplicates are exact), order per publisher stream, latency into a shared histogram, and the
latest arrival per event (to compute the time until the last client had an event).
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import hashlib
import json
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from app.bench import stats
from app.bench.fastcount import CTracker

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL = 1000
MAX_HANDSHAKE_BYTES = 65536

# The bench publishes data {"bench": <phase>, "seq": <n>[, "ts": <publisher clock>], "pad": "..."}; one regex
# reads phase, seq and the time without json.loads, in one pass over the frame. The time is the publisher's
# own "ts" right after seq when the body carries one (peer comparisons: the same clock for every server),
# else the last "ts" of the frame (the gateway's envelope: the publish-accepted time).
_NUMBER = rb"(-?[0-9.]+(?:[eE][-+]?\d+)?)"
_BENCH_FRAME = re.compile(
    rb'"bench":\s*(\d+),\s*"seq":\s*(\d+)(?:,\s*"ts":\s*' + _NUMBER + rb')?(?:.*"ts":\s*' + _NUMBER + rb")?",
    re.S,
)


class HandshakeError(Exception):
    """The server did not upgrade the connection (status line or accept key wrong)."""


@dataclass(slots=True)
class Phase:
    """What a worker's clients are currently measuring; shared by all clients of the worker."""

    phase_id: int = -1
    streams: int = 1
    histogram: list[int] = field(default_factory=stats.new_counts)
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    event_ts: list[float] = field(default_factory=list)  # per seq: the event's publish timestamp (ms)
    first_arrival: list[float] = field(default_factory=list)  # per seq: earliest arrival at any client (ms)
    last_arrival: list[float] = field(default_factory=list)  # per seq: latest arrival at any client (ms)
    arrivals: list[int] = field(default_factory=list)  # per seq: how many clients got it
    stray: int = 0  # frames of another phase or not published by the bench

    def grow(self, size: int) -> None:
        missing = size - len(self.event_ts)
        if missing > 0:
            self.event_ts.extend([0.0] * missing)
            self.first_arrival.extend([0.0] * missing)
            self.last_arrival.extend([0.0] * missing)
            self.arrivals.extend([0] * missing)


class Tracker:
    """Per-client delivery bookkeeping for the current phase."""

    __slots__ = ("closed", "dups", "last_by_stream", "max_seq", "ooo", "phase", "preamble", "seen", "unique")

    def __init__(self, phase: Phase, welcome: int = 1) -> None:
        # frames before the first event: eventcast's welcome (1), none (nchan), socket.io's open and connect (2)
        self.preamble = int(welcome)
        self.closed = False
        self.reset(phase)

    def reset(self, phase: Phase) -> None:
        self.phase = phase
        self.seen = bytearray()
        self.unique = 0
        self.dups = 0
        self.ooo = 0
        self.max_seq = -1
        self.last_by_stream = [-1] * phase.streams

    def on_text(self, payload: bytes | bytearray, arrived_ms: float) -> None:
        self.on_frame(payload, 0, len(payload), arrived_ms)

    def on_frame(self, buffer: bytes | bytearray, start: int, end: int, arrived_ms: float) -> None:
        """A text frame whose payload is ``buffer[start:end]`` (read in place: no copy per frame)."""
        if self.preamble:
            self.preamble -= 1  # a welcome frame, not an event
            return
        match = _BENCH_FRAME.search(buffer, start, end)
        phase = self.phase
        if match is None or int(match.group(1)) != phase.phase_id:
            phase.stray += 1
            return
        seq = int(match.group(2))
        stamp = match.group(3) or match.group(4)
        if stamp is None:
            phase.stray += 1
            return
        ts = float(stamp)
        seen = self.seen
        if seq >= len(seen):
            seen.extend(bytes(seq + 1024 - len(seen)))
            phase.grow(seq + 1024)
        if seen[seq]:
            self.dups += 1
            return
        seen[seq] = 1
        self.unique += 1
        stream = seq % phase.streams
        if seq < self.last_by_stream[stream]:
            self.ooo += 1
        self.last_by_stream[stream] = seq
        if seq > self.max_seq:
            self.max_seq = seq
        latency = arrived_ms - ts
        phase.histogram[stats.bucket_of(latency)] += 1
        phase.latency_sum_ms += latency
        if latency > phase.latency_max_ms:
            phase.latency_max_ms = latency
        phase.event_ts[seq] = ts
        if not phase.arrivals[seq] or arrived_ms < phase.first_arrival[seq]:
            phase.first_arrival[seq] = arrived_ms
        phase.arrivals[seq] += 1
        if arrived_ms > phase.last_arrival[seq]:
            phase.last_arrival[seq] = arrived_ms

    @property
    def welcomed(self) -> bool:
        return self.preamble == 0

    def lost(self, expected: int) -> int:
        """Events 0..expected-1 this client never received."""
        return expected - sum(self.seen[:expected])


def now_ms() -> float:
    return time.time() * 1000.0


@dataclass(frozen=True)
class Target:
    """Where the subscribers connect: parsed once, shared by every client of a worker."""

    host: str
    port: int
    path: str  # path and query, e.g. /ws/events?channels=bench
    secure: bool
    token: str | None = None
    welcome: int = (
        1  # frames the server sends before events: a welcome (eventcast), none (nchan), 2 (socket.io)
    )
    greeting: bytes = b""  # a text frame to send once upgraded (socket.io's "40", joining its namespace)

    @classmethod
    def from_url(cls, url: str, token: str | None = None, welcome: int = 1, greeting: bytes = b"") -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"subscriber URL must be ws:// or wss://, got {url!r}")
        secure = parts.scheme == "wss"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        port = parts.port or (443 if secure else 80)
        return cls(parts.hostname or "127.0.0.1", port, path, secure, token, welcome, greeting)

    def handshake(self, key: bytes) -> bytes:
        host = self.host if self.port in (80, 443) else f"{self.host}:{self.port}"
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
            "User-Agent: eventcast-bench",
        ]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def mask_frame(opcode: int, payload: bytes | bytearray) -> bytes:
    """A masked, final client frame (clients must mask; the bench only sends small control frames)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawClient(asyncio.Protocol):
    """One subscriber on a bare asyncio transport: handshake, frame parsing, ping replies."""

    def __init__(
        self, target: Target, tracker: Tracker | CTracker, on_lost: Callable[[RawClient], None]
    ) -> None:
        self.target = target
        self.tracker = tracker
        # with the C bookkeeping, one call counts every whole text frame of a receive buffer
        self.counter: CTracker | None = tracker if isinstance(tracker, CTracker) else None
        self.special = ctypes.c_int64()
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16))
        self.buffer = bytearray()
        self.upgraded = False
        self.fragments: bytearray | None = None
        self.welcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.live = False  # the welcome arrived: text frames take the hot path in _parse
        self.close_code: int | None = None

    # asyncio.Protocol -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        transport = self.transport
        transport.write(self.target.handshake(self.key))

    def connection_lost(self, exc: Exception | None) -> None:
        self.tracker.closed = True
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError(f"closed before welcome ({self.close_code or exc})"))
        self.on_lost(self)

    def data_received(self, data: bytes) -> None:
        arrived = now_ms()
        buffer = self.buffer
        if self.upgraded and not buffer:
            # Fast path: whole frames straight from the bytes we were given, only the tail is copied.
            used = self._parse(data, arrived) if self.counter is None else self._consume(data, arrived)
            if used < len(data):
                buffer += data[used:]
            return
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HANDSHAKE_BYTES:
                    self._fail(HandshakeError("oversized handshake response"))
                return
            try:
                self._check_handshake(bytes(buffer[:end]))
            except HandshakeError as error:
                self._fail(error)
                return
            del buffer[: end + 4]
            self.upgraded = True
            if self.target.greeting and self.transport is not None:
                self.transport.write(mask_frame(OP_TEXT, self.target.greeting))
            if not self.target.welcome:  # connected once upgraded: every frame after it is an event
                self.live = True
                self.welcome.set_result(None)
        used = self._parse(buffer, arrived) if self.counter is None else self._consume(bytes(buffer), arrived)
        if used:
            del buffer[:used]

    # internals ----------------------------------------------------------------------------------------------
    def _check_handshake(self, head: bytes) -> None:
        status, _, rest = head.partition(b"\r\n")
        if not status.startswith(b"HTTP/1.1 101"):
            raise HandshakeError(status.decode(errors="replace"))
        expected = base64.b64encode(hashlib.sha1(self.key + WS_GUID).digest())
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-accept" and value.strip() != expected:
                raise HandshakeError("bad Sec-WebSocket-Accept")

    def _fail(self, error: Exception) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def _parse(self, buffer: bytes | bytearray, arrived: float) -> int:
        """Handle every complete frame in `buffer`; returns how many bytes were used."""
        size = len(buffer)
        pos = 0
        tracker = self.tracker
        assert isinstance(tracker, Tracker)  # the C counter takes _consume instead
        on_frame = tracker.on_frame
        while size - pos >= 2:
            first = buffer[pos]
            length = buffer[pos + 1] & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                header = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                header = 10
            end = pos + header + length
            if end > size:
                break
            if first == 0x81 and self.live:  # a whole text frame after the welcome: the hot path
                on_frame(buffer, pos + header, end, arrived)
            else:
                self._frame(first & 0x80, first & 0x0F, buffer[pos + header : end], arrived)
            pos = end
        return pos

    def _consume(self, data: bytes, arrived: float) -> int:
        """`_parse` with the C counter: it counts the whole text frames and stops in front of any other frame
        (welcome, ping, close, fragment), which Python handles before handing the rest back."""
        counter = self.counter
        assert counter is not None
        consume, special, size = counter.consume_fn, self.special, len(data)
        pos = 0
        while pos < size:
            pos = consume(counter.pointer, data, pos, size, arrived, ctypes.byref(special))
            if pos < 0:
                raise MemoryError("bench_consume")
            if not special.value:
                break
            end = self._parse_one(data, pos, arrived)
            if end == pos:
                break
            pos = end
        return pos

    def _parse_one(self, buffer: bytes, pos: int, arrived: float) -> int:
        """Handle the one frame at `pos` in Python; returns where it ends (`pos` when it is incomplete)."""
        size = len(buffer)
        length = buffer[pos + 1] & 0x7F
        header = 2
        if length == 126:
            length, header = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            length, header = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
        end = pos + header + length
        if end > size:
            return pos
        first = buffer[pos]
        self._frame(first & 0x80, first & 0x0F, buffer[pos + header : end], arrived)
        return end

    def _frame(self, fin: int, opcode: int, payload: bytes | bytearray, arrived: float) -> None:
        if opcode == OP_TEXT or opcode == OP_BINARY:
            if fin:
                self.tracker.on_text(payload, arrived)
                if not self.welcome.done() and self.tracker.welcomed:
                    self.welcome.set_result(None)
                    self.live = True
            else:
                self.fragments = bytearray(payload)
        elif opcode == OP_CONTINUATION and self.fragments is not None:
            self.fragments += payload
            if fin:
                whole, self.fragments = bytes(self.fragments), None
                self._frame(0x80, OP_TEXT, whole, arrived)
        elif opcode == OP_PING and self.transport is not None:
            self.transport.write(mask_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if self.transport is not None:
                self.transport.write(mask_frame(OP_CLOSE, payload[:2]))
                self.transport.close()

    def close(self) -> None:
        """Start a normal close: send the close frame and let the server end the TCP connection."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(mask_frame(OP_CLOSE, CLOSE_NORMAL.to_bytes(2, "big")))
            self.transport.close()


async def open_raw(
    target: Target,
    tracker: Tracker | CTracker,
    on_lost: Callable[[RawClient], None],
    timeout: float,
    local_host: str | None = None,
) -> RawClient:
    """Connect, upgrade and wait for the welcome frame; raises on failure or after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if target.secure else None
    local_addr = (local_host, 0) if local_host else None

    async def run() -> RawClient:
        _, protocol = await loop.create_connection(
            lambda: RawClient(target, tracker, on_lost),
            target.host,
            target.port,
            ssl=context,
            local_addr=local_addr,
        )
        try:
            await protocol.welcome
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.abort()
            raise
        return protocol

    return await asyncio.wait_for(run(), timeout)


class LibraryClient:
    """The same subscriber on the `websockets` asyncio client (slower; for comparison with RawClient)."""

    def __init__(self, tracker: Tracker, on_lost: Callable[[LibraryClient], None]) -> None:
        self.tracker = tracker
        self.on_lost = on_lost
        self.connection: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.closing: asyncio.Future[Any] | None = None

    async def open(
        self,
        url: str,
        token: str | None,
        timeout: float,
        local_host: str | None,
        welcome: int = 1,
        greeting: bytes = b"",
    ) -> None:
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.connection = await connect(
            url,
            additional_headers=headers,
            compression=None,
            open_timeout=timeout,
            max_queue=None,
            ping_interval=None,
            local_addr=(local_host, 0) if local_host else None,
        )
        if greeting:
            await self.connection.send(greeting.decode())
        for _ in range(welcome):
            first = await asyncio.wait_for(self.connection.recv(decode=False), timeout)
            self.tracker.on_text(first, now_ms())
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.connection:
                payload = message if isinstance(message, bytes) else message.encode()
                self.tracker.on_text(payload, now_ms())
        except Exception:  # any failure ends this client; the worker counts it as lost
            pass
        finally:
            self.tracker.closed = True
            self.on_lost(self)

    def close(self) -> None:
        if self.connection is not None:
            self.closing = asyncio.ensure_future(self.connection.close())


def welcome_of(payload: bytes) -> dict[str, Any]:
    """Decode a welcome frame (used by tests and diagnostics, not the hot path)."""
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise ValueError("welcome frame is not an object")
    return value
