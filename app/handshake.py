"""The WebSocket opening handshake (RFC 6455 4.2) as a pure function: a request head in, an accept or a
rejection out. No socket, no clock: every case is a unit test (tests/test_handshake.py).

The native transport (app/transports/native_ws.py) calls it with what the HTTP parser already read, so the
request head is parsed once; it writes the answer itself: the 101 response (with the welcome frame in the
same write), or the rejection's HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.causes import Cause
from app.protocol import SUBPROTOCOL_JSON, SUBPROTOCOLS

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
VERSION = "13"


@dataclass(frozen=True, slots=True)
class Deflate:
    """permessage-deflate as agreed (RFC 7692). The server side is always ``server_no_context_takeover`` with
    a 15-bit window, so every event is compressed once and the same bytes go to every such client."""

    #: The client compresses each message on its own: we keep no inflate state between its messages.
    client_no_context_takeover: bool
    #: The window the client compresses with (what inflating its messages needs).
    client_max_window_bits: int


@dataclass(frozen=True, slots=True)
class Accept:
    """Switch protocols: ``response`` is the whole 101 head; ``subprotocol`` the encoding chosen; ``deflate``
    the compression agreed, if any."""

    response: bytes
    subprotocol: str
    deflate: Deflate | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer with an HTTP error instead (``extra_headers`` e.g. the version a 426 asks for)."""

    cause: Cause
    reason: str
    extra_headers: tuple[tuple[str, str], ...] = ()


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2, step 5.4)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def _tokens(values: Iterable[str]) -> list[str]:
    """The comma-separated tokens of every value of a header, lower-cased."""
    return [token.strip().lower() for value in values for token in value.split(",") if token.strip()]


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def choose_subprotocol(offered: Sequence[str]) -> tuple[str, str | None]:
    """(encoding, subprotocol to answer): the first offered that we speak; JSON when none is offered."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return name, name
    return SUBPROTOCOL_JSON, None


def handshake(
    method: str, http_version: str, headers: Sequence[tuple[str, str]], *, deflate: bool = False
) -> Accept | Reject:
    """Decide an upgrade request: ``headers`` are (lower-case name, value) in the order received.

    Checks RFC 6455 4.2.1: GET over HTTP/1.1 or later, a Host, ``Upgrade: websocket``, ``Connection``
    naming ``upgrade``, a Sec-WebSocket-Key of 16 base64-encoded bytes, and version 13 (426 with the version
    we speak otherwise, 4.4). Chooses the subprotocol, and with ``deflate`` accepts the first
    permessage-deflate offer it can serve (``negotiate_deflate``). Origin and everything about the
    subscriber itself are the session's (app/session.py).
    """
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name, []).append(value)

    def one(name: str) -> str | None:
        found = values.get(name)
        return found[0] if found and len(found) == 1 else None

    if method != "GET" or http_version in ("0.9", "1.0"):
        return Reject(Cause.MALFORMED_REQUEST, "a WebSocket upgrade is a GET over HTTP/1.1")
    if one("host") is None:
        return Reject(Cause.MALFORMED_REQUEST, "missing Host header")
    if "websocket" not in _tokens(values.get("upgrade", ())):
        return Reject(Cause.MALFORMED_REQUEST, "missing Upgrade: websocket")
    if "upgrade" not in _tokens(values.get("connection", ())):
        return Reject(Cause.MALFORMED_REQUEST, "missing Connection: Upgrade")
    key = one("sec-websocket-key")
    if key is None or not _valid_key(key.strip()):
        return Reject(Cause.MALFORMED_REQUEST, "Sec-WebSocket-Key must be 16 base64-encoded bytes")
    if (one("sec-websocket-version") or "").strip() != VERSION:
        return Reject(
            Cause.UNSUPPORTED_VERSION,
            "unsupported WebSocket version: use 13",
            (("sec-websocket-version", VERSION),),
        )
    subprotocol, answer = choose_subprotocol(_offered(values.get("sec-websocket-protocol", ())))
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        f"sec-websocket-accept: {accept_key(key.strip())}\r\n"
    )
    if answer is not None:
        response += f"sec-websocket-protocol: {answer}\r\n"
    agreed = negotiate_deflate(values.get("sec-websocket-extensions", ())) if deflate else None
    if agreed is not None:
        response += f"sec-websocket-extensions: {deflate_response(agreed)}\r\n"
    return Accept((response + "\r\n").encode(), subprotocol, agreed)


#: The smallest window a client may compress with (zlib's smallest; the least inflate memory for us).
CLIENT_WINDOW_BITS = 9


def negotiate_deflate(values: Iterable[str]) -> Deflate | None:
    """The first permessage-deflate offer we can accept (RFC 7692 7.1), or None to go without.

    We always answer ``server_no_context_takeover`` (7.1.1.1 lets a server add it): each message stands
    alone, so one compressed frame serves every client. An offer that asks for a server window under 15
    bits, or names a parameter we do not know, is declined. We accept ``client_no_context_takeover`` when
    offered (no inflate state kept), and shrink the client's window to ``CLIENT_WINDOW_BITS`` when the offer
    lets us (``client_max_window_bits``).
    """
    for offer in ",".join(values).split(","):
        name, *params = (part.strip() for part in offer.split(";"))
        if name.lower() != "permessage-deflate":
            continue
        seen: dict[str, str | None] = {}
        for param in params:
            key, eq, value = param.partition("=")
            key = key.strip().lower()
            if not key or key in seen:
                break
            seen[key] = value.strip().strip('"') if eq else None
        else:
            if not seen.keys() <= _DEFLATE_PARAMS:
                continue
            server_bits = seen.get("server_max_window_bits", "15")
            if server_bits != "15":
                continue  # we compress once, with a 15-bit window, for everyone
            client_bits = 15
            if "client_max_window_bits" in seen:
                offered = seen["client_max_window_bits"]
                if offered is not None and not (offered.isdigit() and 8 <= int(offered) <= 15):
                    continue
                client_bits = min(CLIENT_WINDOW_BITS, int(offered)) if offered else CLIENT_WINDOW_BITS
            return Deflate("client_no_context_takeover" in seen, client_bits)
    return None


_DEFLATE_PARAMS = frozenset(
    (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    )
)


def deflate_response(agreed: Deflate) -> str:
    parts = ["permessage-deflate", "server_no_context_takeover"]
    if agreed.client_no_context_takeover:
        parts.append("client_no_context_takeover")
    if agreed.client_max_window_bits != 15:
        parts.append(f"client_max_window_bits={agreed.client_max_window_bits}")
    return "; ".join(parts)


def _offered(values: Iterable[str]) -> list[str]:
    return [token.strip() for value in values for token in value.split(",") if token.strip()]


def rejection_response(status: int, reason: str, extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A complete HTTP error response that closes the connection."""
    from http import HTTPStatus

    body = reason.encode()
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
    for name, value in extra_headers:
        head += f"{name}: {value}\r\n"
    head += (
        f"content-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body
