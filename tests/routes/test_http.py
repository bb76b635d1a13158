"""app/routes/http.py: POST /events refuses bad bodies with JSON errors and accepts nothing of them; admin bounds."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.clients import Subscriber, batch, publish
from tests.servers import Gateway


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
