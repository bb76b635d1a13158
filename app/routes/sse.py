"""``GET /sse/events``: the WebSocket stream as Server-Sent Events, through the same hub and Connection.

Frames: every event is a default ``message`` with ``id:`` (the event id) and ``data:`` (the same JSON
envelope as on WebSocket); the welcome is ``event: eventcast.welcome`` with ``id:`` set to its position, so
``EventSource`` resumes from it even before the first event; keep-alives are ``: heartbeat`` comments; when
the server ends a stream it sends ``event: eventcast.close`` (code and reason, as on WebSocket) and a
``retry:`` hint, and the browser reconnects with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request, Response
from starlette.types import Receive, Scope, Send

from app.auth import Principal
from app.connection import Connection, Frame
from app.filters import EventFilter
from app.gateway import count_refused
from app.hub import Hub, Refused
from app.limits import retry_after_header
from app.protocol import (
    SUBPROTOCOL_JSON,
    WELCOME_TYPE,
    CloseCode,
    EventId,
    ProtocolError,
    parse_channels,
)
from app.routes.http import error
from app.security import Security, Throttled
from app.settings import Settings

router = APIRouter()

HEARTBEAT = ": heartbeat\n\n"
CLOSE_EVENT = "eventcast.close"
_EVENT_PREFIX = '{"id":"'  # how Event.frame starts every JSON event frame

#: HTTP answers for the refusals a WebSocket would get as close codes.
HTTP_STATUS = {
    CloseCode.BAD_REQUEST: (400, "bad_request"),
    CloseCode.UNAUTHENTICATED: (401, "unauthenticated"),
    CloseCode.FORBIDDEN: (403, "forbidden"),
    CloseCode.TRY_AGAIN_LATER: (503, "overloaded"),
    CloseCode.SERVICE_RESTART: (503, "draining"),
}


def _data_lines(text: str) -> str:
    if "\n" in text or "\r" in text:  # SSE ends a field at any line break: split into data lines
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\ndata: ")
    return f"data: {text}\n\n"


class _SSEFrames:
    """JSON frame -> SSE bytes, cached by frame: the frame string is shared by every subscriber of the
    event (Event.frame encodes once), so each event is converted once however many SSE clients get it."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._cache: dict[str, bytes] = {}

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, bytes):  # not produced for SSE connections; pass through untouched
            return frame
        cached = self._cache.get(frame)
        if cached is not None:
            return cached
        if frame.startswith(":"):
            return frame.encode()
        if frame.startswith(_EVENT_PREFIX):
            event_id = frame[len(_EVENT_PREFIX) : frame.index('"', len(_EVENT_PREFIX))]
            encoded = f"id: {event_id}\n{_data_lines(frame)}".encode()
            if len(self._cache) >= self.size:
                self._cache.clear()
            self._cache[frame] = encoded
            return encoded
        return control_frame(json.loads(frame), frame)


FRAMES = _SSEFrames()


def control_frame(message: dict[str, object], text: str) -> bytes:
    """A welcome/pong/close message as a named SSE event; the welcome carries its position as ``id``."""
    lines = f"event: {message.get('type', 'eventcast.control')}\n"
    if message.get("type") == WELCOME_TYPE and message.get("position"):
        lines += f"id: {message['position']}\n"
    return (lines + _data_lines(text)).encode()


class SSETransport:
    """Adapts an ASGI HTTP response to the hub's Transport protocol."""

    kind = "sse"

    def __init__(self, send: Send, retry_ms: int) -> None:
        self._send = send
        self.retry_ms = retry_ms
        self.finished = asyncio.Event()

    async def send(self, frame: Frame) -> None:
        await self._send({"type": "http.response.body", "body": FRAMES.encode(frame), "more_body": True})

    async def close(self, code: int, reason: str) -> None:
        """Say why, hint when to come back, and end the response."""
        if self.finished.is_set():
            return
        message = {"type": CLOSE_EVENT, "code": int(code), "reason": reason}
        tail = control_frame(message, json.dumps(message)) + f"retry: {self.retry_ms}\n\n".encode()
        try:
            await self._send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            self.finished.set()


class SSEResponse(Response):
    """Runs one SSE subscriber for the life of the response."""

    def __init__(
        self,
        hub: Hub,
        settings: Settings,
        security: Security,
        principal: Principal | None,
        channels: list[str],
        since: EventId | None,
        event_filter: EventFilter | None,
    ) -> None:
        super().__init__(media_type="text/event-stream")
        self.hub, self.settings, self.security = hub, settings, security
        self.principal, self.channels, self.since, self.event_filter = (
            principal,
            channels,
            since,
            event_filter,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = SSETransport(send, self.settings.sse_retry_ms)
        conn = Connection(
            transport,
            channels=self.channels,
            subprotocol=SUBPROTOCOL_JSON,  # shares the JSON frames WebSocket clients get
            event_filter=self.event_filter,
            max_queue_bytes=self.settings.send_queue_bytes,
        )
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # ask nginx-like proxies not to buffer the stream
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        retry = f"retry: {self.settings.sse_retry_ms}\n\n".encode()
        await send({"type": "http.response.body", "body": retry, "more_body": True})
        try:
            await self.hub.attach(conn, self.since)
        except Refused as exc:
            count_refused(exc)
            await transport.close(exc.code, exc.reason)
            return
        except Exception as exc:
            count_refused(exc)
            raise
        expiry = self.security.close_at_expiry(conn, self.principal)
        heartbeat = asyncio.create_task(self._heartbeat(conn), name=f"eventcast-sse-heartbeat-{conn.id}")
        waiters = [
            asyncio.create_task(_client_gone(receive)),
            asyncio.create_task(transport.finished.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (heartbeat, *waiters):
                task.cancel()
            if expiry is not None:
                expiry.cancel()
            await self.hub.detach(conn)

    async def _heartbeat(self, conn: Connection) -> None:
        while True:
            await asyncio.sleep(self.settings.sse_heartbeat_seconds)
            conn.push_frame(HEARTBEAT)


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _since(request: Request) -> EventId | None:
    """``Last-Event-ID`` (sent by EventSource on reconnect) wins over ``since`` / ``lastEventId`` in the URL."""
    raw = (
        request.headers.get("last-event-id")
        or request.query_params.get("since")
        or request.query_params.get("lastEventId")
    )
    return EventId.parse(raw.strip()) if raw and raw.strip() else None


@router.get("/sse/events", response_class=Response)
async def sse_events(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    settings: Settings = request.app.state.settings
    security: Security = request.app.state.security
    if not security.origins.allows(request.headers.get("origin")):
        count_refused(CloseCode.FORBIDDEN)
        return error(403, "origin_not_allowed", "this Origin may not use the gateway")
    query = request.query_params
    try:
        channels = parse_channels(query.get("channels"))
        client_ip = request.client.host if request.client else ""
        principal = security.admit_subscriber(request.headers, query, client_ip, channels)
        since = _since(request)
        types, where = query.get("types"), query.getlist("where")
        event_filter = EventFilter.from_query(types, where) if types or where else None
        hub.check_capacity()
    except Throttled as exc:
        count_refused(exc)
        return error(429, "rate_limited", exc.reason, {"Retry-After": retry_after_header(exc.retry_after)})
    except (ProtocolError, Refused) as exc:
        count_refused(exc)
        status, code = HTTP_STATUS.get(exc.code, (400, "bad_request"))
        headers = {"Retry-After": "1"} if status == 503 else None
        if status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return error(status, code, exc.reason, headers)
    return SSEResponse(hub, settings, security, principal, channels, since, event_filter)
