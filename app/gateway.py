"""The running gateway: hub, settings and security together, and the subscriber logic both WebSocket paths share.

Two WebSocket front ends serve subscribers: the native protocol (``app.wsserver``, what ``eventcast serve``
runs) and the ASGI routes (``app.routes.ws``, for any ASGI server). Both admit a client, build its Connection
and handle its control messages here, so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.datastructures import QueryParams

from app import metrics
from app.auth import Principal
from app.connection import Connection, Transport
from app.filters import EventFilter
from app.hub import BrokerRefused, Hub, Refused
from app.limits import FrameBudget
from app.protocol import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOLS,
    CloseCode,
    EventId,
    ProtocolError,
    encode_control,
    parse_channels,
    parse_control,
)
from app.security import Security, Throttled
from app.settings import Settings

#: What a filter update costs from a connection's frame budget, in frames (settings.client_frame_rate).
FILTER_COST = 5

#: The keepalive sweeper pings 1/KEEPALIVE_SLICES of the sockets at a time (see Gateway._sweep).
KEEPALIVE_SLICES = 50


#: Close code of a refusal -> the ``reason`` label of eventcast_connections_refused_total (metrics.REFUSAL_REASONS).
REFUSAL_LABELS: dict[int, str] = {
    CloseCode.TRY_AGAIN_LATER: "overload",
    CloseCode.SERVICE_RESTART: "draining",
    CloseCode.UNAUTHENTICATED: "unauthenticated",
    CloseCode.FORBIDDEN: "forbidden",
    CloseCode.POLICY: "forbidden",  # the ASGI path closes a disallowed Origin with 1008 (uvicorn answers 403)
    CloseCode.BAD_REQUEST: "bad_request",
}


def refusal_reason(cause: BaseException | CloseCode) -> str:
    """The one place that names why a subscriber was turned away: from the exception, or the close code used.

    Two refusals share 1013 with overload and are told apart by their type: the connect rate (``Throttled``)
    and a broker failure while attaching (``BrokerRefused``). Anything unexpected is ``error``.
    """
    if isinstance(cause, BrokerRefused):
        return "broker_unavailable"
    if isinstance(cause, Throttled):
        return "rate_limited"
    if isinstance(cause, ProtocolError | Refused):
        cause = cause.code
    if isinstance(cause, CloseCode):
        return REFUSAL_LABELS.get(cause, "error")
    return "error"


def count_refused(cause: BaseException | CloseCode) -> None:
    """Count one subscriber turned away before its welcome frame; every front end calls this once per refusal."""
    metrics.CONNECTIONS_REFUSED.labels(refusal_reason(cause)).inc()


class KeepAlive(Protocol):
    def keepalive(self, now: float, idle_timeout: float) -> None: ...


@dataclass(slots=True)
class Admission:
    """What a subscriber asked for, once checked."""

    channels: list[str]
    since: EventId | None
    event_filter: EventFilter | None
    principal: Principal | None


class Gateway:
    def __init__(self, settings: Settings, hub: Hub, security: Security) -> None:
        self.settings = settings
        self.hub = hub
        self.security = security
        self.sockets: set[KeepAlive] = set()  # native WebSockets, pinged by the keepalive sweeper
        self._tasks: set[asyncio.Future[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------ subscribers
    @staticmethod
    def choose_subprotocol(offered: list[str]) -> tuple[str, str | None]:
        """(encoding, subprotocol to answer): the first offered that we speak; JSON when none is offered."""
        for name in offered:
            if name in SUBPROTOCOLS:
                return name, name
        return SUBPROTOCOL_JSON, None

    def admit(
        self, headers: Mapping[str, str], query: QueryParams, client_ip: str, *, filtered: bool
    ) -> Admission:
        """Check a new subscriber. Raises ProtocolError or Refused with the close code to use."""
        channels = parse_channels(query.get("channels"))
        principal = self.security.admit_subscriber(headers, query, client_ip, channels)
        since_text = query.get("since")
        since = EventId.parse(since_text) if since_text else None
        event_filter = (
            EventFilter.from_query(query.get("types"), query.getlist("where")) if filtered else None
        )
        self.hub.check_capacity()
        return Admission(channels, since, event_filter, principal)

    def new_connection(self, transport: Transport, admission: Admission, encoding: str) -> Connection:
        conn = Connection(
            transport,
            channels=admission.channels,
            subprotocol=encoding,
            event_filter=admission.event_filter,
            max_queue_bytes=self.settings.send_queue_bytes,
        )
        conn.budget = FrameBudget(self.settings.client_frame_rate, self.settings.client_frame_burst)
        return conn

    @staticmethod
    def client_frame(conn: Connection, cost: float = 1.0) -> bool:
        """Charge one client frame to the connection's budget; past it, close with 1008 and return False."""
        if conn.budget is None or conn.budget.take(cost):
            return True
        conn.close_soon(CloseCode.POLICY, "too many messages: slow down", flush=False)
        return False

    @classmethod
    def handle_control(cls, conn: Connection, payload: str | bytes, encoding: str) -> None:
        """One client frame: replace the filter, or answer a ping; anything else closes with 4400.

        Every frame is charged to the connection's budget, a filter update ``FILTER_COST`` times (it
        compiles globs)."""
        if not cls.client_frame(conn):
            return
        try:
            control = parse_control(payload, encoding)
            if control["op"] == "filter":
                if not cls.client_frame(conn, FILTER_COST - 1):
                    return
                conn.set_filter(EventFilter.build(control.get("types"), control.get("where")))
                conn.push_frame(encode_control({"type": "eventcast.filter", "ok": True}, encoding))
            else:  # ping
                conn.push_frame(encode_control({"type": "eventcast.pong"}, encoding))
        except ProtocolError as exc:
            conn.close_soon(exc.code, exc.reason)

    # ------------------------------------------------------------------------------ background work
    def track(self, future: asyncio.Future[Any]) -> None:
        """Keep a reference to a fire-and-forget task until it is done."""
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="eventcast-keepalive")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _sweep(self) -> None:
        """Ping every native socket once per half idle timeout; close the ones silent for the whole timeout.

        The pings are spread over the period in slices (at most ``KEEPALIVE_SLICES``, ~0.1 s apart or more):
        pinging 10,000 clients at once is ~100 ms of system calls that a broadcast would wait behind.
        """
        idle = self.settings.idle_timeout_seconds
        period = idle / 2
        slices = max(1, min(KEEPALIVE_SLICES, int(period / 0.1)))
        due: list[KeepAlive] = []
        per_slice = 0
        while True:
            await asyncio.sleep(period / slices)
            if not due:
                due = list(self.sockets)
                per_slice = -(-len(due) // slices)
            now = time.monotonic()
            for socket in due[-per_slice:]:
                socket.keepalive(now, idle)
            del due[-per_slice:]
