"""The part of uvicorn the HTTP front (app/transports/http.py) builds on, checked against the installed uvicorn.

pyproject.toml bounds uvicorn to the versions this passed on. Before raising the bound, run this file
against the new version: it fails when a hook, an attribute or the upgrade hand-off the native path relies
on changes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
from uvicorn import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.broker.memory import MemoryBroker
from app.gateway import Gateway
from app.hub import Hub
from app.security import Security
from app.settings import Settings
from app.transports.http import GatewayHttpProtocol
from app.transports.native_ws import NativeWebSocket
from tests.fakes import parse_ws_frames

UPGRADE = (
    b"GET /ws/events?channels=c HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_the_hooks_and_their_signatures() -> None:
    init = inspect.signature(HttpToolsProtocol.__init__)
    assert list(init.parameters)[:5] == ["self", "config", "server_state", "app_state", "_loop"]
    for name, params in {
        "connection_made": ["self", "transport"],
        "connection_lost": ["self", "exc"],
        "data_received": ["self", "data"],
        "on_message_begin": ["self"],
        "on_url": ["self", "url"],
        "on_header": ["self", "name", "value"],
        "on_headers_complete": ["self"],
        "handle_websocket_upgrade": ["self"],
        "_should_upgrade": ["self"],
        "_unsupported_upgrade_warning": ["self"],
        "_unset_keepalive_if_required": ["self"],
    }.items():
        assert list(inspect.signature(getattr(HttpToolsProtocol, name)).parameters) == params, name


class FakeTransport:
    """Just enough of an asyncio transport for a protocol object: it records writes and hand-offs."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.protocol: Any = None
        self.limits: tuple[int, int] | None = None

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.9", 4321), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = (high, low)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    settings = Settings()
    hub = Hub(
        MemoryBroker(max_events=100, max_age_seconds=60),
        replica="r",
        max_connections=10,
        max_replay_events=10,
    )
    await hub.start()
    yield Gateway(settings, hub, Security(settings))
    await hub.stop()


def protocol(gateway: Gateway) -> tuple[GatewayHttpProtocol, FakeTransport, ServerState]:
    config = Config(app=app, ws="auto", log_config=None)
    config.load()
    state = ServerState()
    proto = GatewayHttpProtocol(config=config, server_state=state, app_state={"gateway": gateway})
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, state


async def test_a_plain_request_still_reaches_the_asgi_app_through_uvicorn(gateway: Gateway) -> None:
    proto, transport, _ = protocol(gateway)
    assert gateway.pending == 1  # counted until its head is complete
    proto.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert gateway.pending == 0
    for _ in range(50):
        await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 204 ")


async def test_an_upgrade_is_handed_over_parsed_and_answered_by_the_native_transport(
    gateway: Gateway,
) -> None:
    proto, transport, state = protocol(gateway)
    proto.data_received(UPGRADE)
    native = transport.protocol
    assert isinstance(native, NativeWebSocket)  # set_protocol: uvicorn's object is out of the way
    assert proto not in state.connections and native in state.connections
    for _ in range(50):
        await asyncio.sleep(0)  # attach (a new channel: the broker is asked), then the flush
    head, _, rest = bytes(transport.written).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    frames, _ = parse_ws_frames(rest)
    assert frames and b'"eventcast.welcome"' in frames[0][1]
    assert transport.limits is not None  # the connection set its high-water mark on the socket
    assert len(gateway.hub.connections) == 1
    native.connection_lost(None)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not gateway.hub.connections
