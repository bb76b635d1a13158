"""One subscriber: its subscriptions, its bounded outbound queue and the writer task that drains it.

The hub calls ``push`` while fanning out; ``push`` never awaits, so one slow client cannot delay others.
A client whose queue would pass ``max_queue_bytes`` is closed with 4008 (it may resume with ``since``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Iterable
from enum import Enum
from typing import Protocol

from app import metrics
from app.protocol import CloseCode, Event, EventFilter, Position

log = logging.getLogger("eventcast.connection")

Frame = bytes | str

#: How long a close may wait for the client to take its pending frames and the close frame.
CLOSE_FLUSH_SECONDS = 10.0


class Transport(Protocol):
    """What a connection needs from the WebSocket (or SSE) layer underneath it."""

    kind: str  # "websocket" or "sse": the ``transport`` label of metrics

    async def send(self, frame: Frame) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class State(Enum):
    SYNCING = "syncing"  # replaying history; live events wait in ``_pending``
    LIVE = "live"
    CLOSING = "closing"
    CLOSED = "closed"


class Connection:
    """A subscriber. Owned by the hub; its writer task is the only code that writes to the transport."""

    def __init__(
        self,
        transport: Transport,
        *,
        channels: Iterable[str],
        subprotocol: str,
        event_filter: EventFilter | None,
        max_queue_bytes: int,
    ) -> None:
        self.id = secrets.token_hex(8)
        self.transport = transport
        self.channels = tuple(channels)
        self.subprotocol = subprotocol
        self.filter = event_filter if event_filter is not None and not event_filter.is_empty else None
        self.max_queue_bytes = max_queue_bytes
        self.state = State.SYNCING
        self.queued_bytes = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.delivered = 0
        self.enqueued = 0  # frames ever queued; with ``delivered``, pins latency samples to their frames
        self._samples: deque[tuple[int, float]] = deque()  # (frame number, event ts): observe once written
        self._sample_countdown = metrics.first_sample_countdown()  # every Nth live frame is sampled
        self.counted = False  # set by the hub once the connection shows in metrics
        self._queue: deque[Frame] = deque()
        self._pending: list[Event] = []
        self._replayed_until: Position | None = None
        self._pending_bytes = 0
        self._backlog: deque[Event] = deque()
        self._after = Position(0, 0)
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    # -------------------------------------------------------------------------------- fan-out side
    def push(self, event: Event) -> None:
        """Queue one event without awaiting; drops it (and closes 4008) when the queue is full."""
        state = self.state
        if state is State.LIVE:
            if self._replayed_until is not None:
                # Right after a resume the broker may still dispatch events the replay already sent.
                if event.position <= self._replayed_until:
                    return
                self._replayed_until = None
            if self.filter is None or self.filter.matches(event):
                self._enqueue(event.frame(self.subprotocol))
                self._sample_countdown -= 1
                if self._sample_countdown < 0 and self.state is State.LIVE:  # broadcast latency, 1 in N
                    self._sample_countdown = metrics.latency_sample_every - 1
                    self._samples.append((self.enqueued, event.ts))
        elif state is State.SYNCING:
            # Live events wait while history replays; they are bounded like the queue itself.
            self._pending.append(event)
            self._pending_bytes += len(event.data_json)
            if self._pending_bytes > self.max_queue_bytes:
                self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)

    def push_frame(self, frame: Frame) -> None:
        """Queue a control frame (welcome, pong) in order with the events."""
        if self.state in (State.SYNCING, State.LIVE):
            self._enqueue(frame)

    def _enqueue(self, frame: Frame) -> None:
        size = len(frame)
        if self.queued_bytes + size > self.max_queue_bytes:
            self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)
            # This frame and the queued ones are discarded (flush=False); later pushes are ignored.
            metrics.MESSAGES_DROPPED.labels("slow_consumer").inc(1 + len(self._queue))
            return
        self._queue.append(frame)
        self.enqueued += 1
        self.queued_bytes += size
        self._wake.set()

    def go_live(self, replayed: list[Event], after: Position) -> None:
        """End the sync phase: send the replay, then the live events that came meanwhile, skipping repeats.

        The replay is fed to the queue as the writer drains it (``_refill``), so a long history never
        overflows the queue at once; live events wait in ``_pending`` until the replay is out.
        """
        self._backlog = deque(replayed)
        self._after = after
        self._refill()

    def _refill(self) -> None:
        backlog, matches = self._backlog, self.filter.matches if self.filter is not None else None
        while backlog and self.queued_bytes < self.max_queue_bytes // 2:
            event = backlog.popleft()
            self._after = event.position
            if matches is None or matches(event):
                self._enqueue(event.frame(self.subprotocol))
        if not backlog and self.state is State.SYNCING:
            self._finish_sync()

    def _finish_sync(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_bytes = 0
        after = self._after
        self.state = State.LIVE
        self._replayed_until = after
        for event in pending:
            if event.position > after:
                self.push(event)

    def set_filter(self, event_filter: EventFilter) -> None:
        self.filter = None if event_filter.is_empty else event_filter

    # -------------------------------------------------------------------------------- writer side
    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name=f"eventcast-writer-{self.id}")

    async def _write_forever(self) -> None:
        queue, send, samples = self._queue, self.transport.send, self._samples
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while queue:
                    frame = queue.popleft()
                    self.queued_bytes -= len(frame)
                    await send(frame)
                    self.delivered += 1
                    if samples and samples[0][0] == self.delivered:
                        metrics.observe_broadcast(samples.popleft()[1])
                    if not queue and self._backlog:
                        self._refill()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-send; the endpoint sees the disconnect
            log.debug("send failed on %s: %r", self.id, exc)

    async def _flush(self) -> None:
        while self._queue and self._writer is not None and not self._writer.done():
            self._wake.set()
            await asyncio.sleep(0.005)

    # -------------------------------------------------------------------------------- closing
    def close_soon(self, code: int, reason: str, *, flush: bool = True) -> asyncio.Task[None] | None:
        """Start closing (idempotent): optionally let queued frames out first, then send the close frame."""
        if self._closer is None and self.state not in (State.CLOSING, State.CLOSED):
            self.state = State.CLOSING
            self.close_code, self.close_reason = code, reason
            self._closer = asyncio.create_task(
                self._close(code, reason, flush), name=f"eventcast-close-{self.id}"
            )
        return self._closer

    async def _close(self, code: int, reason: str, flush: bool) -> None:
        try:
            if flush:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush(), CLOSE_FLUSH_SECONDS)
            await self._stop_writer()
            self._queue.clear()
            self.queued_bytes = 0
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.transport.close(code, reason), CLOSE_FLUSH_SECONDS)
        finally:
            self.state = State.CLOSED

    async def _stop_writer(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(BaseException):
                await self._writer

    async def finished(self) -> None:
        """The client went away (or we closed it): stop writing and drop what is queued."""
        if self.state is not State.CLOSED and self._closer is None:
            self.state = State.CLOSED
        await self._stop_writer()
        self._queue.clear()
        self.queued_bytes = 0
        self._pending.clear()
        self._backlog.clear()
