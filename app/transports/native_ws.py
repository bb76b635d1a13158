"""The native WebSocket transport: a subscriber served straight from the socket, without ASGI.

The HTTP front (app/transports/http.py) hands an upgrade request for a subscriber path here, already parsed.
This transport answers the handshake (app/handshake.py), opens a Session, parses client frames with the
websockets library's sans-I/O ``ServerProtocol``, and writes the frames the hub framed once per event
(``Framing.WS_*``) straight into the socket, several per write. There is no task per connection: an idle
subscriber costs this object, its Session and Connection, and the socket.

Most subscribers never send anything but pongs, so the frame parser (about a kilobyte) is made only when a
client sends something else: pings go out as a constant frame, and a pong that arrives whole and alone is
recognised without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from starlette.datastructures import Headers
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol

from app.causes import Cause, CloseCode, Refusal
from app.handshake import Deflate, Reject, handshake, rejection_response
from app.protocol import Frame, Framing
from app.session import Query, Session, SubscribeRequest, count_refused
from app.transports.deflate import Inflate

if TYPE_CHECKING:
    from app.gateway import Gateway

log = logging.getLogger("eventcast.ws")
access_log = logging.getLogger("uvicorn.error")

#: Path -> whether it takes filters in its query.
SUBSCRIBER_PATHS = {"/ws/events": False, "/ws/events/filtered": True}
#: How long the other side has to answer our close frame before the socket is cut.
CLOSE_TIMEOUT_SECONDS = 10.0

#: An empty ping, and the longest masked pong recognised without the frame parser (header, mask, payload).
PING_FRAME = b"\x89\x00"
_MAX_FAST_PONG = 6 + 125

#: What the frame parser's own closes mean (it fails a connection with these codes by itself).
_PARSER_CLOSES: dict[int, Cause] = {
    CloseCode.TOO_BIG: Cause.TOO_BIG,
    CloseCode.PROTOCOL_ERROR: Cause.PROTOCOL_ERROR,
    CloseCode.INVALID_DATA: Cause.INVALID_UTF8,
}


class NativeWebSocket(asyncio.Protocol):
    """One subscriber socket, from the upgrade request to connection_lost."""

    kind = "websocket"
    __slots__ = (  # no per-instance dict: this object exists once per client
        "_client_code",
        "_close_timer",
        "_deflate",
        "_fragments",
        "_handshake",
        "framing",
        "gateway",
        "last_seen",
        "open",
        "server_state",
        "session",
        "transport",
        "ws",
    )

    def __init__(self, gateway: Gateway, server_state: Any) -> None:
        self.gateway = gateway
        self.server_state = server_state  # uvicorn's: its shutdown calls ``shutdown`` on us
        self.open = False  # the upgrade was accepted and no close was sent or received
        self.ws: ServerProtocol | None = None  # the frame parser, made when first needed (``_parser``)
        self._deflate: Deflate | None = None
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.framing = Framing.WS_JSON
        self.last_seen: float | None = time.monotonic()
        self._handshake = b""  # the 101 answer, sent in the same write as the first frame
        self._fragments: list[bytes] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._client_code: int | None = None

    # ------------------------------------------------------------------------------ the upgrade
    def upgrade(
        self,
        method: str,
        http_version: str,
        path: str,
        query: str,
        headers: Sequence[tuple[bytes, bytes]],
        client_ip: str,
    ) -> None:
        """The request head, as the HTTP front parsed it: answer the handshake and open the session."""
        decoded = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
        decision = handshake(
            method, http_version, decoded, deflate=self.gateway.settings.ws_per_message_deflate
        )
        if isinstance(decision, Reject):
            count_refused(Refusal(decision.cause, decision.reason))
            self._reject(decision.cause.ending.status, decision.reason, decision.extra_headers)
            return
        self._handshake = decision.response
        self.framing = Framing.for_websocket(decision.subprotocol, decision.deflate is not None)
        self._deflate = decision.deflate
        self.open = True
        if access_log.isEnabledFor(logging.INFO):  # as uvicorn logs its WebSocket upgrades (tokens redacted)
            access_log.info('%s - "WebSocket %s%s" [accepted]', client_ip, path, f"?{query}" if query else "")
        request = SubscribeRequest(
            path=path,
            query=Query(query),
            headers=Headers(raw=list(headers)),
            client_ip=client_ip,
            filtered=SUBSCRIBER_PATHS[path],
        )
        self.session = Session(self.gateway, self)
        self.session.open(request)

    # ------------------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.server_state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
        session, self.session = self.session, None
        if session is not None:
            session.gone(self._client_code)

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        ws = self.ws
        if ws is None:
            if not self.open:
                return  # rejected or closed: nothing more is read
            if _is_pong(data):  # the usual answer to our ping: no parser needed
                if self.session is not None:
                    self.session.charge()
                return
            ws = self._parser()
        ws.receive_data(data)
        self._process(ws)

    def eof_received(self) -> bool | None:
        if self.open or self.ws is not None:
            ws = self._parser()
            ws.receive_eof()
            self._process(ws)
        return None

    def _parser(self) -> ServerProtocol:
        """The frame parser, made on first use: a client message, a close, anything but a lone pong."""
        ws = self.ws
        if ws is None:
            ws = self.ws = ServerProtocol(
                max_size=self.gateway.settings.max_control_bytes, state=WsState.OPEN, logger=log
            )
            if self._deflate is not None:  # what the client sends may be compressed
                ws.extensions = [Inflate(self._deflate)]
        return ws

    def pause_writing(self) -> None:
        pass  # the connection keeps frames in its queue while buffered() is above HIGH_WATER

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.writable()

    # ------------------------------------------------------------------------------ the session's side
    def write(self, frames: list[Frame]) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and self.open:
            if self.ws is None or self.ws.state is WsState.OPEN:
                first = frames[0]
                if len(frames) == 1 and isinstance(first, bytes):
                    self._write(first)
                else:
                    self._write(b"".join(f if isinstance(f, bytes) else f.encode() for f in frames))

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def watermark(self, high: int) -> None:
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high=high, low=high // 4)

    def close(self, code: int, reason: str) -> None:
        if not self.open:
            return
        ws = self._parser()
        if ws.state is WsState.OPEN:
            ws.send_close(code, reason)
            self._flush_protocol(ws, slow=code == CloseCode.SLOW_CONSUMER)
            if code == CloseCode.INTERNAL_ERROR and self.transport is not None:
                # A client silent past the idle timeout, or a bug here: no close handshake to wait for.
                # The close frame still goes out first (close() flushes), then the socket ends.
                self.transport.close()

    def refuse(self, refusal: Refusal) -> None:
        if refusal.cause.ending.before_upgrade:
            self._reject(refusal.status, refusal.reason)
        else:
            self.close(refusal.code, refusal.reason)

    def ping(self) -> None:
        ws = self.ws
        if ws is None:
            if self.open:
                self._write(PING_FRAME)
        elif ws.state is WsState.OPEN:
            ws.send_ping(b"")
            self._flush_protocol(ws)

    def shutdown(self) -> None:
        """uvicorn calls this for every open connection when the server stops."""
        if self.session is not None and self.session.conn is not None:
            self.session.close(Cause.SHUTDOWN)
        else:
            self.close(CloseCode.SERVICE_RESTART, "server shutdown")

    # ------------------------------------------------------------------------------ internals
    def _write(self, data: bytes) -> None:
        """Write to the socket; the 101 answer waits for the first frame so both leave in one send."""
        if self._handshake:
            data, self._handshake = self._handshake + data, b""
        if self.transport is not None:
            self.transport.write(data)

    def _reject(self, status: int, reason: str, extra_headers: Sequence[tuple[str, str]] = ()) -> None:
        """Answer the upgrade request with a plain HTTP error and hang up."""
        self.open = False
        self.ws = None
        self._handshake = b""
        if self.transport is not None:
            self.transport.write(rejection_response(status, reason, extra_headers))
            self.transport.close()

    def _process(self, ws: ServerProtocol) -> None:
        session = self.session
        for event in ws.events_received():
            if isinstance(event, WsFrame) and session is not None:
                self._on_frame(ws, session, event)
        if session is not None and ws.state is not WsState.OPEN and ws.close_sent is not None:
            cause = _PARSER_CLOSES.get(int(ws.close_sent.code))
            if cause is not None:
                session.violation(cause)
        self._flush_protocol(ws)

    def _on_frame(self, ws: ServerProtocol, session: Session, frame: WsFrame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.CLOSE:
            received = ws.close_rcvd
            self._client_code = received.code if received is not None else None
            return
        if opcode is Opcode.PING or opcode is Opcode.PONG:
            # Pings are answered by ServerProtocol itself, pongs only prove the client is alive; both are
            # charged to the client's frame budget, so a flood of them cannot grow the write buffer.
            session.charge()
            return
        if opcode is Opcode.CONT:
            if self._fragments is None:
                return  # ServerProtocol already failed a continuation without a start
            self._fragments.append(bytes(frame.data))
        elif not frame.fin:
            self._fragments = [bytes([opcode is Opcode.TEXT]), bytes(frame.data)]
            return
        if self._fragments is not None:
            if not frame.fin:
                return
            text, *parts = self._fragments
            self._fragments = None
            data, is_text = b"".join(parts), text == b"\x01"
        else:
            data, is_text = bytes(frame.data), opcode is Opcode.TEXT
        if is_text:
            try:
                payload: str | bytes = data.decode()
            except UnicodeDecodeError:
                session.violation(Cause.INVALID_UTF8)
                ws.fail(CloseCode.INVALID_DATA, Cause.INVALID_UTF8.ending.reason)
                return
        else:
            payload = data
        session.message(payload)

    def _flush_protocol(self, ws: ServerProtocol, *, slow: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in ws.data_to_send():
            if chunk:
                self._write(chunk)
            elif not transport.is_closing():
                transport.write_eof() if transport.can_write_eof() else transport.close()
        if ws.close_expected() and self._close_timer is None:
            # A slow consumer gets the idle timeout to read up to its 4008 (a HIGH_WATER of data at most).
            timeout = self.gateway.settings.idle_timeout_seconds if slow else CLOSE_TIMEOUT_SECONDS
            self._close_timer = asyncio.get_running_loop().call_later(timeout, self._abort)
        if ws.state is WsState.CLOSED and not transport.is_closing():
            transport.close()

    def _abort(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()


def _is_pong(data: bytes) -> bool:
    """One whole masked pong frame, nothing more (RFC 6455 5.2: FIN + opcode 0xA, MASK + length <= 125)."""
    return (
        len(data) >= 6
        and data[0] == 0x8A
        and data[1] & 0x80 != 0
        and len(data) == 6 + (data[1] & 0x7F)
        and len(data) <= _MAX_FAST_PONG
    )
