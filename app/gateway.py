"""The running gateway: what every session and transport of one worker shares.

Settings, the hub, security, the keepalive sweepers, the count of sockets that are not subscribers yet,
and the fire-and-forget tasks sessions start. The subscriber logic itself is app/session.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from app.hub import Hub
from app.security import Security
from app.session import Session
from app.settings import Settings


class HeadReader(Protocol):
    """A socket reading a request head (app/transports/http.py)."""

    def late(self) -> None: ...


#: A sweeper visits 1/SWEEP_SLICES of its sessions at a time (see Sweeper).
SWEEP_SLICES = 50


class Sweeper:
    """Visits every member once per ``period``, spread over the period in slices.

    At most ``SWEEP_SLICES`` slices, ~0.1 s apart or more: pinging 10,000 clients at once is ~100 ms of
    system calls that a broadcast would wait behind.
    """

    def __init__(self, period: float, visit: Callable[[Session, float], None], name: str) -> None:
        self.period = period
        self.visit = visit
        self.name = name
        self.members: set[Session] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        slices = max(1, min(SWEEP_SLICES, int(self.period / 0.1)))
        due: list[Session] = []
        per_slice = 0
        while True:
            await asyncio.sleep(self.period / slices)
            if not due:
                due = list(self.members)
                per_slice = -(-len(due) // slices)
            now = time.monotonic()
            for session in due[-per_slice:]:
                self.visit(session, now)
            del due[-per_slice:]


class Gateway:
    def __init__(self, settings: Settings, hub: Hub, security: Security) -> None:
        self.settings = settings
        self.hub = hub
        self.security = security
        #: Sockets accepted whose first request head is not complete yet (app/transports/http.py): they
        #: count against the connection limit.
        self.pending = 0
        #: Sockets reading a request head -> when it must have arrived (loop time); ``_cut_late_heads``.
        self.heads: dict[HeadReader, float] = {}
        self._head_sweeper: asyncio.Task[None] | None = None
        idle = settings.idle_timeout_seconds
        self.keepalive = Sweeper(idle / 2, lambda s, now: s.keepalive(now, idle), "eventcast-keepalive")
        self.heartbeat = Sweeper(
            settings.sse_heartbeat_seconds, lambda s, now: s.keepalive(now, idle), "eventcast-heartbeat"
        )
        self._tasks: set[asyncio.Future[Any]] = set()

    # ------------------------------------------------------------------------------ sessions
    def keep_alive(self, session: Session) -> None:
        """A session went live: its transport's keepalive takes it (the ASGI WebSocket's server pings)."""
        kind = session.transport.kind
        if kind == "sse":
            self.heartbeat.members.add(session)
        elif session.transport.last_seen is not None:
            self.keepalive.members.add(session)

    def forget(self, session: Session) -> None:
        self.keepalive.members.discard(session)
        self.heartbeat.members.discard(session)

    def sockets_full(self) -> bool:
        """No room for one more socket: subscribers plus would-be ones fill the limit and its headroom.

        The headroom (1%, at least 32) keeps probes and publishers getting through when subscribers fill a
        worker; they are refused as subscribers (1013) once their request is read.
        """
        limit = self.settings.max_connections
        return len(self.hub.connections) + self.pending >= limit + max(32, limit // 100)

    # ------------------------------------------------------------------------------ background work
    def track(self, future: asyncio.Future[Any]) -> None:
        """Keep a reference to a fire-and-forget task until it is done."""
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        self.keepalive.start()
        self.heartbeat.start()
        self._head_sweeper = asyncio.create_task(self._cut_late_heads(), name="eventcast-head-deadline")

    async def _cut_late_heads(self) -> None:
        """Four times per head deadline (at most once a second), cut the sockets whose head is late."""
        period = min(1.0, self.settings.handshake_timeout_seconds / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for reader in [r for r, deadline in self.heads.items() if deadline <= now]:
                self.heads.pop(reader, None)
                reader.late()

    async def stop(self) -> None:
        self.keepalive.stop()
        self.heartbeat.stop()
        if self._head_sweeper is not None:
            self._head_sweeper.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
