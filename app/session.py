"""A subscriber's whole life, whatever carries it: admission, attach, control, keepalive, expiry, detach.

Every front end (the native WebSocket, the ASGI WebSocket, SSE; app/transports/) only moves bytes: it turns
a request into a ``SubscribeRequest``, opens a ``Session`` on it, and reports what the client does (a
message, a ping, a protocol violation, leaving). Every decision is made here, the same for all of them:

1. Admission, in this order: the Origin allow-list; filters only on a ``/filtered`` path; channels; the
   connect rate per address; the token; the channel count and rights; ``since``; the filter; capacity
   (draining, full). A refusal is counted once under its cause's label and handed to the transport, which
   says it the way its table row says (app/causes.py: an HTTP status before a WebSocket exists and on SSE,
   a close code after the upgrade).
2. Attach: at once when nothing needs the broker (``Hub.attach_now``: no ``since``, every channel already
   subscribed), else in a task (subscribe upstream, replay).
3. While open: control messages and every client frame are charged to the connection's frame budget
   (past it: 1008); the token's expiry closes with 4401; the keepalive (app/gateway.py ``Sweeper``) pings
   and closes a client silent for the idle timeout (1011) where the transport can see pongs, and sends
   heartbeats where it cannot (SSE). The ASGI WebSocket leaves pings to its server (uvicorn).
4. Detach, once, when the transport reports the client gone: the hub forgets it and counts the close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote_plus

from starlette.datastructures import Headers

from app import metrics
from app.causes import Cause, ProtocolError, Refusal
from app.connection import Connection, State, Transport
from app.filters import EventFilter
from app.limits import FrameBudget
from app.protocol import EventId, encode_control, parse_channels, parse_control

if TYPE_CHECKING:
    from app.gateway import Gateway

log = logging.getLogger("eventcast.session")

#: What a filter update costs from a connection's frame budget, in frames (settings.client_frame_rate).
FILTER_COST = 5
#: Query parameters that only a ``/filtered`` path takes.
FILTER_PARAMS = ("types", "where")


class Query:
    """A request's query parameters, parsed once and cheaply (a subscriber's query is a few short values).

    The same decoding as ``urllib.parse.parse_qsl`` (``+`` is a space, ``%XX`` escapes, blank values kept),
    without its generality: it runs once per connection attempt, thousands a second in a connect storm.
    """

    __slots__ = ("_pairs",)

    def __init__(self, text: str | bytes = "") -> None:
        if isinstance(text, bytes):
            text = text.decode("latin-1")
        pairs: list[tuple[str, str]] = []
        for part in text.split("&"):
            if not part:
                continue
            name, _, value = part.partition("=")
            if "%" in part or "+" in part:
                name, value = unquote_plus(name), unquote_plus(value)
            pairs.append((name, value))
        self._pairs = pairs

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self._pairs:
            if key == name:
                return value
        return default

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]

    def __contains__(self, name: object) -> bool:
        return any(key == name for key, _ in self._pairs)


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """A would-be subscriber's request as every transport sees it."""

    path: str
    query: Query
    headers: Headers
    client_ip: str
    #: The path takes filters in its query (``/ws/events/filtered``, ``/sse/events/filtered``).
    filtered: bool
    #: Where to resume from, when the transport has its own way to say it (SSE's Last-Event-ID).
    resume_from: str | None = None


class SessionTransport(Transport, Protocol):
    """A transport, as the session drives it (app/transports/*)."""

    #: Monotonic time of the client's last bytes, or None where the transport cannot see them.
    last_seen: float | None

    def refuse(self, refusal: Refusal) -> None:
        """Turn the client away: an HTTP answer where nothing was accepted yet (always for a refusal
        with ``before_upgrade``), else its close code."""

    def ping(self) -> None:
        """Keepalive: a ping frame, or a heartbeat comment (SSE)."""


@dataclass(slots=True)
class Admission:
    """What a subscriber asked for, once checked."""

    channels: list[str]
    since: EventId | None
    event_filter: EventFilter | None
    expires_at: float | None


def count_refused(refusal: Refusal) -> None:
    """Count one subscriber turned away before its welcome frame (every path calls this once)."""
    metrics.CONNECTIONS_REFUSED.labels(refusal.cause.label).inc()


class Session:
    """One subscriber, from its request to the end of its connection."""

    __slots__ = ("_early", "_expiry", "conn", "gateway", "transport")

    def __init__(self, gateway: Gateway, transport: SessionTransport) -> None:
        self.gateway = gateway
        self.transport = transport
        self.conn: Connection | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._early: list[str | bytes] | None = []  # messages that came before the welcome was queued

    # ------------------------------------------------------------------------------ opening
    def open(self, request: SubscribeRequest) -> None:
        """Admit and attach (at once, or in a task); a refusal is counted and handed to the transport."""
        gateway = self.gateway
        try:
            admission = self._admit(request)
        except Refusal as exc:
            self.refuse(exc)
            return
        conn = self.conn = Connection(
            self.transport,
            channels=admission.channels,
            event_filter=admission.event_filter,
            max_queue_bytes=gateway.settings.send_queue_bytes,
        )
        conn.budget = FrameBudget(gateway.settings.client_frame_rate, gateway.settings.client_frame_burst)
        if admission.since is None:  # most clients of a connect storm: no task, no loop turn
            try:
                if gateway.hub.attach_now(conn):
                    self._live(admission)
                    return
            except Refusal as exc:
                self.refuse(exc)
                return
        gateway.track(asyncio.ensure_future(self._attach(admission)))

    def _admit(self, request: SubscribeRequest) -> Admission:
        gateway = self.gateway
        security = gateway.security
        if not security.origins.allows(request.headers.get("origin")):
            raise ProtocolError(Cause.ORIGIN)
        query = request.query
        if not request.filtered and any(name in query for name in FILTER_PARAMS):
            raise ProtocolError(Cause.BAD_QUERY, f"filters need {request.path}/filtered")
        channels = parse_channels(query.get("channels"))
        principal = security.admit_subscriber(request.headers, query, request.client_ip, channels)
        since_text = request.resume_from or query.get("since")
        since = EventId.parse(since_text.strip()) if since_text and since_text.strip() else None
        event_filter = (
            EventFilter.from_query(query.get("types"), query.getlist("where")) if request.filtered else None
        )
        gateway.hub.check_capacity()
        expires_at = principal.expires_at if principal is not None else None
        return Admission(channels, since, event_filter, expires_at)

    async def _attach(self, admission: Admission) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            attached = await self.gateway.hub.attach(conn, admission.since)
        except Refusal as exc:
            self.refuse(exc)
            return
        except Exception:
            log.exception("attaching connection %s failed", conn.id)
            self.refuse(Refusal(Cause.ATTACH_ERROR))
            return
        if attached:  # else the client left while we were attaching
            self._live(admission)

    def _live(self, admission: Admission) -> None:
        """Attached (the welcome is queued): messages that came early, the token's expiry and the keepalive."""
        early, self._early = self._early, None
        for payload in early or ():
            self._control(payload)
        if admission.expires_at is not None:
            delay = max(0.0, admission.expires_at - time.time())
            self._expiry = asyncio.get_running_loop().call_later(delay, self.close, Cause.TOKEN_EXPIRED)
        self.gateway.keep_alive(self)

    def refuse(self, refusal: Refusal) -> None:
        count_refused(refusal)
        self.conn = None
        self.transport.refuse(refusal)

    # ------------------------------------------------------------------------------ while open
    def message(self, payload: str | bytes) -> None:
        """A message from the client: a filter update or an application ping; anything else closes 4400."""
        conn = self.conn
        if conn is None or not self.charge():
            return
        if self._early is not None:  # still attaching: answers must come after the welcome
            self._early.append(payload)
            return
        self._control(payload)

    def _control(self, payload: str | bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            control = parse_control(payload, conn.subprotocol)
            if control["op"] == "filter":
                if not self.charge(FILTER_COST - 1):
                    return
                conn.set_filter(EventFilter.build(control.get("types"), control.get("where")))
                conn.push_frame(encode_control({"type": "eventcast.filter", "ok": True}, conn.framing))
            else:  # ping
                conn.push_frame(encode_control({"type": "eventcast.pong"}, conn.framing))
        except ProtocolError as exc:
            conn.close(Cause.BAD_MESSAGE, exc.reason)

    def charge(self, cost: float = 1.0) -> bool:
        """Charge a client frame (a ping, a pong, a message) to the budget; past it, close with 1008."""
        conn = self.conn
        if conn is None:
            return False
        if conn.budget is None or conn.budget.take(cost):
            return True
        conn.close(Cause.TOO_MANY_MESSAGES, flush=False)
        return False

    def violation(self, cause: Cause) -> None:
        """The transport closed the connection for a protocol error it found (1007, 1009): count it so."""
        conn = self.conn
        if conn is not None and conn.cause is None:
            conn.cause, conn.reason = cause, cause.ending.reason
            conn.state = State.CLOSING

    def close(self, cause: Cause, reason: str | None = None) -> None:
        if self.conn is not None:
            self.conn.close(cause, reason)

    def keepalive(self, now: float, idle_timeout: float) -> None:
        """From the keepalive sweeper: close a client silent for the idle timeout, else ping it."""
        conn = self.conn
        if conn is None or conn.state is not State.LIVE:
            return
        last_seen = self.transport.last_seen
        if last_seen is not None and now - last_seen > idle_timeout:
            conn.close(Cause.KEEPALIVE, flush=False)
            return
        self.transport.ping()

    def writable(self) -> None:
        if self.conn is not None:
            self.conn.on_writable()

    # ------------------------------------------------------------------------------ the end
    def gone(self, client_code: int | None = None) -> None:
        """The transport's connection ended: detach once (in a task: it may unsubscribe upstream)."""
        gateway = self.gateway
        gateway.forget(self)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        conn, self.conn = self.conn, None
        if conn is None:
            return
        conn.client_code = client_code
        conn.finished()
        gateway.track(asyncio.ensure_future(gateway.hub.detach(conn)))
