"""WebSocket endpoints: ``/ws/events`` and ``/ws/events/filtered``. Thin: parsing here, the work in the hub."""

from __future__ import annotations

import contextlib
import logging

from fastapi import APIRouter, WebSocket

from app.connection import Connection, Frame
from app.hub import Hub, Refused
from app.protocol import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOLS,
    CloseCode,
    EventFilter,
    EventId,
    ProtocolError,
    encode_control,
    parse_channels,
    parse_control,
)
from app.security import Security

log = logging.getLogger("eventcast.ws")
router = APIRouter()


class WebSocketTransport:
    """Adapts a Starlette WebSocket to the hub's Transport protocol."""

    kind = "websocket"

    def __init__(self, websocket: WebSocket) -> None:
        self._send = websocket.send
        self._websocket = websocket

    async def send(self, frame: Frame) -> None:
        if isinstance(frame, str):
            await self._send({"type": "websocket.send", "text": frame})
        else:
            await self._send({"type": "websocket.send", "bytes": frame})

    async def close(self, code: int, reason: str) -> None:
        await self._websocket.close(code, reason)


@router.websocket("/ws/events")
async def ws_events(websocket: WebSocket) -> None:
    await serve_subscriber(websocket, filtered=False)


@router.websocket("/ws/events/filtered")
async def ws_events_filtered(websocket: WebSocket) -> None:
    await serve_subscriber(websocket, filtered=True)


def choose_subprotocol(offered: list[str]) -> tuple[str, str | None]:
    """(encoding to use, subprotocol to answer): the first offered that we speak; JSON when none is offered."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return name, name
    return SUBPROTOCOL_JSON, None


async def refuse(websocket: WebSocket, answer: str | None, code: int, reason: str) -> None:
    """Accept, then close with a code and reason: a browser can read those, not an HTTP 403."""
    await websocket.accept(subprotocol=answer)
    with contextlib.suppress(Exception):
        await websocket.close(code, reason)


async def serve_subscriber(websocket: WebSocket, *, filtered: bool) -> None:
    hub: Hub = websocket.app.state.hub
    settings = websocket.app.state.settings
    encoding, answer = choose_subprotocol(list(websocket.scope.get("subprotocols", [])))
    query = websocket.query_params
    security: Security = websocket.app.state.security
    if not security.origins.allows(websocket.headers.get("origin")):
        await websocket.close(CloseCode.POLICY, "origin not allowed")  # before accept: uvicorn answers 403
        return
    try:
        channels = parse_channels(query.get("channels"))
        client_ip = websocket.client.host if websocket.client else ""
        principal = security.admit_subscriber(websocket.headers, query, client_ip, channels)
        since = EventId.parse(query["since"]) if query.get("since") else None
        event_filter = (
            EventFilter.from_query(query.get("types"), query.getlist("where")) if filtered else None
        )
        hub.check_capacity()
    except (ProtocolError, Refused) as exc:
        await refuse(websocket, answer, exc.code, exc.reason)
        return

    await websocket.accept(subprotocol=answer)
    conn = Connection(
        WebSocketTransport(websocket),
        channels=channels,
        subprotocol=encoding,
        event_filter=event_filter,
        max_queue_bytes=settings.send_queue_bytes,
    )
    try:
        await hub.attach(conn, since)
    except Refused as exc:
        with contextlib.suppress(Exception):
            await websocket.close(exc.code, exc.reason)
        return
    expiry = security.close_at_expiry(conn, principal)

    client_code: int | None = None
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                client_code = message.get("code")
                break
            payload = message.get("text")
            if payload is None:
                payload = message.get("bytes") or b""
            try:
                control = parse_control(payload, encoding)
            except ProtocolError as exc:
                conn.close_soon(exc.code, exc.reason)
                continue
            if control["op"] == "filter":
                try:
                    conn.set_filter(EventFilter.build(control.get("types"), control.get("where")))
                except ProtocolError as exc:
                    conn.close_soon(exc.code, exc.reason)
                    continue
                conn.push_frame(encode_control({"type": "eventcast.filter", "ok": True}, encoding))
            else:  # ping
                conn.push_frame(encode_control({"type": "eventcast.pong"}, encoding))
    except Exception as exc:  # a transport error: the client is gone
        log.debug("connection %s ended: %r", conn.id, exc)
    finally:
        if expiry is not None:
            expiry.cancel()
        await hub.detach(conn, client_code)
