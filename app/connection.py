"""One subscriber's delivery: its bounded outbound queue, and one way out to whatever transport it has.

The hub calls ``push`` while fanning out; ``push`` never awaits, so one slow client cannot delay others. Each
event's frame was built once for the transport's framing (``Event.frame``) and is shared by every
subscriber; a connection only queues it and marks itself dirty. One flush per event-loop turn (the module's
``Flusher``) writes each dirty connection's queue with a single ``Transport.write``.

The bound: what waits in the queue plus what the transport still holds (``Transport.buffered``) may not
pass ``max_queue_bytes``; a client that would pass it is closed with 4008 (it may resume with ``since``).
While the transport holds more than the connection's high-water mark (``HIGH_WATER``, or a quarter of
the bound if that is less), frames stay in the queue (the transport calls ``on_writable`` once it drained),
so a slow client's 4008 close frame never waits behind more than that of its own data: what is queued is
dropped, what the transport holds cannot be. A replay is fed to the queue up to half the bound at a time,
which is past the high-water mark, so the transport always calls back for more.

A transport that must await each send (ASGI, SSE) keeps its own pump (app/transports/pump.py) behind the
same synchronous ``write``.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import deque
from collections.abc import Iterable
from enum import Enum
from typing import Protocol

from app import metrics
from app.causes import Cause
from app.filters import EventFilter
from app.limits import FrameBudget
from app.protocol import Event, Frame, FrameBatch, Framing, Position

#: Bytes a transport may hold before the queue keeps the rest (the 4008 close waits behind at most this).
HIGH_WATER = 64 * 1024
#: Longest a flush waits to gather more events, after a flush that took four times as long.
MAX_COALESCE_SECONDS = 0.005
_ZERO = Position(0, 0)
#: Connection ids: a random prefix per process and a counter (unique, cheaper than random bytes each).
_ID_PREFIX = secrets.token_hex(4)
_IDS = itertools.count(1)


class Transport(Protocol):
    """What a connection needs from the layer that moves its bytes (app/transports/*).

    Every method returns at once; none awaits.
    """

    #: The ``transport`` label of metrics: "websocket" or "sse".
    kind: str
    #: How this transport wants its frames built.
    framing: Framing

    def write(self, frames: list[Frame]) -> None:
        """Send these frames, in order, after everything written before."""

    def buffered(self) -> int:
        """Bytes written but not yet taken by the peer's socket."""

    def watermark(self, high: int) -> None:
        """Once more than ``high`` bytes were held, call the connection's ``on_writable`` when it drained
        (as uvloop's ``pause_writing`` / ``resume_writing`` do)."""

    def close(self, code: int, reason: str) -> None:
        """Close after what was written: a close frame (WebSocket) or a close event (SSE)."""


class State(Enum):
    SYNCING = "syncing"  # replaying history; live events wait in ``_pending``
    LIVE = "live"
    CLOSING = "closing"  # the close was sent: nothing more is queued
    CLOSED = "closed"  # gone


class Flusher:
    """Writes every dirty connection once per loop turn, after the fan-out that dirtied it.

    When the last flush was long (thousands of clients), the next one waits a fraction of that time, at
    most ``MAX_COALESCE_SECONDS``, so events published meanwhile leave in the same write to each client:
    one system call per client carries many events when that is what the load needs.

    When it is not busy, a fan-out writes as it goes instead (``hold``/``release``): the first client is
    written right after it was queued, not after every client was, and the fan-out walks its clients once.
    """

    __slots__ = ("_held", "_held_since", "dirty", "holding", "last_end", "last_seconds")

    def __init__(self) -> None:
        self.dirty: list[Connection] = []
        self.last_seconds = 0.0
        self.last_end = 0.0
        self.holding = False
        self._held: list[Connection] = []
        self._held_since = 0.0

    def busy(self) -> bool:
        """The last flush was long and ended moments ago: events are coming faster than they are written."""
        return time.perf_counter() - self.last_end < self.last_seconds

    def hold(self) -> bool:
        """Before a fan-out: True when it should write as it goes (nothing waits, not busy); marks are then
        kept for ``release`` instead of scheduling a flush."""
        if self.dirty or self.holding or self.busy():
            return False
        self.holding = True
        self._held_since = time.perf_counter()
        return True

    def release(self) -> None:
        """After a fan-out that wrote as it went: write whoever it dirtied without writing (a replay's
        refill, a client of several channels)."""
        held, self._held = self._held, []
        self.holding = False
        for conn in held:
            conn.write_now()
        self.last_end = time.perf_counter()
        self.last_seconds = self.last_end - self._held_since

    def mark(self, conn: Connection) -> None:
        if self.holding:
            self._held.append(conn)
            return
        if not self.dirty:
            loop = asyncio.get_running_loop()
            # Only while busy (the last long flush ended moments ago); an idle gateway flushes at once.
            wait = min(MAX_COALESCE_SECONDS, self.last_seconds / 4) if self.busy() else 0.0
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


FLUSHER = Flusher()


class Connection:
    """A subscriber's delivery state, owned by the hub (subscriptions) and its session (everything else)."""

    __slots__ = (
        "_after",
        "_backlog",
        "_buffered",
        "_dirty",
        "_fast",
        "_frames_queued",
        "_pending",
        "_pending_bytes",
        "_queue",
        "_replayed_until",
        "_sample_countdown",
        "_samples",
        "budget",
        "cause",
        "channels",
        "client_code",
        "counted",
        "delivered",
        "enqueued",
        "filter",
        "framing",
        "high_water",
        "id",
        "max_queue_bytes",
        "queued",
        "reason",
        "single",
        "state",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        channels: Iterable[str],
        event_filter: EventFilter | None,
        max_queue_bytes: int,
    ) -> None:
        self.id = f"{_ID_PREFIX}{next(_IDS):x}"
        self.transport = transport
        self.framing = transport.framing
        self.channels = tuple(channels)
        self.single = len(self.channels) == 1  # takes a channel's events as one batch (Hub._on_events)
        self.filter = event_filter if event_filter is not None and not event_filter.is_empty else None
        self.max_queue_bytes = max_queue_bytes
        self.high_water = min(HIGH_WATER, max_queue_bytes // 4)
        transport.watermark(self.high_water)
        self.state = State.SYNCING
        self.queued = 0  # bytes in ``_queue``
        self.cause: Cause | None = None  # why the server closed it (None: open, or the client left)
        self.reason = ""
        self.client_code: int | None = None  # the close code the client sent, if it closed
        self.delivered = 0  # frames handed to the transport
        self.enqueued = 0  # frames ever queued; with ``delivered``, pins latency samples to their frames
        self.counted = False  # set by the hub once the connection shows in metrics
        self.budget: FrameBudget | None = None  # what the client may send (app/session.py)
        # Broadcast latency: every Nth live frame is sampled; (frame number, event ts) until written.
        self._sample_countdown = metrics.first_sample_countdown()
        self._samples: deque[tuple[int, float]] | None = None
        self._queue: list[Frame] = []
        self._frames_queued = 0  # frames in ``_queue`` (one item may hold a batch of frames)
        self._buffered = 0  # what the transport held at the last flush
        self._dirty = False
        self._pending: list[Event] = []
        self._pending_bytes = 0
        self._replayed_until: Position | None = None
        self._backlog: deque[Event] | None = None
        self._after = _ZERO
        self._fast = False  # live, unfiltered, nothing to skip: push_batch's common case (``_update_fast``)

    def _update_fast(self) -> None:
        self._fast = self.state is State.LIVE and self.filter is None and self._replayed_until is None

    @property
    def subprotocol(self) -> str:
        return self.framing.subprotocol

    @property
    def kind(self) -> str:
        """The ``transport`` label of metrics."""
        return self.transport.kind

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for this client: our queue, plus what the transport still holds."""
        return self.queued + self.transport.buffered()

    # -------------------------------------------------------------------------------- fan-out side
    def push(self, event: Event) -> bool:
        """Queue one event without awaiting; True when a frame was queued.

        Drops it (and closes 4008) when the bound would be passed; holds it while history replays.
        """
        state = self.state
        if state is State.LIVE:
            if self._replayed_until is not None:
                # Right after a resume the broker may still dispatch events the replay already sent.
                if event.position <= self._replayed_until:
                    return False
                self._replayed_until = None
                self._update_fast()
            if self.filter is not None and not self.filter.matches(event):
                return False
            frame = event.frame(self.framing)
            if frame is None or not self._enqueue(frame):  # None: quarantined for this framing
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
        batch was framed once for every subscriber.
        """
        if not self._fast:
            return sum(self.push(event) for event in batch.events)
        items, size = batch.items(self.framing)
        if self.queued + self._buffered + size > self.max_queue_bytes:
            self._overflow()
            return 0
        events = batch.events
        self._queue += items
        self.queued += size
        self._frames_queued += len(events)
        if not self._dirty:
            self._dirty = True
            FLUSHER.mark(self)
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
        """Queue a control frame (welcome, pong, filter answer) in order with the events."""
        if self.state in (State.SYNCING, State.LIVE):
            self._enqueue(frame)

    def _enqueue(self, frame: Frame) -> bool:
        size = len(frame)
        if self.queued + self._buffered + size > self.max_queue_bytes:
            self._overflow()
            return False
        self._queue.append(frame)
        self.enqueued += 1
        self.queued += size
        self._frames_queued += 1
        if not self._dirty:
            self._dirty = True
            FLUSHER.mark(self)
        return True

    def _overflow(self) -> None:
        """The client cannot keep up: drop what waits and close with 4008 (it may resume)."""
        metrics.MESSAGES_DROPPED.labels("slow_consumer").inc(1 + len(self._queue))
        self.close(Cause.SLOW_CONSUMER, flush=False)

    def go_live(self, replayed: list[Event], after: Position) -> None:
        """End the sync phase: send the replay, then the live events that came meanwhile, skipping repeats.

        The replay is fed to the queue as the client takes it (``_refill``), so a long history never
        overflows the queue at once; live events wait in ``_pending`` until the replay is out.
        """
        if self.state is not State.SYNCING:  # closed while it was attaching
            return
        self._backlog = deque(replayed) if replayed else None
        self._after = after
        self._refill()

    def _refill(self) -> None:
        backlog = self._backlog
        if backlog is not None:
            matches = self.filter.matches if self.filter is not None else None
            framing = self.framing
            while backlog and self.queued + self._buffered < self.max_queue_bytes // 2:
                event = backlog.popleft()
                self._after = event.position
                if matches is None or matches(event):
                    frame = event.frame(framing)
                    if frame is not None:  # None: quarantined for this framing
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
        self._update_fast()
        for event in pending:
            if event.position > after:
                self.push(event)

    def set_filter(self, event_filter: EventFilter) -> None:
        self.filter = None if event_filter.is_empty else event_filter
        self._update_fast()

    # -------------------------------------------------------------------------------- the way out
    def flush(self) -> None:
        """Write everything queued with one transport write, unless the transport is above the high-water
        mark (then ``on_writable`` flushes once it drained)."""
        self._dirty = False
        queue = self._queue
        if not queue or self.state is State.CLOSED or self._buffered > self.high_water:
            return
        self._queue = []
        self.queued = 0
        self.transport.write(queue)
        self.delivered += self._frames_queued
        self._frames_queued = 0
        samples = self._samples
        if samples:
            while samples and samples[0][0] <= self.delivered:
                metrics.observe_broadcast(samples.popleft()[1])
        buffered = self._buffered = self.transport.buffered()
        if buffered > self.max_queue_bytes:  # the kernel stopped taking this client's bytes
            self._overflow()
        elif self._backlog is not None and buffered < self.max_queue_bytes // 2:
            self._refill()

    def write_now(self) -> None:
        """Flush now if anything waits (a fan-out that writes as it goes, ``Flusher.hold``)."""
        if self._dirty:
            self.flush()

    def on_writable(self) -> None:
        """The transport drained below its low-water mark: write what waited, continue a replay."""
        self._buffered = self.transport.buffered()
        if self.state in (State.SYNCING, State.LIVE):
            self.flush()
            if self._backlog is not None:
                self._refill()

    # -------------------------------------------------------------------------------- closing
    def close(self, cause: Cause, reason: str | None = None, *, flush: bool = True) -> None:
        """Close once (later calls do nothing): let what is queued out first (``flush``) or drop it, then
        the transport sends the close after whatever it still holds."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self.cause, self.reason = cause, reason or cause.ending.reason
        self.state = State.CLOSING
        self._fast = False
        queue = self._queue
        if flush and queue:  # past the high water too: a drain lets the last frames out anyway
            self.transport.write(queue)
            self.delivered += self._frames_queued
        self._drop_queue()
        code = cause.code
        if code is not None:
            self.transport.close(code, self.reason)

    def closing(self, cause: Cause) -> None:
        """The transport is closing the connection itself (a protocol error it found): record why."""
        if self.cause is None:
            self.cause, self.reason = cause, cause.ending.reason
        if self.state is not State.CLOSED:
            self.state = State.CLOSING
        self._fast = False

    def _drop_queue(self) -> None:
        self._queue = []
        self.queued = 0
        self._frames_queued = 0
        self._pending = []
        self._backlog = None

    def finished(self) -> None:
        """The client is gone (or our close completed): nothing more is written."""
        self.state = State.CLOSED
        self._fast = False
        self._drop_queue()
