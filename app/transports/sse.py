"""The SSE transport: ``GET /sse/events`` and ``/sse/events/filtered``, the same stream as Server-Sent Events.

Frames (``Framing.SSE``, built once per event): every event is a default ``message`` with ``id:`` (the event
id) and ``data:`` (the same JSON envelope as on WebSocket); control frames are named events (``event:
eventcast.welcome`` with ``id:`` set to its position, so ``EventSource`` resumes from it even before the first
event); keep-alives are ``: heartbeat`` comments (the gateway's heartbeat sweeper). When the server ends a
stream it sends ``event: eventcast.close`` (code and reason, as on WebSocket) and a ``retry:`` hint, and the
browser reconnects with ``Last-Event-ID``. A refusal is an HTTP status with a JSON error (app/causes.py).
"""

from __future__ import annotations

import asyncio
import json

from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.causes import Refusal, Throttled
from app.limits import retry_after_header
from app.protocol import Frame, Framing, encode_control
from app.session import Query, Session, SubscribeRequest
from app.transports.pump import Pump, Pumped

HEARTBEAT = b": heartbeat\n\n"
CLOSE_EVENT = "eventcast.close"
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # ask nginx-like proxies not to buffer the stream
]


class SSETransport(Pumped):
    """A session's transport over one streaming HTTP response."""

    kind = "sse"
    framing = Framing.SSE
    last_seen: float | None = None  # nothing comes back on SSE: heartbeats find dead clients

    def __init__(self, send: Send, retry_ms: int) -> None:
        self._send_message = send
        self.retry_ms = retry_ms
        self.pump = Pump(self._send, opening=self._open)
        self._refusal: Refusal | None = None

    async def _open(self) -> None:
        refusal = self._refusal
        if refusal is not None:
            await self._answer_refusal(refusal)
            return
        await self._send_message({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await self._send(f"retry: {self.retry_ms}\n\n".encode())

    async def _answer_refusal(self, refusal: Refusal) -> None:
        status = refusal.status
        body = json.dumps({"error": {"code": refusal.cause.label, "message": refusal.reason}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if isinstance(refusal, Throttled):
            headers.append((b"retry-after", retry_after_header(refusal.retry_after).encode()))
        elif status == 503:
            headers.append((b"retry-after", b"1"))
        elif status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await self._send_message({"type": "http.response.start", "status": status, "headers": headers})
        await self._send_message({"type": "http.response.body", "body": body})

    async def _send(self, frame: Frame) -> None:
        if self._refusal is None:
            body = frame if isinstance(frame, bytes) else frame.encode()
            await self._send_message({"type": "http.response.body", "body": body, "more_body": True})

    def close(self, code: int, reason: str) -> None:
        """Say why, hint when to come back, and end the response."""

        async def end() -> None:
            if self._refusal is not None:
                return
            message = {"type": CLOSE_EVENT, "code": int(code), "reason": reason}
            tail = encode_control(message, Framing.SSE)
            assert isinstance(tail, bytes)
            tail += f"retry: {self.retry_ms}\n\n".encode()
            await self._send_message({"type": "http.response.body", "body": tail, "more_body": False})

        self.pump.finish(end)

    def refuse(self, refusal: Refusal) -> None:
        if self.pump.started:  # the stream is open: end it with the close event
            self.close(refusal.code, refusal.reason)
            return
        self._refusal = refusal

        async def nothing() -> None:
            pass

        self.pump.finish(nothing)

    def ping(self) -> None:
        self.pump.write([HEARTBEAT])


class SSEEndpoint:
    """One ASGI app per SSE path."""

    def __init__(self, filtered: bool) -> None:
        self.filtered = filtered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app_state = scope["app"].state
        gateway = app_state.gateway
        headers = Headers(scope=scope)
        query = Query(scope.get("query_string", b""))
        # Last-Event-ID (sent by EventSource on reconnect) wins over ``since`` / ``lastEventId`` in the URL.
        resume = headers.get("last-event-id") or query.get("since") or query.get("lastEventId")
        transport = SSETransport(send, gateway.settings.sse_retry_ms)
        session = Session(gateway, transport)
        transport.pump.on_writable = session.writable
        client = scope.get("client")
        session.open(
            SubscribeRequest(
                path=scope["path"],
                query=query,
                headers=headers,
                client_ip=client[0] if client else "",
                filtered=self.filtered,
                resume_from=resume,
            )
        )
        gone = asyncio.ensure_future(_client_gone(receive))
        ended = asyncio.ensure_future(transport.pump.ended.wait())
        try:
            await asyncio.wait((gone, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            ended.cancel()
            await transport.pump.stop()
            session.gone()


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


routes = [
    Route("/sse/events", SSEEndpoint(filtered=False), methods=["GET"]),
    Route("/sse/events/filtered", SSEEndpoint(filtered=True), methods=["GET"]),
]
