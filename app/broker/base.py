"""The Broker seam: what the hub needs from an engine. Engines: memory.py (default), redis.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.protocol import Event, EventId, EventIn, Position

#: Called by the broker, in log order, with every new event of a channel someone subscribed to.
Listener = Callable[[Sequence[Event]], None]
#: Called when the broker goes up (True) or down (False).
StateListener = Callable[[bool], None]


class BrokerUnavailable(Exception):
    """The engine cannot be reached; nothing of the failed call was accepted."""


@dataclass(slots=True)
class Replay:
    """What a resume gets: ``recovered`` is False when history no longer covers the gap (``reason`` says why)."""

    recovered: bool
    events: list[Event] = field(default_factory=list)
    reason: str = ""


class Broker(Protocol):
    """An event engine: one ordered log for all channels, with history and fan-out to every process.

    Callers' duties: ``start`` before anything else and ``stop`` once; ``subscribe``/``unsubscribe`` are
    reference-free (the hub counts local subscribers and calls them for the first and after the last).
    """

    @property
    def epoch(self) -> str: ...

    @property
    def is_up(self) -> bool: ...

    @property
    def position(self) -> Position:
        """Where this process's fan-out stands: every event after it will reach the listener."""
        ...

    async def start(self, listener: Listener, on_state: StateListener | None = None) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, events: Sequence[EventIn]) -> list[str]:
        """Append events in order; return their ids. Raises BrokerUnavailable when nothing was accepted."""
        ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def replay(self, channels: Sequence[str], since: EventId, limit: int) -> Replay:
        """Events of ``channels`` after ``since`` still in history, or ``recovered=False``."""
        ...

    async def ping(self) -> bool: ...


def create_broker(
    url: str, *, prefix: str, max_events: int, max_age_seconds: float, retry_seconds: float
) -> Broker:
    """Pick the engine from the URL scheme; engines are imported lazily."""
    scheme = url.split("://", 1)[0]
    if scheme == "memory":
        from app.broker.memory import MemoryBroker

        return MemoryBroker(max_events=max_events, max_age_seconds=max_age_seconds)
    if scheme in ("redis", "rediss", "unix"):
        from app.broker.redis import RedisBroker

        return RedisBroker(
            url,
            prefix=prefix,
            max_events=max_events,
            max_age_seconds=max_age_seconds,
            retry_seconds=retry_seconds,
        )
    raise ValueError(f"unknown broker scheme {scheme!r}: use memory:// or redis://")
