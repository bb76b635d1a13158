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
import base64
import binascii
import contextlib
import hashlib
import logging
import time
from http import HTTPStatus
from typing import Any, cast

from starlette.datastructures import Headers, QueryParams
from websockets.frames import Frame, Opcode
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol

from app.connection import Connection
from app.gateway import count_refused
from app.hub import Refused
from app.protocol import CloseCode, ProtocolError, ws_frame

log = logging.getLogger("eventcast.ws")
access_log = logging.getLogger("uvicorn.error")

SUBSCRIBER_PATHS = {"/ws/events": False, "/ws/events/filtered": True}  # path -> filters allowed in the query
CLOSE_TIMEOUT_SECONDS = 10.0
MAX_REQUEST_BYTES = 16 * 1024  # the upgrade request's head
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


class _Pending:
    """Stands in for the frame parser until the handshake is done."""

    state = WsState.CONNECTING


_PENDING: Any = _Pending()


class NativeWebSocket(asyncio.Protocol):
    """One subscriber socket, from the upgrade request to connection_lost."""

    kind = "websocket"
    direct = True  # Connection writes frames with write_frames(), no writer task
    __slots__ = (  # no per-instance dict: this object exists once per client
        "_client_code",
        "_close_timer",
        "_expiry",
        "_handshake",
        "_request",
        "conn",
        "encoding",
        "gateway",
        "last_seen",
        "max_size",
        "server_state",
        "transport",
        "ws",
    )

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.server_state = server_state
        self.gateway = app_state.get("gateway")
        self.max_size = config.ws_max_size
        self.ws: ServerProtocol = _PENDING  # an OPEN ServerProtocol once the handshake is answered
        self._request = b""
        self._handshake = b""
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
        if self.ws is _PENDING:
            self._request += data
            head, found, rest = self._request.partition(b"\r\n\r\n")
            if not found:
                if len(self._request) > MAX_REQUEST_BYTES:
                    self._refuse_http(431, "Request Header Fields Too Large", CloseCode.BAD_REQUEST)
                return
            self._request = b""
            self._on_request(head)
            if self.ws is _PENDING or not rest:
                return
            data = rest
        self.ws.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        if self.ws is not _PENDING:
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
            self._write(b"".join(frames) if len(frames) > 1 else frames[0])

    def _write(self, data: bytes) -> None:
        """Write to the socket; the 101 answer waits for the first frame so both leave in one send."""
        if self._handshake:
            data, self._handshake = self._handshake + data, b""
        if self.transport is not None:
            self.transport.write(data)

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
            if isinstance(event, Frame):
                self._on_frame(event)
        self._flush_protocol()

    def _flush_protocol(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                self._write(chunk)
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
        """Answer the upgrade request with a plain HTTP error and hang up."""
        body = text.encode()
        if self.transport is not None:
            self.transport.write(
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            self.transport.close()

    def _refuse_http(self, status: int, text: str, code: CloseCode) -> None:
        """Turn a would-be subscriber away before the WebSocket exists: count it (as ``code``), answer HTTP."""
        if self.gateway is not None:  # a server without the gateway (no subscribers) has nothing to count
            count_refused(code)
        self._reject(status, text)

    def _on_request(self, head: bytes) -> None:
        """The opening handshake (RFC 6455 4.2), answered here: websockets' generic one costs ~130 us."""
        gateway = self.gateway
        try:
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            raw = [
                (name.strip().lower().encode("latin-1"), value.strip().encode("latin-1"))
                for name, _, value in (line.partition(":") for line in lines)
            ]
        except ValueError:
            self._refuse_http(400, "malformed request", CloseCode.BAD_REQUEST)
            return
        headers = Headers(raw=raw)
        path, _, query_string = target.partition("?")
        filtered = SUBSCRIBER_PATHS.get(path)
        if gateway is None or filtered is None:
            self._reject(404, "Not Found")
            return
        key = headers.get("sec-websocket-key", "")
        if (
            method != "GET"
            or "websocket" not in headers.get("upgrade", "").lower()
            or "upgrade" not in headers.get("connection", "").lower()
            or headers.get("sec-websocket-version") != "13"
            or not _valid_key(key)
        ):
            self._refuse_http(400, "not a valid WebSocket upgrade (RFC 6455 4.2.1)", CloseCode.BAD_REQUEST)
            return
        if not gateway.security.origins.allows(headers.get("origin")):
            self._refuse_http(403, "origin not allowed", CloseCode.FORBIDDEN)
            return
        offered = [p.strip() for value in headers.getlist("sec-websocket-protocol") for p in value.split(",")]
        encoding, answer = gateway.choose_subprotocol(offered)
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        response = (
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            f"sec-websocket-accept: {accept}\r\n"
        )
        if answer is not None:
            response += f"sec-websocket-protocol: {answer}\r\n"
        if self.transport is None:
            return
        self._handshake = (response + "\r\n").encode()  # sent with the welcome frame (``_write``)
        if access_log.isEnabledFor(
            logging.INFO
        ):  # as uvicorn logs its WebSocket upgrades (tokens are redacted)
            peer = self.transport.get_extra_info("peername")
            access_log.info('%s:%s - "WebSocket %s" [accepted]', *(peer or ("-", "-"))[:2], target)
        self.ws = ServerProtocol(max_size=self.max_size, state=WsState.OPEN, logger=log)
        self.encoding = encoding
        peer = self.transport.get_extra_info("peername")
        client_ip = peer[0] if peer else ""
        try:
            admission = gateway.admit(headers, QueryParams(query_string), client_ip, filtered=filtered)
        except (ProtocolError, Refused) as exc:
            self._refuse(exc)
            return
        self.conn = gateway.new_connection(self, admission, encoding)
        gateway.sockets.add(self)
        if admission.since is None:  # most clients of a connect storm: no task, no loop turn (Hub.attach_now)
            try:
                attached = gateway.hub.attach_now(self.conn)
            except Refused as exc:
                self._refuse(exc)
                return
            if attached:
                self._expiry = gateway.security.close_at_expiry(self.conn, admission.principal)
                return
        gateway.track(asyncio.ensure_future(self._attach(admission)))

    async def _attach(self, admission: Any) -> None:
        conn, gateway = self.conn, self.gateway
        if conn is None or gateway is None:
            return
        try:
            await gateway.hub.attach(conn, admission.since)
        except Refused as exc:
            self._refuse(exc)
            return
        except Exception as exc:
            log.exception("attaching connection %s failed", conn.id)
            count_refused(exc)
            self.conn = None
            self._send_close(CloseCode.INTERNAL_ERROR, "internal error")
            return
        if self.conn is None:  # the client left while we were attaching
            await gateway.hub.detach(conn, self._client_code)
            return
        self._expiry = gateway.security.close_at_expiry(conn, admission.principal)

    def _refuse(self, exc: ProtocolError | Refused) -> None:
        """Turn the client away before its welcome: counted, forgotten, closed with the refusal's code."""
        count_refused(exc)
        self.conn = None
        self._send_close(exc.code, exc.reason)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            received = self.ws.close_rcvd
            self._client_code = received.code if received is not None else None
            return
        if self.conn is None or self.gateway is None:
            return
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY):
            # Pings are answered by ServerProtocol itself, pongs only prove the client is alive; both are
            # charged to the client's frame budget, so a flood of them cannot grow the write buffer.
            self.gateway.client_frame(self.conn)
            return
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
