"""The publishing side: a lean keep-alive HTTP/1.1 client for `POST /events`, and the event bodies.

httpx costs a few hundred microseconds per request in Python, which would cap the `publish` scenario below
what one gateway worker can accept; this client writes the request in one call and reads the answer with
the stream's buffered reader, so one load process can drive tens of thousands of requests per second.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.bench.server import EVENTCAST_DIALECT

RETRIES = 5  # a 429/503 is retried (the gateway accepted nothing of that request), then the run stops
RETRY_PAUSE_S = 0.1


class PublishError(Exception):
    """The gateway refused a publish (status and its error body are in the message)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode(errors='replace')}")
        self.status = status


def event_body(channel: str, phase_id: int, seqs: Sequence[int], pad: str) -> bytes:
    """The gateway's JSON for one event (one seq) or a batch (see `Dialect.body`)."""
    return EVENTCAST_DIALECT.body(channel, phase_id, seqs, pad)


def padding_for(event_bytes: int) -> str:
    """Padding that makes an event frame roughly `event_bytes` long on the wire."""
    return "x" * max(0, event_bytes - 150)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str
    secure: bool

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"publish URL must be http:// or https://, got {url!r}")
        secure = parts.scheme == "https"
        return cls(
            parts.hostname or "127.0.0.1", parts.port or (443 if secure else 80), parts.path or "/", secure
        )


class HttpPublisher:
    """One keep-alive connection; one request in flight at a time (so its events stay in order)."""

    def __init__(
        self, url: str, token: str | None = None, timeout_s: float = 10.0, accepted: tuple[int, ...] = (202,)
    ) -> None:
        self.endpoint = Endpoint.from_url(url)
        self.accepted = accepted
        self.timeout_s = timeout_s
        host = self.endpoint.host
        header = f"POST {self.endpoint.path} HTTP/1.1\r\nHost: {host}:{self.endpoint.port}\r\n"
        header += (
            "Content-Type: application/json\r\nConnection: keep-alive\r\nUser-Agent: eventcast-bench\r\n"
        )
        if token:
            header += f"Authorization: Bearer {token}\r\n"
        self.head = header.encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.retries = 0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = ssl.create_default_context() if self.endpoint.secure else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.endpoint.host, self.endpoint.port, ssl=context, limit=1 << 20),
            self.timeout_s,
        )
        self.reader, self.writer = reader, writer
        return reader, writer

    async def post(self, body: bytes) -> tuple[int, bytes, float]:
        """Send one request; returns (status, body, latency in ms). Reconnects once if the server hung up."""
        for attempt in (0, 1):
            if self.reader is None or self.writer is None:
                reader, writer = await self._open()
            else:
                reader, writer = self.reader, self.writer
            started = time.perf_counter()
            try:
                writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                status, payload, keep = await asyncio.wait_for(self._response(reader), self.timeout_s)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
                continue
            latency = (time.perf_counter() - started) * 1000.0
            if not keep:
                await self.close()
            return status, payload, latency
        raise ConnectionError("unreachable")  # pragma: no cover

    async def _response(self, reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        chunked = False
        keep = True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            return status, b"".join(parts), keep
        if length < 0:
            return status, await reader.read(), False
        return status, await reader.readexactly(length), keep

    async def publish(self, body: bytes) -> float:
        """Post and require an accepting status (202 for the gateway), retrying a 429/503 a few times
        (counted); returns the latency in ms."""
        for attempt in range(RETRIES + 1):
            status, payload, latency = await self.post(body)
            if status in self.accepted:
                return latency
            if status not in (429, 503) or attempt == RETRIES:
                break
            self.retries += 1
            await asyncio.sleep(RETRY_PAUSE_S * (attempt + 1))
        raise PublishError(status, payload)

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (TimeoutError, ConnectionError, OSError):
                pass
