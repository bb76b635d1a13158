"""The hub: owns connections and subscriptions, fans broker events out, drains and sheds. No web framework here.

Fan-out never awaits: each event is framed once per framing and queued to every subscriber's bounded queue;
one flush per loop turn writes each dirty connection (app/connection.py). The session (app/session.py) owns
everything else about a subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from app import metrics, telemetry
from app.broker.base import Broker, BrokerUnavailable
from app.causes import BrokerRefused, Cause, Refused, client_cause
from app.connection import FLUSHER, Connection, State
from app.protocol import (
    CONTROL_CHANNEL,
    WELCOME_TYPE,
    Event,
    EventId,
    EventIn,
    FrameBatch,
    Position,
    admin_fraction,
    admin_seconds,
    encode_control,
    now_ms,
)

log = logging.getLogger("eventcast.hub")

#: How long a drain or shed waits for the closed clients to be gone (they answer the close, or are cut).
CLOSE_WAIT_SECONDS = 10.0

#: Event types on CONTROL_CHANNEL.
CONTROL_SHED = "eventcast.shed"
CONTROL_DRAIN = "eventcast.drain"


class Hub:
    def __init__(
        self,
        broker: Broker,
        *,
        replica: str,
        max_connections: int,
        max_replay_events: int,
        instance: str = "",
        pod_wide: bool = False,
    ) -> None:
        self.broker = broker
        self.replica = replica
        # Several workers of one `eventcast serve` (``instance``): shed and drain requests reach them all
        # through the broker's log (request_shed, request_drain); one worker acts alone.
        self.instance = instance
        self.pod_wide = pod_wide
        self.max_connections = max_connections
        self.max_replay_events = max_replay_events
        self.draining = False
        self.connections: set[Connection] = set()
        self._subscribers: dict[str, set[Connection]] = {}
        self._subscribe_lock = asyncio.Lock()
        self.drain_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.broker.start(self._on_events, self._on_broker_state)
        if self.pod_wide:
            await self.broker.subscribe(CONTROL_CHANNEL)
        metrics.BROKER_UP.set(1 if self.broker.is_up else 0)
        metrics.CONNECTIONS_MAX.set(self.max_connections)

    async def stop(self) -> None:
        """Close whoever is left (uvicorn's shutdown also does) and release the broker."""
        for conn in list(self.connections):
            conn.close(Cause.SHUTDOWN)
        await self.broker.stop()

    @property
    def ready(self) -> bool:
        return self.broker.is_up and not self.draining

    def _on_broker_state(self, up: bool) -> None:
        metrics.BROKER_UP.set(1 if up else 0)

    # ------------------------------------------------------------------------------------ subscribers
    def check_capacity(self) -> None:
        """Raise Refused when a new connection must be turned away (draining or full)."""
        if self.draining:
            raise Refused(Cause.DRAINING)
        if len(self.connections) >= self.max_connections:
            raise Refused(Cause.OVERLOAD)

    def attach_now(self, conn: Connection) -> bool:
        """Attach without awaiting when nothing needs the broker: no ``since``, every channel subscribed.

        Returns False (nothing done) otherwise; then ``attach`` is the way. Saves a task, a lock and a loop
        turn per client in a connect storm, where most clients join channels others already hold. Raises
        Refused like ``attach``. Safe without the subscribe lock: a channel's subscriber set exists exactly
        while the broker subscription does (it is created after subscribing and removed before unsubscribing).
        """
        subscribers = self._subscribers
        if any(channel not in subscribers for channel in conn.channels):
            return False
        started = time.perf_counter()
        self.check_capacity()
        self.connections.add(conn)
        for channel in conn.channels:
            subscribers[channel].add(conn)
        self._go_live(conn, None, started, False, "no_since", [], self.broker.position)
        return True

    async def attach(self, conn: Connection, since: EventId | None) -> bool:
        """Register ``conn``, queue its welcome frame, replay history after ``since``, then go live.

        False when the client left meanwhile (then nothing of it is left here). Raises Refused.
        """
        started = time.perf_counter()
        self.check_capacity()
        self.connections.add(conn)
        try:
            await self._subscribe(conn)
            broker = self.broker
            after = broker.position  # without a (resumable) since, the client starts live from here
            recovered, reason, replayed = False, "no_since", []
            if since is not None:
                replay = await broker.replay(conn.channels, since, self.max_replay_events)
                recovered, reason, replayed = replay.recovered, replay.reason, replay.events
                metrics.RECOVERIES.labels("recovered" if recovered else "gap").inc()
                if recovered:
                    after = since.position
        except BrokerUnavailable:
            await self._forget(conn)
            raise BrokerRefused from None
        except BaseException:
            await self._forget(conn)
            raise
        if conn.state is State.CLOSED:  # gone while we waited for the broker
            await self._forget(conn)
            return False
        self._go_live(conn, since, started, recovered, reason, replayed, after)
        return True

    def _go_live(
        self,
        conn: Connection,
        since: EventId | None,
        started: float,
        recovered: bool,
        reason: str,
        replayed: list[Event],
        after: Position,
    ) -> None:
        """The welcome frame, the replay, live from ``after`` on; counted and logged."""
        welcome: dict[str, object] = {
            "type": WELCOME_TYPE,
            "connection": conn.id,
            "replica": self.replica,
            "recovered": recovered,
            "position": f"{self.broker.epoch}.{after}",
            "channels": list(conn.channels),
            "protocol": conn.subprotocol,
        }
        if not recovered:
            welcome["reason"] = reason
        conn.push_frame(encode_control(welcome, conn.framing))
        conn.go_live(replayed, after)
        conn.counted = True  # eventcast_connections is read from the hub at scrape time (metrics.refresh)
        metrics.CONNECTIONS_OPENED.inc()
        metrics.CONNECT_DURATION.observe(time.perf_counter() - started)
        log.info(
            "connect",
            extra={
                "event": "connect",
                "connection": conn.id,
                "transport": conn.transport.kind,
                "channels": len(conn.channels),
                "resumed": since is not None,
                "recovered": recovered,
            },
        )

    async def _subscribe(self, conn: Connection) -> None:
        taken: list[str] = []
        async with self._subscribe_lock:
            try:
                for channel in conn.channels:
                    subscribers = self._subscribers.get(channel)
                    if subscribers is None:
                        await self.broker.subscribe(channel)
                        subscribers = self._subscribers[channel] = set()
                        taken.append(channel)
                    subscribers.add(conn)
            except BaseException:
                # Roll back so the hub never holds a subscription the broker does not.
                for channel in conn.channels:
                    subscribers = self._subscribers.get(channel)
                    if subscribers is not None:
                        subscribers.discard(conn)
                for channel in taken:
                    if not self._subscribers.get(channel):
                        self._subscribers.pop(channel, None)
                        await self.broker.unsubscribe(channel)
                raise

    async def detach(self, conn: Connection) -> None:
        """The client is gone: forget it and count the close under its cause's label."""
        if conn not in self.connections:
            return
        await self._forget(conn)
        if conn.counted:
            by_server = conn.cause is not None
            cause = conn.cause if conn.cause is not None else client_cause(conn.client_code)
            metrics.CONNECTIONS_CLOSED.labels(cause.label).inc()
            log.info(
                "close",
                extra={
                    "event": "close",
                    "connection": conn.id,
                    "code": cause.code if by_server else conn.client_code,
                    "reason": conn.reason if by_server else "client closed",
                    "by": "server" if by_server else "client",
                    "label": cause.label,
                    "delivered": conn.delivered,
                },
            )

    async def _forget(self, conn: Connection) -> None:
        """Release a channel's upstream subscription after its last local subscriber."""
        self.connections.discard(conn)
        conn.finished()
        async with self._subscribe_lock:
            for channel in conn.channels:
                subscribers = self._subscribers.get(channel)
                if subscribers is None:
                    continue
                subscribers.discard(conn)
                if not subscribers:
                    del self._subscribers[channel]
                    await self.broker.unsubscribe(channel)

    def subscriber_count(self, channel: str) -> int:
        return len(self._subscribers.get(channel, ()))

    # ------------------------------------------------------------------------------------ events
    async def publish(self, events: Sequence[EventIn]) -> list[str]:
        if telemetry.tracer is None:
            ids = await self.broker.publish(events)
        else:
            with telemetry.publish_span(events):
                ids = await self.broker.publish(events)
        metrics.EVENTS_PUBLISHED.inc(len(ids))
        return ids

    def _on_events(self, events: Sequence[Event]) -> None:
        """Queue a batch of broker events to every local subscriber; never raises, never awaits.

        An event some encoding cannot carry was quarantined by ``Event.frame`` and is skipped for that
        encoding's subscribers. Anything else going wrong for one subscriber (a bug) closes that subscriber
        with 1011, so it resumes, and is logged and counted; the others get the batch.
        """
        started = time.perf_counter()
        started_ns = telemetry.now_ns() if telemetry.tracer is not None else 0
        subscribers = self._subscribers
        queued = 0
        now = now_ms()
        by_channel: dict[str, list[Event]] = {}
        for event in events:
            metrics.BROKER_LAG.observe(max(0.0, (now - event.ts) / 1000.0))
            by_channel.setdefault(event.channel, []).append(event)
        # Only a worker of several subscribes to the control channel; no client can (see request_shed).
        for command in by_channel.pop(CONTROL_CHANNEL, ()):
            try:
                self._on_control(command)
            except Exception:
                log.exception("control command %s failed", command.id)
        # One-channel clients take each channel's events as one pre-encoded batch. A client of several
        # channels must see them in log order (one id resumes them all), so it gets them event by event.
        # When the flusher is not busy, each one-channel client is written as soon as it was queued.
        direct = FLUSHER.hold()
        try:
            several: set[Connection] = set()
            for channel, channel_events in by_channel.items():
                conns = subscribers.get(channel)
                if not conns:
                    continue
                batch = FrameBatch(channel_events)
                for conn in conns:
                    try:
                        if conn.single:
                            queued += conn.push_batch(batch)
                            if direct:
                                conn.write_now()
                        else:
                            several.add(conn)
                    except Exception:
                        self._push_failed(conn)
            for event in events if several else ():
                for conn in subscribers.get(event.channel, ()):
                    try:
                        # Filtered, replaying or overflowing: not queued, not counted.
                        if conn in several and conn.push(event):
                            queued += 1
                    except Exception:
                        self._push_failed(conn)
        finally:
            if direct:
                FLUSHER.release()
        if queued:
            metrics.MESSAGES_DELIVERED.inc(queued)
        metrics.FANOUT_DURATION.observe(time.perf_counter() - started)
        if started_ns:  # tracing is on: one span per publish seen in this batch, linked to it
            try:
                telemetry.fanout_spans(events, subscribers, self.replica, started_ns)
            except Exception:
                log.exception("fan-out spans failed")

    @staticmethod
    def _push_failed(conn: Connection) -> None:
        """A bug while queueing to ``conn``: close it with 1011 (it may resume) and say so, once."""
        metrics.FANOUT_ERRORS.inc()
        if conn.state in (State.CLOSING, State.CLOSED):
            return
        log.exception("fan-out to %s failed; closing it", conn.id, extra={"event": "fanout.error"})
        conn.close(Cause.INTERNAL_ERROR, flush=False)

    # ------------------------------------------------------------------------------------ drain, shed
    async def request_shed(self, fraction: float, seconds: float) -> int | None:
        """Shed ``fraction`` of this pod's clients: this worker's now (returns how many), or, with several
        workers, every worker's as the command comes back through the broker (returns None)."""
        if not self.pod_wide:
            return await self.shed(fraction, seconds)
        await self._broadcast_control(CONTROL_SHED, {"fraction": fraction, "seconds": seconds})
        return None

    async def request_drain(self, seconds: float) -> None:
        """Drain this pod: this worker at once, or every worker of it through the broker."""
        if not self.pod_wide:
            self.start_drain(seconds)
            return
        await self._broadcast_control(CONTROL_DRAIN, {"seconds": seconds})

    async def _broadcast_control(self, op: str, data: dict[str, Any]) -> None:
        """Raises BrokerUnavailable: then no worker got the command."""
        await self.broker.publish(
            [EventIn(CONTROL_CHANNEL, op, {**data, "instance": self.instance}, now_ms())]
        )

    def _on_control(self, event: Event) -> None:
        """A shed or drain command from the control channel: acted on when it is addressed to this pod."""
        data = event.data
        if not isinstance(data, dict) or data.get("instance") != self.instance:
            return  # another pod's, or not ours to read
        try:
            seconds = admin_seconds(data.get("seconds"))
        except ValueError:
            seconds = 0.0
        if event.type == CONTROL_DRAIN:
            self.start_drain(seconds)
        elif event.type == CONTROL_SHED:
            with contextlib.suppress(ValueError):  # not a fraction: nothing to shed
                self._shed(admin_fraction(data.get("fraction")), seconds)

    def start_drain(self, seconds: float) -> asyncio.Task[None]:
        """Turn unready at once and close every client with 1012, in batches spread over ``seconds``."""
        if self.drain_task is None:
            self.draining = True
            log.info("drain started", extra={"event": "drain.start", "connections": len(self.connections)})
            self.drain_task = asyncio.create_task(self._drain(seconds), name="eventcast-drain")
        return self.drain_task

    async def _drain(self, seconds: float) -> None:
        await self._close_spread(list(self.connections), seconds, Cause.DRAIN)
        log.info("drain finished", extra={"event": "drain.done"})

    async def shed(self, fraction: float, seconds: float = 0.0) -> int:
        """Close ``fraction`` of this worker's clients with 1012 so they reconnect elsewhere."""
        return self._shed(fraction, seconds)

    def _shed(self, fraction: float, seconds: float) -> int:
        conns = [c for c in self.connections if c.state is State.LIVE]
        chosen = random.sample(conns, round(len(conns) * fraction))
        log.info("shedding", extra={"event": "shed", "connections": len(chosen)})
        task = asyncio.create_task(self._close_spread(chosen, seconds, Cause.SHED))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return len(chosen)

    async def _close_spread(self, conns: list[Connection], seconds: float, cause: Cause) -> None:
        """Close ``conns`` in up to ten batches a second over ``seconds``, then wait (bounded) until they
        are gone: each close lets the client's queued frames out first."""
        batches = max(1, min(len(conns), int(seconds * 10)))  # at most ten batches a second
        interval = seconds / batches
        for index in range(batches):
            for conn in conns[index::batches]:
                conn.close(cause)
            if index < batches - 1:
                await asyncio.sleep(interval)
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        while any(conn.state is not State.CLOSED for conn in conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
