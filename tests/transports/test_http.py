"""app/transports/http.py: the public port's HTTP front, over real sockets: the upgrade answered once, every
socket bounded before it is a subscriber (431, 408, 503), and a refusal never touches anyone else."""

from __future__ import annotations

import pytest

from tests.servers import Gateway


def raw_upgrade(gateway: Gateway, path: str, headers: dict[str, str]) -> bytes:
    import socket

    lines = [f"GET {path} HTTP/1.1", f"Host: {gateway.host}"] + [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
            if b"\r\n\r\n" in answer and b"101" in answer.split(b"\r\n", 1)[0]:
                break
        return answer


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/ws/events", UPGRADE, b"101"),
        ("/ws/nowhere", UPGRADE, b"404"),
        ("/ws/events", {**UPGRADE, "Sec-WebSocket-Version": "8"}, b"426"),  # RFC 6455 4.2.2
        ("/ws/events", {**UPGRADE, "Sec-WebSocket-Key": "too-short"}, b"400"),
        ("/ws/events", {k: v for k, v in UPGRADE.items() if k != "Sec-WebSocket-Key"}, b"400"),
    ],
)
def test_websocket_handshake_is_checked(
    gateway: Gateway, path: str, headers: dict[str, str], status: bytes
) -> None:
    answer = raw_upgrade(gateway, path, headers)
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == status
    if status == b"101":  # RFC 6455 accept key for the sample nonce
        assert b"\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer


def test_a_frame_sent_right_behind_the_upgrade_request_is_not_lost(gateway: Gateway) -> None:
    """A client that pipelines its first message behind the upgrade head (in one packet) gets its answer."""
    import socket

    from websockets.frames import Frame, Opcode

    head = "\r\n".join(
        ["GET /ws/events HTTP/1.1", f"Host: {gateway.host}", *(f"{k}: {v}" for k, v in UPGRADE.items())]
    )
    ping = Frame(Opcode.TEXT, b'{"op": "ping"}').serialize(mask=True, extensions=[])
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + ping)
        answer = b""
        while b"eventcast.pong" not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert answer.index(b"eventcast.welcome") < answer.index(b"eventcast.pong")
