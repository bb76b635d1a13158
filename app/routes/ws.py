"""WebSocket endpoints: ``/ws/events`` and ``/ws/events/filtered``. Thin: parsing here, the work in the hub."""

from __future__ import annotations

import contextlib
import logging

from fastapi import APIRouter, WebSocket

from app.connection import Frame
from app.gateway import Gateway, count_refused
from app.hub import Refused
from app.protocol import CloseCode, ProtocolError

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


async def refuse(websocket: WebSocket, answer: str | None, code: int, reason: str) -> None:
    """Accept, then close with a code and reason: a browser can read those, not an HTTP 403."""
    await websocket.accept(subprotocol=answer)
    with contextlib.suppress(Exception):
        await websocket.close(code, reason)


async def serve_subscriber(websocket: WebSocket, *, filtered: bool) -> None:
    """The ASGI path (any ASGI server, or `serve` with permessage-deflate); `serve` normally uses app.wsserver."""
    gateway: Gateway = websocket.app.state.gateway
    encoding, answer = gateway.choose_subprotocol(list(websocket.scope.get("subprotocols", [])))
    if not gateway.security.origins.allows(websocket.headers.get("origin")):
        count_refused(CloseCode.POLICY)
        await websocket.close(CloseCode.POLICY, "origin not allowed")  # before accept: uvicorn answers 403
        return
    try:
        client_ip = websocket.client.host if websocket.client else ""
        admission = gateway.admit(websocket.headers, websocket.query_params, client_ip, filtered=filtered)
    except (ProtocolError, Refused) as exc:
        count_refused(exc)
        await refuse(websocket, answer, exc.code, exc.reason)
        return

    await websocket.accept(subprotocol=answer)
    conn = gateway.new_connection(WebSocketTransport(websocket), admission, encoding)
    try:
        await gateway.hub.attach(conn, admission.since)
    except Refused as exc:
        count_refused(exc)
        with contextlib.suppress(Exception):
            await websocket.close(exc.code, exc.reason)
        return
    except Exception as exc:  # uvicorn closes the socket with 1011
        count_refused(exc)
        raise
    expiry = gateway.security.close_at_expiry(conn, admission.principal)

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
            gateway.handle_control(conn, payload, encoding)
    except Exception as exc:  # a transport error: the client is gone
        log.debug("connection %s ended: %r", conn.id, exc)
    finally:
        if expiry is not None:
            expiry.cancel()
        await gateway.hub.detach(conn, client_code)
