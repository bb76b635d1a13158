"""Bad input gets a clear close code or HTTP error, and everyone else keeps being served."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.causes import CloseCode
from tests.clients import Subscriber, batch, close_code, publish
from tests.servers import Gateway


@pytest.mark.parametrize(
    ("query", "frame", "code", "reason"),
    [
        ("", "{not json", CloseCode.BAD_REQUEST, "malformed control message: not valid JSON"),
        ("", '["op"]', CloseCode.BAD_REQUEST, "control message must be an object with an op"),
        ("", '{"op": "subscribe-all"}', CloseCode.BAD_REQUEST, "unknown op 'subscribe-all'"),
        ("", '{"op": "filter", "types": "x"}', CloseCode.BAD_REQUEST, "filter needs types"),
        ("", '{"op": "filter", "types": ["[a"]}', CloseCode.BAD_REQUEST, "bad glob '[a' in types"),
        ("", '{"op": "filter", "where": {"k": {"x": 1}}}', CloseCode.BAD_REQUEST, "where k: only scalar"),
        ("since=nonsense", None, CloseCode.BAD_REQUEST, "bad since: not an eventcast event id"),
        ("since=abc.12-x", None, CloseCode.BAD_REQUEST, "bad since"),
        ("channels=a,b%20c", None, CloseCode.BAD_REQUEST, "bad channels: invalid channel name"),
        ("types=[bad", None, CloseCode.BAD_REQUEST, "bad glob '[bad' in types"),
        ("where=novalue", None, CloseCode.BAD_REQUEST, "bad where: use where=key=value"),
    ],
)
async def test_bad_websocket_input_is_closed_with_a_reason_and_others_keep_going(
    gateway: Gateway, query: str, frame: str | None, code: int, reason: str
) -> None:
    bystander = await Subscriber.open(f"{gateway.ws}/ws/events?channels=calm")
    got_code, got_reason = await close_code(f"{gateway.ws}/ws/events/filtered?{query}", send=frame)
    assert got_code == code
    assert got_reason.startswith(reason)
    ids = (await publish(gateway.http, batch("calm", 2))).json()["ids"]
    assert [e["id"] for e in await bystander.collect(2)] == ids
    await bystander.close()


async def test_oversized_control_frame_is_closed_1009(gateway_factory: Any) -> None:
    gateway = gateway_factory(env={"EVENTCAST_MAX_CONTROL_BYTES": "1024"})
    bystander = await Subscriber.open(f"{gateway.ws}/ws/events")
    frame = json.dumps({"op": "filter", "types": ["a" * 2000]})
    code, _ = await close_code(f"{gateway.ws}/ws/events", send=frame)
    assert code == CloseCode.TOO_BIG
    ids = (await publish(gateway.http, batch("default", 1))).json()["ids"]
    assert [e["id"] for e in await bystander.collect(1)] == ids
    await bystander.close()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{nope", 400, "invalid_json"),
        (b'{"channel": "a", "type": "t", "data": [NaN]}', 400, "invalid_json"),
        (
            b'{"channel": "a", "type": "t", "data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
            400,
            "invalid_json",
        ),
        (b'{"channel": "a", "type": "t", "data": "\\ud800"}', 400, "invalid_json"),
        (b"[]", 422, "empty_batch"),
        (b'"just a string"', 422, "invalid_event"),
        (b'{"channel": "a", "type": "t"}', 422, "invalid_event"),
        (b'{"channel": "a b", "type": "t", "data": 1}', 422, "invalid_event"),
        (b'{"channel": "a", "type": 5, "data": 1}', 422, "invalid_event"),
        (b'{"channel": "a", "type": "t", "data": 1, "extra": 2}', 422, "invalid_event"),
        (b'[{"channel": "a", "type": "t", "data": 1}, 7]', 422, "invalid_event"),
    ],
)
async def test_bad_publish_bodies_get_json_errors_and_nothing_is_accepted(
    gateway: Gateway, body: bytes, status: int, code: str
) -> None:
    watcher = await Subscriber.open(f"{gateway.ws}/ws/events?channels=a")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{gateway.http}/events", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    # Nothing of a refused batch was accepted: the next event is the first the watcher sees.
    ids = (await publish(gateway.http, {"channel": "a", "type": "ok", "data": 0})).json()["ids"]
    assert [e["id"] for e in await watcher.collect(1)] == ids
    await watcher.close()


async def test_oversized_publish_is_413(gateway_factory: Any) -> None:
    gateway = gateway_factory(env={"EVENTCAST_MAX_PUBLISH_BYTES": "1000", "EVENTCAST_MAX_BATCH_EVENTS": "3"})
    big = {"channel": "a", "type": "t", "data": "x" * 2000}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{gateway.http}/events", json=big)
        assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"

        async def chunks() -> Any:  # no content-length: the limit holds while streaming too
            yield b'{"channel": "a", "type": "t", "data": "'
            yield b"y" * 2000
            yield b'"}'

        streamed = await client.post(f"{gateway.http}/events", content=chunks())
        assert streamed.status_code == 413
        too_many = await client.post(f"{gateway.http}/events", json=batch("a", 4))
        assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "batch_too_large"
        assert (await client.post(f"{gateway.http}/events", json=batch("a", 3))).status_code == 202


async def test_wrong_method_and_unknown_path(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{gateway.http}/events")).status_code == 405
        assert (await client.get(f"{gateway.http}/nope")).status_code == 404
        bad_drain = await client.post(
            f"{gateway.http}/admin/drain", json={"seconds": -1}, headers=gateway.admin
        )
        assert bad_drain.status_code == 422 and bad_drain.json()["error"]["code"] == "invalid_seconds"
        assert (await client.get(f"{gateway.http}/readyz")).status_code == 200


async def test_control_ping_gets_pong_in_order(gateway: Gateway) -> None:
    sub = await Subscriber.open(f"{gateway.ws}/ws/events")
    await sub.ws.send('{"op": "ping"}')
    assert json.loads(await sub.ws.recv()) == {"type": "eventcast.pong"}
    await sub.close()


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
