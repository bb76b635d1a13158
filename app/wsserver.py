"""The native WebSocket protocol: subscribers served straight from uvicorn's socket, without ASGI.

uvicorn hands a WebSocket upgrade to the protocol class named by its ``ws`` setting; ``eventcast serve`` names
this one. It parses the handshake and client frames with the websockets library's sans-I/O ``ServerProtocol``
and writes event frames that the hub built once per event (``Event.wire``) straight into the transport, several
per write. There is no task per connection: the hub's fan-out queues frames and one flush per loop turn writes
them, so an idle connection costs a protocol object, a Connection and the transport.

What a connection may do is decided by the same code as for the ASGI endpoints (``app.routes.ws.admit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

from starlette.datastructures import Headers, QueryParams
from websockets.datastructures import Headers as WsHeaders
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol

from app.connection import Connection
from app.hub import Refused
from app.protocol import CloseCode, ProtocolError, ws_frame

log = logging.getLogger("eventcast.ws")

SUBSCRIBER_PATHS = {"/ws/events": False, "/ws/events/filtered": True}  # path -> filters allowed in the query
CLOSE_TIMEOUT_SECONDS = 10.0


class NativeWebSocket(asyncio.Protocol):
    """One subscriber socket, from the upgrade request to connection_lost."""

    kind = "websocket"
    direct = True  # Connection writes frames with write_frames(), no writer task

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.server_state = server_state
        self.gateway = app_state.get("gateway")
        self.ws = ServerProtocol(max_size=config.ws_max_size, logger=log)
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self.encoding = ""
        self.last_seen = time.monotonic()
        self._close_timer: asyncio.TimerHandle | None = None
        self._client_code: int | None = None
        self._expiry: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.server_state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self.gateway is not None:
            self.gateway.sockets.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        conn, self.conn = self.conn, None
        if conn is not None and self.gateway is not None:
            task = asyncio.ensure_future(self.gateway.hub.detach(conn, self._client_code))
            self.gateway.track(task)

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        self.ws.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._process()
        return None

    def pause_writing(self) -> None:
        pass  # the connection's byte bound, not the transport's high-water mark, decides who is too slow

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.on_writable()

    # ------------------------------------------------------------------------------ Transport (hub side)
    def write_frames(self, frames: list[bytes]) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and self.ws.state is WsState.OPEN:
            transport.write(b"".join(frames) if len(frames) > 1 else frames[0])

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    async def send(self, frame: bytes | str) -> None:
        self.write_frames([ws_frame(frame)])

    async def close(self, code: int, reason: str) -> None:
        self._send_close(code, reason)

    def shutdown(self) -> None:
        """uvicorn calls this for every open connection when the server stops."""
        if self.conn is not None:
            self.conn.close_soon(CloseCode.SERVICE_RESTART, "server shutdown")
        else:
            self._send_close(CloseCode.SERVICE_RESTART, "server shutdown")

    # ------------------------------------------------------------------------------ internals
    def _process(self) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._flush_protocol()

    def _flush_protocol(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif not transport.is_closing():
                transport.write_eof() if transport.can_write_eof() else transport.close()
        if self.ws.close_expected() and self._close_timer is None:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT_SECONDS, self._abort)
        if self.ws.state is WsState.CLOSED and not transport.is_closing():
            transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _send_close(self, code: int, reason: str) -> None:
        if self.ws.state is WsState.OPEN:
            self.ws.send_close(code, reason)
            self._flush_protocol()

    def _reject(self, status: int, text: str) -> None:
        self.ws.send_response(self.ws.reject(status, text))
        self._flush_protocol()
        if self.transport is not None:
            self.transport.close()

    def _on_request(self, request: Request) -> None:
        gateway = self.gateway
        path, _, query_string = request.path.partition("?")
        filtered = SUBSCRIBER_PATHS.get(path)
        if gateway is None or filtered is None:
            self._reject(404, "Not Found")
            return
        headers = Headers(
            raw=[(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.raw_items()]
        )
        if not gateway.security.origins.allows(headers.get("origin")):
            self._reject(403, "origin not allowed")
            return
        offered = [p.strip() for h in request.headers.get_all("Sec-WebSocket-Protocol") for p in h.split(",")]
        encoding, answer = gateway.choose_subprotocol(offered)
        response = self.ws.accept(request)
        if response.status_code != 101:
            self.ws.send_response(response)
            self._flush_protocol()
            return
        if answer is not None:
            response.headers = WsHeaders(response.headers)
            response.headers["Sec-WebSocket-Protocol"] = answer
        self.ws.send_response(response)
        self._flush_protocol()
        self.encoding = encoding
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        client_ip = peer[0] if peer else ""
        try:
            admission = gateway.admit(headers, QueryParams(query_string), client_ip, filtered=filtered)
        except (ProtocolError, Refused) as exc:
            self._send_close(exc.code, exc.reason)
            return
        self.conn = gateway.new_connection(self, admission, encoding)
        gateway.sockets.add(self)
        gateway.track(asyncio.ensure_future(self._attach(admission)))

    async def _attach(self, admission: Any) -> None:
        conn, gateway = self.conn, self.gateway
        if conn is None or gateway is None:
            return
        try:
            await gateway.hub.attach(conn, admission.since)
        except Refused as exc:
            self.conn = None
            self._send_close(exc.code, exc.reason)
            return
        if self.conn is None:  # the client left while we were attaching
            await gateway.hub.detach(conn, self._client_code)
            return
        self._expiry = gateway.security.close_at_expiry(conn, admission.principal)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            received = self.ws.close_rcvd
            self._client_code = received.code if received is not None else None
            return
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY) or self.conn is None or self.gateway is None:
            return  # pings are answered by ServerProtocol itself; pongs only prove the client is alive
        payload: str | bytes = bytes(frame.data)
        if frame.opcode is Opcode.TEXT:
            with contextlib.suppress(UnicodeDecodeError):  # ServerProtocol already failed invalid UTF-8
                payload = bytes(frame.data).decode()
        self.gateway.handle_control(self.conn, payload, self.encoding)

    def keepalive(self, now: float, idle_timeout: float) -> None:
        """Called by the gateway's sweeper: ping, and close a client silent for the idle timeout."""
        if self.ws.state is not WsState.OPEN:
            return
        if now - self.last_seen > idle_timeout:
            self.ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush_protocol()
            if self.transport is not None:
                self.transport.close()
            return
        self.ws.send_ping(b"")
        self._flush_protocol()
