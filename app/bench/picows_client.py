"""The subscriber on picows (PyPI, Cython): the library parses frames in C and calls `on_ws_frame` once per
frame; the bookkeeping stays the bench's `Tracker`, so its counts are the same as `RawClient`'s (the C `CTracker` when a compiler is there, one ctypes call per
frame).

Chosen with `--client picows`. docs/benchmarks.md ("The load generator") has the frames/s per core of each
client on the same traffic (`python -m app.bench.framerate`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from app.bench.client import Target, Tracker, now_ms
from app.bench.fastcount import CTracker


class PicowsClient(WSListener):
    """One subscriber: text frames go to the tracker; picows answers pings itself."""

    def __init__(
        self,
        tracker: Tracker | CTracker,
        on_lost: Callable[[PicowsClient], None],
        welcome: int,
        greeting: bytes = b"",
    ) -> None:
        super().__init__()
        self.tracker = tracker
        self.on_lost = on_lost
        self.expect_welcome = welcome
        self.greeting = greeting
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.fragments: bytearray | None = None
        self.close_code: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.greeting:
            transport.send(WSMsgType.TEXT, self.greeting)
        if not self.expect_welcome:
            self.ready.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
            if frame.fin:
                self._text(frame.get_payload_as_bytes())
            else:
                self.fragments = bytearray(frame.get_payload_as_memoryview())
        elif kind == WSMsgType.CONTINUATION and self.fragments is not None:
            self.fragments += frame.get_payload_as_memoryview()
            if frame.fin:
                whole, self.fragments = bytes(self.fragments), None
                self._text(whole)
        elif kind == WSMsgType.CLOSE:
            code = frame.get_close_code()
            self.close_code = None if code is None else int(code.value)
            transport.send_close(code)
            transport.disconnect()

    def _text(self, payload: bytes) -> None:
        self.tracker.on_text(payload, now_ms())
        if not self.ready.done() and self.tracker.welcomed:
            self.ready.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.tracker.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before welcome ({self.close_code})"))
        self.on_lost(self)

    def close(self) -> None:
        """Start a normal close: send the close frame and let the server end the TCP connection."""
        if self.transport is not None and not self.transport.is_close_frame_sent:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()


async def open_picows(
    url: str,
    target: Target,
    tracker: Tracker | CTracker,
    on_lost: Callable[[PicowsClient], None],
    timeout: float,
    local_host: str | None = None,
) -> PicowsClient:
    """Connect, upgrade and wait for the welcome frame (or only the upgrade, for a server that sends none)."""
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else None
    extra: dict[str, Any] = {"local_addr": (local_host, 0)} if local_host else {}

    async def run() -> PicowsClient:
        transport, listener = await ws_connect(
            lambda: PicowsClient(tracker, on_lost, target.welcome, target.greeting),
            url,
            websocket_handshake_timeout=timeout,
            extra_headers=headers,
            **extra,
        )
        assert isinstance(listener, PicowsClient)  # our factory made it
        client = listener
        try:
            await client.ready
        except BaseException:
            transport.disconnect()
            raise
        return client

    return await asyncio.wait_for(run(), timeout)
