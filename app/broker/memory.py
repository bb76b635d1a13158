"""The in-process engine: one worker, history in memory, lost on restart (a new epoch tells clients so)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Sequence

from app.broker.base import Listener, Replay, StateListener
from app.protocol import ZERO, Event, EventId, EventIn, Position


def new_epoch() -> str:
    return secrets.token_hex(4)


class MemoryBroker:
    def __init__(self, *, max_events: int, max_age_seconds: float) -> None:
        self._epoch = new_epoch()
        self._max_events = max_events
        self._max_age_ms = max_age_seconds * 1000.0
        self._log: deque[Event] = deque()
        self._last = ZERO  # last position appended
        self._trimmed = ZERO  # highest position ever dropped from history
        self._dispatched = ZERO
        self._channels: set[str] = set()
        self._listener: Listener | None = None

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def is_up(self) -> bool:
        return True

    @property
    def position(self) -> Position:
        return self._dispatched

    async def start(self, listener: Listener, on_state: StateListener | None = None) -> None:
        self._listener = listener
        if on_state is not None:
            on_state(True)

    async def stop(self) -> None:
        self._listener = None

    async def ping(self) -> bool:
        return True

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    def _next_position(self) -> Position:
        ms = int(time.time() * 1000)
        last = self._last
        self._last = Position(ms, 0) if ms > last.ms else Position(last.ms, last.seq + 1)
        return self._last

    async def publish(self, events: Sequence[EventIn]) -> list[str]:
        if not events:
            return []
        appended: list[Event] = []
        for item in events:
            position = self._next_position()
            event = Event(
                id=f"{self._epoch}.{position}",
                position=position,
                channel=item.channel,
                type=item.type,
                data_json=item.json,
                ts=item.ts,
                trace=item.trace,
                _data=item.data,  # validated JSON: the value is what the text decodes to
            )
            self._log.append(event)
            appended.append(event)
        self._trim()
        # Fan out on the next loop turn, in order, so the publisher's answer is not held up by delivery.
        asyncio.get_running_loop().call_soon(self._dispatch, appended)
        return [event.id for event in appended]

    def _dispatch(self, events: list[Event]) -> None:
        self._dispatched = events[-1].position
        wanted = [event for event in events if event.channel in self._channels]
        if wanted and self._listener is not None:
            self._listener(wanted)

    def _trim(self) -> None:
        log = self._log
        oldest_ms = time.time() * 1000.0 - self._max_age_ms
        while log and (len(log) > self._max_events or log[0].position.ms < oldest_ms):
            self._trimmed = log.popleft().position

    async def replay(self, channels: Sequence[str], since: EventId, limit: int) -> Replay:
        if since.epoch != self._epoch:
            return Replay(False, reason="epoch_changed")
        if since.position > self._last:
            return Replay(False, reason="unknown_position")
        self._trim()
        if since.position < self._trimmed:
            return Replay(False, reason="trimmed")
        wanted = set(channels)
        events = [e for e in self._log if e.position > since.position and e.channel in wanted]
        if len(events) > limit:
            return Replay(False, reason="too_many")
        return Replay(True, events)
