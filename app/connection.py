"""One subscriber: its subscriptions, its bounded outbound queue, and how that queue reaches the client.

The hub calls ``push`` while fanning out; ``push`` never awaits, so one slow client cannot delay others.
A client whose queue would pass ``max_queue_bytes`` is closed with 4008 (it may resume with ``since``).

Two ways out, chosen by the transport:
- direct (the native WebSocket, ``app.wsserver``): ``push`` appends the event's complete WebSocket frame,
  built once per event (``Event.wire``), and marks the connection dirty; one flush per loop turn writes each
  dirty connection's frames with a single ``write``. The transport's own buffer counts toward the bound.
  No task per connection.
- task (ASGI WebSocket, SSE): a writer task awaits ``transport.send`` for each frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterable
from enum import Enum
from typing import Protocol

from app import metrics
from app.filters import EventFilter
from app.limits import FrameBudget
from app.protocol import CloseCode, Event, FrameBatch, Position, ws_frame

log = logging.getLogger("eventcast.connection")

Frame = bytes | str

#: How long a close may wait for the client to take its pending frames and the close frame.
CLOSE_FLUSH_SECONDS = 10.0
#: Longest a flush waits to gather more events, after a flush that took four times as long.
MAX_COALESCE_SECONDS = 0.005
_ZERO = Position(0, 0)


class Transport(Protocol):
    """What a connection needs from the WebSocket (or SSE) layer underneath it.

    A transport with ``direct = True`` also has ``write_frames(frames)`` (complete WebSocket frames, written
    at once, never awaiting) and ``buffered()`` (bytes it holds that the kernel has not taken yet).
    """

    kind: str  # "websocket" or "sse": the ``transport`` label of metrics

    async def send(self, frame: Frame) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class State(Enum):
    SYNCING = "syncing"  # replaying history; live events wait in ``_pending``
    LIVE = "live"
    CLOSING = "closing"
    CLOSED = "closed"


class _Flusher:
    """Writes every dirty direct connection once per loop turn, after the fan-out that dirtied it.

    When the last flush was long (thousands of clients), the next one waits a fraction of that time, at
    most ``MAX_COALESCE_SECONDS``, so events published meanwhile leave in the same write to each client:
    one system call per client carries many events when that is what the load needs.
    """

    __slots__ = ("dirty", "last_end", "last_seconds", "loop")

    def __init__(self) -> None:
        self.dirty: list[Connection] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last_seconds = 0.0
        self.last_end = 0.0

    def mark(self, conn: Connection) -> None:
        if not self.dirty:
            loop = asyncio.get_running_loop()
            self.loop = loop
            # Only while busy (the last long flush ended moments ago); an idle gateway flushes at once.
            busy = time.perf_counter() - self.last_end < self.last_seconds
            wait = min(MAX_COALESCE_SECONDS, self.last_seconds / 4) if busy else 0.0
            if wait < 0.0005:
                loop.call_soon(self.run)
            else:
                loop.call_later(wait, self.run)
        self.dirty.append(conn)

    def run(self) -> None:
        started = time.perf_counter()
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.flush()
        self.last_end = time.perf_counter()
        self.last_seconds = self.last_end - started


_flusher = _Flusher()


class Connection:
    """A subscriber, owned by the hub."""

    __slots__ = (
        "_after",
        "_backlog",
        "_closer",
        "_dirty",
        "_frames_queued",
        "_pending",
        "_pending_bytes",
        "_queue",
        "_replayed_until",
        "_sample_countdown",
        "_samples",
        "_wake",
        "_writer",
        "budget",
        "channels",
        "close_code",
        "close_reason",
        "counted",
        "delivered",
        "direct",
        "enqueued",
        "filter",
        "id",
        "max_queue_bytes",
        "queued",
        "state",
        "subprotocol",
        "transport",
    )

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
        self.direct = bool(getattr(transport, "direct", False))
        self.channels = tuple(channels)
        self.subprotocol = subprotocol
        self.filter = event_filter if event_filter is not None and not event_filter.is_empty else None
        self.max_queue_bytes = max_queue_bytes
        self.state = State.SYNCING
        self.queued = 0  # bytes in ``_queue``
        self.close_code: int | None = None
        self.close_reason = ""
        self.delivered = 0  # frames handed to the transport
        self.enqueued = 0  # frames ever queued; with ``delivered``, pins latency samples to their frames
        self.counted = False  # set by the hub once the connection shows in metrics
        self.budget: FrameBudget | None = None  # what the client may send (Gateway.client_frame)
        # Broadcast latency: every Nth live frame is sampled; (frame number, event ts) until written.
        self._sample_countdown = metrics.first_sample_countdown()
        self._samples: deque[tuple[int, float]] | None = None
        self._queue: list[Frame] = []
        self._frames_queued = 0  # direct: frames in ``_queue`` (one item may hold a batch of frames)
        self._dirty = False
        self._pending: list[Event] = []
        self._pending_bytes = 0
        self._replayed_until: Position | None = None
        self._backlog: deque[Event] | None = None
        self._after = _ZERO
        self._wake: asyncio.Event | None = None if self.direct else asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for this client: our queue, plus what a direct transport still buffers."""
        if self.direct:
            return self.queued + int(self.transport.buffered())  # type: ignore[attr-defined]
        return self.queued

    # -------------------------------------------------------------------------------- fan-out side
    def push(self, event: Event) -> bool:
        """Queue one event without awaiting; True when a frame was queued.

        Drops it (and closes 4008) when the queue is full; holds it while history replays.
        """
        state = self.state
        if state is State.LIVE:
            if self._replayed_until is not None:
                # Right after a resume the broker may still dispatch events the replay already sent.
                if event.position <= self._replayed_until:
                    return False
                self._replayed_until = None
            if self.filter is not None and not self.filter.matches(event):
                return False
            frame = event.wire(self.subprotocol) if self.direct else event.frame(self.subprotocol)
            if frame is None or not self._enqueue(frame):  # None: quarantined for this encoding
                return False
            self._sample_countdown -= 1
            if self._sample_countdown < 0:
                self._sample_countdown = metrics.latency_sample_every - 1
                if self._samples is None:
                    self._samples = deque()
                self._samples.append((self.enqueued, event.ts))
            return True
        if state is State.SYNCING:
            # Live events wait while history replays; they are bounded like the queue itself.
            self._pending.append(event)
            self._pending_bytes += len(event.data_json)
            if self._pending_bytes > self.max_queue_bytes:
                self._overflow()
        return False

    def push_batch(self, batch: FrameBatch) -> int:
        """Queue consecutive events of one channel at once; returns how many frames were queued.

        The common case (live, unfiltered, nothing to skip) costs the same for one event or a hundred: the
        batch's frames were encoded once for every subscriber.
        """
        if self.state is not State.LIVE or self.filter is not None or self._replayed_until is not None:
            return sum(self.push(event) for event in batch.events)
        events = batch.events
        if self.direct:
            joined = batch.joined(self.subprotocol)
            size = len(joined)
            if self.queued + size > self.max_queue_bytes:
                self._overflow()
                return 0
            self._queue.append(joined)
            self.queued += size
            self._frames_queued += len(events)
            if not self._dirty:
                self._dirty = True
                _flusher.mark(self)
        else:
            frames, size = batch.frames(self.subprotocol)
            if self.queued + size > self.max_queue_bytes:
                self._overflow()
                return 0
            self._queue.extend(frames)
            self.queued += size
            self._wake.set()  # type: ignore[union-attr]
        first = self.enqueued + 1
        self.enqueued += len(events)
        self._sample_countdown -= len(events)
        if self._sample_countdown < 0:  # broadcast latency: sample the frame where the countdown ran out
            index = len(events) + self._sample_countdown
            self._sample_countdown = metrics.latency_sample_every - 1
            if self._samples is None:
                self._samples = deque()
            self._samples.append((first + index, events[index].ts))
        return len(events)

    def push_frame(self, frame: Frame) -> None:
        """Queue a control frame (welcome, pong) in order with the events."""
        if self.state in (State.SYNCING, State.LIVE):
            self._enqueue(ws_frame(frame) if self.direct else frame)

    def _enqueue(self, frame: Frame) -> bool:
        size = len(frame)
        if self.queued + size > self.max_queue_bytes:
            self._overflow()
            return False
        self._queue.append(frame)
        self.enqueued += 1
        self.queued += size
        if self.direct:
            self._frames_queued += 1
            if not self._dirty:
                self._dirty = True
                _flusher.mark(self)
        else:
            self._wake.set()  # type: ignore[union-attr]
        return True

    def _overflow(self) -> None:
        """The client cannot keep up: drop what waits and close with 4008 (it may resume)."""
        metrics.MESSAGES_DROPPED.labels("slow_consumer").inc(1 + len(self._queue))
        self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)

    def go_live(self, replayed: list[Event], after: Position) -> None:
        """End the sync phase: send the replay, then the live events that came meanwhile, skipping repeats.

        The replay is fed to the queue as the client takes it (``_refill``), so a long history never
        overflows the queue at once; live events wait in ``_pending`` until the replay is out.
        """
        self._backlog = deque(replayed) if replayed else None
        self._after = after
        self._refill()

    def _refill(self) -> None:
        backlog = self._backlog
        if backlog is not None:
            matches = self.filter.matches if self.filter is not None else None
            while backlog and self.queued_bytes < self.max_queue_bytes // 2:
                event = backlog.popleft()
                self._after = event.position
                if matches is None or matches(event):
                    frame = event.wire(self.subprotocol) if self.direct else event.frame(self.subprotocol)
                    if frame is not None:  # None: quarantined for this encoding
                        self._enqueue(frame)
            if backlog:
                return
            self._backlog = None
        if self.state is State.SYNCING:
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

    # -------------------------------------------------------------------------------- direct writes
    def flush(self) -> None:
        """Write everything queued with one transport write (direct transports)."""
        self._dirty = False
        queue = self._queue
        if not queue or self.state is State.CLOSED:
            return
        self._queue = []
        self.queued = 0
        self.transport.write_frames(queue)  # type: ignore[attr-defined]
        self.delivered += self._frames_queued
        self._frames_queued = 0
        samples = self._samples
        if samples:
            while samples and samples[0][0] <= self.delivered:
                metrics.observe_broadcast(samples.popleft()[1])
        buffered = self.transport.buffered()  # type: ignore[attr-defined]
        if buffered > self.max_queue_bytes:  # the kernel stopped taking this client's bytes
            self._overflow()
        elif self._backlog is not None and buffered < self.max_queue_bytes // 2:
            self._refill()

    def on_writable(self) -> None:
        """The transport drained below its low-water mark: continue a replay."""
        if self._backlog is not None:
            self._refill()

    # -------------------------------------------------------------------------------- writer task
    def start(self) -> None:
        if not self.direct:
            self._writer = asyncio.create_task(self._write_forever(), name=f"eventcast-writer-{self.id}")

    async def _write_forever(self) -> None:
        send, wake = self.transport.send, self._wake
        assert wake is not None
        try:
            while True:
                await wake.wait()
                wake.clear()
                while self._queue:
                    batch, self._queue = self._queue, []
                    for frame in batch:
                        self.queued -= len(frame)
                        await send(frame)
                        self.delivered += 1
                        samples = self._samples
                        if samples and samples[0][0] == self.delivered:
                            metrics.observe_broadcast(samples.popleft()[1])
                    if not self._queue and self._backlog is not None:
                        self._refill()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-send; the endpoint sees the disconnect
            log.debug("send failed on %s: %r", self.id, exc)

    async def _flush(self) -> None:
        if self.direct:
            self.flush()
            return
        while self._queue and self._writer is not None and not self._writer.done():
            self._wake.set()  # type: ignore[union-attr]
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
            self._drop_queue()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.transport.close(code, reason), CLOSE_FLUSH_SECONDS)
        finally:
            self.state = State.CLOSED

    def _drop_queue(self) -> None:
        self._queue = []
        self.queued = 0
        self._frames_queued = 0
        self._pending = []
        self._backlog = None

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
        self._drop_queue()
