"""The ASGI WebSocket transport: ``/ws/events`` and ``/ws/events/filtered`` for any ASGI server.

``eventcast serve`` serves subscribers with the native transport; this one runs under other ASGI servers,
with ``EVENTCAST_WS_ENGINE=asgi``, and when permessage-deflate is on (uvicorn's WebSocket compresses). The
endpoints are plain ASGI apps: the session decides, this module only moves messages. Sends are awaited by a
Pump; keepalive pings are the server's (uvicorn's ``ws_ping_interval``), so ``last_seen`` is None here.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from app.causes import Refusal
from app.handshake import choose_subprotocol
from app.protocol import SUBPROTOCOL_MSGPACK, Frame, Framing
from app.session import Query, Session, SubscribeRequest
from app.transports.pump import Pump, Pumped


class AsgiWebSocket(Pumped):
    """A session's transport over ASGI WebSocket messages."""

    kind = "websocket"
    last_seen: float | None = None

    def __init__(self, send: Send, framing: Framing, answer: str | None) -> None:
        self._send_message = send
        self.framing = framing
        self._answer = answer
        self.pump = Pump(self._send, opening=self._accept)

    async def _accept(self) -> None:
        await self._send_message({"type": "websocket.accept", "subprotocol": self._answer})

    async def _send(self, frame: Frame) -> None:
        if isinstance(frame, str):
            await self._send_message({"type": "websocket.send", "text": frame})
        else:
            await self._send_message({"type": "websocket.send", "bytes": frame})

    def close(self, code: int, reason: str) -> None:
        async def close() -> None:
            await self._send_message({"type": "websocket.close", "code": code, "reason": reason})

        self.pump.finish(close)

    def refuse(self, refusal: Refusal) -> None:
        if refusal.cause.ending.before_upgrade and not self.pump.started:
            # Closing before the accept makes the server answer the upgrade with HTTP 403.
            self.pump = Pump(self._send)
            self.close(refusal.code, refusal.reason)
        else:
            self.close(refusal.code, refusal.reason)

    def ping(self) -> None:
        pass  # the ASGI server pings


class AsgiSubscriberEndpoint:
    """One ASGI app per subscriber path."""

    def __init__(self, filtered: bool) -> None:
        self.filtered = filtered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        gateway = scope["app"].state.gateway
        encoding, answer = choose_subprotocol(list(scope.get("subprotocols", [])))
        framing = Framing.MSGPACK if encoding == SUBPROTOCOL_MSGPACK else Framing.JSON
        transport = AsgiWebSocket(send, framing, answer)
        session = Session(gateway, transport)
        transport.pump.on_writable = session.writable
        client = scope.get("client")
        session.open(
            SubscribeRequest(
                path=scope["path"],
                query=Query(scope.get("query_string", b"")),
                headers=Headers(scope=scope),
                client_ip=client[0] if client else "",
                filtered=self.filtered,
            )
        )
        client_code: int | None = None
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    client_code = message.get("code")
                    break
                text = message.get("text")
                session.message(text if text is not None else message.get("bytes") or b"")
        finally:
            await transport.pump.stop()
            session.gone(client_code)


routes = [
    WebSocketRoute("/ws/events", AsgiSubscriberEndpoint(filtered=False)),
    WebSocketRoute("/ws/events/filtered", AsgiSubscriberEndpoint(filtered=True)),
]
