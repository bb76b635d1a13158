"""app/handshake.py: the RFC 6455 opening handshake as a pure function, case by case."""

from __future__ import annotations

import pytest

from app.causes import Cause
from app.handshake import Accept, Reject, accept_key, choose_subprotocol, handshake, rejection_response

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3
HEADERS = [
    ("host", "server.example.com"),
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", KEY),
    ("sec-websocket-version", "13"),
]


def with_headers(**changes: str | None) -> list[tuple[str, str]]:
    names = {name.replace("_", "-"): value for name, value in changes.items()}
    kept = [(n, v) for n, v in HEADERS if n not in names]
    return kept + [(n, v) for n, v in names.items() if v is not None]


def test_the_rfc_sample_key_gives_the_rfc_sample_accept() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3


def test_a_valid_upgrade_is_accepted_with_a_complete_101() -> None:
    decision = handshake("GET", "1.1", HEADERS)
    assert isinstance(decision, Accept)
    head = decision.response.decode()
    assert head.startswith("HTTP/1.1 101 Switching Protocols\r\n") and head.endswith("\r\n\r\n")
    assert "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    assert "sec-websocket-protocol" not in head
    assert decision.subprotocol == "eventcast.v1.json"


@pytest.mark.parametrize(
    "headers",
    [
        with_headers(upgrade="WebSocket"),  # tokens are case-insensitive
        with_headers(connection="keep-alive, Upgrade"),  # Firefox sends a list
        with_headers(connection="upgrade"),
        with_headers(upgrade="websocket, h2c"),
    ],
)
def test_header_token_lists_and_case_are_accepted(headers: list[tuple[str, str]]) -> None:
    assert isinstance(handshake("GET", "1.1", headers), Accept)


@pytest.mark.parametrize(
    ("method", "version", "headers", "why"),
    [
        ("POST", "1.1", HEADERS, "GET"),
        ("GET", "1.0", HEADERS, "HTTP/1.1"),
        ("GET", "1.1", with_headers(host=None), "Host"),
        ("GET", "1.1", with_headers(upgrade=None), "Upgrade"),
        ("GET", "1.1", with_headers(upgrade="h2c"), "Upgrade"),
        ("GET", "1.1", with_headers(connection="keep-alive"), "Connection"),
        ("GET", "1.1", with_headers(sec_websocket_key=None), "Sec-WebSocket-Key"),
        ("GET", "1.1", with_headers(sec_websocket_key="too-short"), "Sec-WebSocket-Key"),
        ("GET", "1.1", with_headers(sec_websocket_key="AAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "Sec-WebSocket-Key"),
        ("GET", "1.1", [*HEADERS, ("sec-websocket-key", KEY)], "Sec-WebSocket-Key"),  # two keys
    ],
)
def test_malformed_upgrades_are_rejected_with_400(
    method: str, version: str, headers: list[tuple[str, str]], why: str
) -> None:
    decision = handshake(method, version, headers)
    assert isinstance(decision, Reject)
    assert decision.cause is Cause.MALFORMED_REQUEST and decision.cause.ending.status == 400
    assert why in decision.reason


@pytest.mark.parametrize("version", ["8", "12", "14", ""])
def test_another_version_gets_426_naming_ours(version: str) -> None:
    decision = handshake("GET", "1.1", with_headers(sec_websocket_version=version))
    assert isinstance(decision, Reject)
    assert decision.cause is Cause.UNSUPPORTED_VERSION and decision.cause.ending.status == 426
    assert decision.extra_headers == (("sec-websocket-version", "13"),)  # RFC 6455 4.4
    response = rejection_response(426, decision.reason, decision.extra_headers)
    assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"sec-websocket-version: 13\r\n" in response and b"connection: close\r\n" in response


@pytest.mark.parametrize(
    ("offered", "chosen", "answered"),
    [
        ([], "eventcast.v1.json", None),
        (["chat"], "eventcast.v1.json", None),
        (["eventcast.v1.msgpack"], "eventcast.v1.msgpack", "eventcast.v1.msgpack"),
        (["chat", "eventcast.v1.json", "eventcast.v1.msgpack"], "eventcast.v1.json", "eventcast.v1.json"),
    ],
)
def test_the_first_subprotocol_we_speak_is_chosen(
    offered: list[str], chosen: str, answered: str | None
) -> None:
    assert choose_subprotocol(offered) == (chosen, answered)


def test_subprotocols_offered_in_one_header_or_several_are_the_same() -> None:
    one = handshake("GET", "1.1", [*HEADERS, ("sec-websocket-protocol", "chat, eventcast.v1.msgpack")])
    several = handshake(
        "GET",
        "1.1",
        [*HEADERS, ("sec-websocket-protocol", "chat"), ("sec-websocket-protocol", "eventcast.v1.msgpack")],
    )
    assert isinstance(one, Accept) and isinstance(several, Accept)
    assert one == several and one.subprotocol == "eventcast.v1.msgpack"
    assert b"sec-websocket-protocol: eventcast.v1.msgpack\r\n" in one.response


# ------------------------------------------------------------------------------------ permessage-deflate
@pytest.mark.parametrize(
    ("offer", "client_no_context_takeover", "client_bits", "answer"),
    [
        ("permessage-deflate", False, 15, "permessage-deflate; server_no_context_takeover"),
        (  # what Chrome and Firefox send
            "permessage-deflate; client_max_window_bits",
            False,
            9,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
        ),
        (
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
            True,
            15,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; client_max_window_bits=8",
            False,
            8,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=8",
        ),
        (  # the first offer we cannot serve (a small server window) is skipped for the next
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
            False,
            15,
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            "x-webkit-deflate-frame, permessage-deflate",
            False,
            15,
            "permessage-deflate; server_no_context_takeover",
        ),
    ],
)
def test_deflate_is_agreed_without_server_context(
    offer: str, client_no_context_takeover: bool, client_bits: int, answer: str
) -> None:
    decision = handshake("GET", "1.1", [*HEADERS, ("sec-websocket-extensions", offer)], deflate=True)
    assert isinstance(decision, Accept) and decision.deflate is not None
    assert decision.deflate.client_no_context_takeover is client_no_context_takeover
    assert decision.deflate.client_max_window_bits == client_bits
    assert f"sec-websocket-extensions: {answer}\r\n".encode() in decision.response


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; mystery_param",
        "permessage-deflate; client_max_window_bits=20",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "x-webkit-deflate-frame",
    ],
)
def test_offers_we_cannot_serve_are_declined_and_the_upgrade_goes_on(offer: str) -> None:
    decision = handshake("GET", "1.1", [*HEADERS, ("sec-websocket-extensions", offer)], deflate=True)
    assert isinstance(decision, Accept) and decision.deflate is None
    assert b"sec-websocket-extensions" not in decision.response


def test_deflate_off_answers_no_extension() -> None:
    decision = handshake("GET", "1.1", [*HEADERS, ("sec-websocket-extensions", "permessage-deflate")])
    assert isinstance(decision, Accept) and decision.deflate is None
