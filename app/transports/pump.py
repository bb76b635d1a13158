"""A pump for transports that must await each send (ASGI WebSocket, SSE): the connection writes without
awaiting; frames wait here and one task sends them, in order.

The connection's byte bound counts what waits here (``buffered``). Past the high-water mark (``high``) the
connection keeps further frames in its own queue, and the pump calls ``on_writable`` once it has sent enough
to be below a quarter of it again, exactly as a socket transport calls ``resume_writing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from app.connection import HIGH_WATER
from app.protocol import Frame

log = logging.getLogger("eventcast.transport")

Send = Callable[[Frame], Awaitable[None]]
Step = Callable[[], Awaitable[None]]


class Pump:
    __slots__ = (
        "_bytes",
        "_frames",
        "_last",
        "_opening",
        "_send",
        "_task",
        "_wake",
        "ended",
        "high",
        "on_writable",
        "paused",
    )

    def __init__(self, send: Send, *, opening: Step | None = None) -> None:
        self._send = send
        self._opening = opening  # awaited before the first frame (accept the WebSocket, start the response)
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._last: Step | None = None
        self._task: asyncio.Task[None] | None = None
        self.paused = False
        self.high = HIGH_WATER
        self.on_writable: Callable[[], None] | None = None
        self.ended = asyncio.Event()  # set once the last step ran, or a send failed

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def write(self, frames: list[Frame]) -> None:
        self._frames.extend(frames)
        self._bytes += sum(len(frame) for frame in frames)
        if self._bytes > self.high:
            self.paused = True
        self._run_soon()

    def buffered(self) -> int:
        return self._bytes

    def finish(self, last: Step) -> None:
        """After the frames already written, run ``last`` (send the close) and stop."""
        if self._last is None:
            self._last = last
            self._run_soon()

    async def stop(self) -> None:
        """The peer is gone: stop sending at once."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def _run_soon(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="eventcast-pump")
        self._wake.set()

    async def _run(self) -> None:
        try:
            if self._opening is not None:
                await self._opening()
            while True:
                await self._wake.wait()
                self._wake.clear()
                frames = self._frames
                while frames:
                    frame = frames.popleft()
                    self._bytes -= len(frame)
                    await self._send(frame)
                    if self.paused and self._bytes <= self.high // 4:
                        self.paused = False
                        if self.on_writable is not None:
                            self.on_writable()
                if self._last is not None:
                    await self._last()
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-send; its endpoint sees the disconnect
            log.debug("send failed: %r", exc)
            self._frames.clear()
            self._bytes = 0
        finally:
            self.ended.set()


class Pumped:
    """The Transport methods of a transport whose frames go through its ``pump``."""

    pump: Pump

    def write(self, frames: list[Frame]) -> None:
        self.pump.write(frames)

    def buffered(self) -> int:
        return self.pump.buffered()

    def watermark(self, high: int) -> None:
        self.pump.high = high
