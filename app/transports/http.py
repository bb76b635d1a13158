"""The HTTP front of the public port: uvicorn's httptools protocol, with every socket bounded before it is
anything else, and subscriber upgrades handed to the native WebSocket transport already parsed.

What a socket may cost before it is a subscriber (or a plain HTTP request) is bounded here:

- a request head of at most ``max_request_head_bytes`` and ``max_request_headers`` lines, else 431;
- a deadline (``handshake_timeout_seconds``) for the head to arrive, from the accept (or from the first byte
  of a later request on a kept-alive connection), else 408;
- sockets whose first head is not complete yet count against the connection limit (``Gateway.pending``);
  past the limit and its headroom a new socket is answered 503 at once.

Each refusal is counted in ``eventcast_connections_refused_total`` under its cause (app/causes.py).

This builds on uvicorn's ``HttpToolsProtocol``: its constructor, its parser callbacks (``on_message_begin``,
``on_url``, ``on_header``, ``on_headers_complete``), its per-request ``url``/``headers``/``parser`` and
``handle_websocket_upgrade``. pyproject.toml bounds uvicorn to the versions tested, and
tests/transports/test_uvicorn_contract.py fails if that contract changes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.causes import Cause, Refusal
from app.handshake import rejection_response
from app.session import count_refused
from app.transports.native_ws import SUBSCRIBER_PATHS, NativeWebSocket

log = logging.getLogger("eventcast.http")


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol for the public port, with the limits above and the native upgrade."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        gateway = self.app_state.get("gateway")
        self._gateway = gateway
        settings = gateway.settings if gateway is not None else None
        self._native = settings is not None and settings.ws_engine == "native"
        self._max_head = settings.max_request_head_bytes if settings is not None else 16 * 1024
        self._max_headers = settings.max_request_headers if settings is not None else 100
        self._deadline_seconds = settings.handshake_timeout_seconds if settings is not None else 10.0
        self._head_bytes = 0  # of the request head being read: url and header lines, as parsed
        self._raw_bytes = 0  # bytes received while a head is being read (a line that never ends)
        self._in_head = False
        self._pending = False  # counted in Gateway.pending
        self._refused = False

    # ------------------------------------------------------------------------------ the socket
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(cast(asyncio.Transport, transport))
        gateway = self._gateway
        if gateway is not None:
            if gateway.sockets_full():
                self._refuse(Cause.SOCKETS_FULL)
                return
            gateway.pending += 1
            self._pending = True
        self._in_head = True
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._not_pending()
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, plus the head bound; bytes that follow an upgrade head go to the WebSocket."""
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._raw_bytes += len(data)  # a line that never ends is buffered by the parser: bound it too
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                offset = upgrade.args[0] if upgrade.args else len(data)
                self._upgrade(data[offset:])
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if not self._refused:
                self._refuse(Cause.MALFORMED_REQUEST, "Invalid HTTP request received.")
            return
        if self._in_head and not self._refused and self._raw_bytes > self._max_head:
            self._refuse(Cause.HEAD_TOO_LARGE)

    # ------------------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._gateway is not None and self not in self._gateway.heads:
            self._start_deadline()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if len(self.headers) >= self._max_headers:
            self._refuse(Cause.HEAD_TOO_LARGE, f"at most {self._max_headers} header lines")
            raise _Stop
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_bytes = 0
        self._stop_deadline()
        self._not_pending()
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self._max_head and not self._refused:
            self._refuse(Cause.HEAD_TOO_LARGE)
            raise _Stop

    # ------------------------------------------------------------------------------ the upgrade
    def _upgrade(self, rest: bytes) -> None:
        path, _, query = self.url.decode("latin-1").partition("?")
        gateway = self._gateway
        if not self._native or gateway is None:
            self.handle_websocket_upgrade()  # uvicorn's WebSocket and the ASGI app
            return
        if path not in SUBSCRIBER_PATHS:  # the only WebSocket endpoints there are
            self._refused = True
            self.transport.write(rejection_response(404, "Not Found"))
            self.transport.close()
            return
        self.connections.discard(self)
        protocol = NativeWebSocket(gateway, self.server_state)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        client = self.client[0] if self.client else ""
        protocol.upgrade(
            self.scope["method"], self.parser.get_http_version(), path, query, self.headers, client
        )
        if rest:
            protocol.data_received(rest)

    # ------------------------------------------------------------------------------ refusals
    def _refuse(self, cause: Cause, reason: str | None = None) -> None:
        """Answer with the cause's HTTP status, count it, hang up; nothing more is read."""
        self._refused = True
        self._stop_deadline()
        refusal = Refusal(cause, reason)
        count_refused(refusal)
        if not self.transport.is_closing():
            self.transport.write(rejection_response(refusal.status, refusal.reason))
            self.transport.close()

    def _start_deadline(self) -> None:
        # The gateway's sweep cuts heads past their deadline (one timer for all, not one per socket).
        if self._gateway is not None:
            self._gateway.heads[self] = self.loop.time() + self._deadline_seconds

    def _stop_deadline(self) -> None:
        if self._gateway is not None:
            self._gateway.heads.pop(self, None)

    def late(self) -> None:
        """The head did not arrive in time (the gateway's sweep calls this)."""
        if self._in_head and not self._refused:
            self._refuse(Cause.HANDSHAKE_TIMEOUT)

    def _not_pending(self) -> None:
        if self._pending:
            self._pending = False
            if self._gateway is not None:
                self._gateway.pending -= 1


class _Stop(Exception):
    """Raised in a parser callback to stop parsing a request that was refused."""
