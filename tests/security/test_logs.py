"""No secret reaches the logs: not the JWT secret, not a token (header or query), not an API key, not the
admin token, even at debug level where uvicorn logs every request line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from app.causes import CloseCode
from tests.clients import Subscriber, close_code, publish
from tests.security.helpers import SECRET, bearer, make_token, open_sse
from tests.servers import Gateway

API_KEY = "api-key-never-in-logs-5f2c9a7e"
FILE_KEY = "file-api-key-never-in-logs-0b1d"
ADMIN = "admin-token-never-in-logs-77aa"


async def test_no_secret_in_logs(gateway_factory: Callable[..., Gateway], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(FILE_KEY + "\n")
    gw = gateway_factory(
        env={
            "EVENTCAST_LOG_LEVEL": "debug",
            "EVENTCAST_JWT_SECRET": SECRET,
            "EVENTCAST_API_KEYS": API_KEY,
            "EVENTCAST_API_KEYS_FILE": str(keys),
            "EVENTCAST_ADMIN_TOKEN": ADMIN,
        }
    )
    token = make_token(["logs"])
    expired = make_token(["logs"], exp_in=-10)
    forged = make_token(["logs"], key="forged-secret-0123456789abcdef0123")
    query = await Subscriber.open(f"{gw.ws}/ws/events?channels=logs&token={token}")
    header = await Subscriber.open(f"{gw.ws}/ws/events?channels=logs", additional_headers=bearer(token))
    for bad in (expired, forged):
        code, _ = await close_code(f"{gw.ws}/ws/events?channels=logs&token={bad}")
        assert code == CloseCode.UNAUTHENTICATED
    async with open_sse(f"{gw.http}/sse/events?channels=logs&token={token}") as sse:
        await sse.next_event()
        for key in (API_KEY, FILE_KEY):
            assert (
                await publish(gw.http, {"channel": "logs", "type": "t", "data": 1}, headers=bearer(key))
            ).status_code == 202
        await sse.next_event()
    assert (
        await publish(
            gw.http, {"channel": "logs", "type": "t", "data": 1}, headers={"x-api-key": "wrong-" + API_KEY}
        )
    ).status_code == 401
    async with httpx.AsyncClient() as client:
        shed = await client.post(f"{gw.http}/admin/shed", json={"fraction": 1}, headers=bearer(ADMIN))
        assert shed.status_code == 202
        wrong_admin = await client.post(
            f"{gw.http}/admin/shed", json={"fraction": 1}, headers=bearer(ADMIN + "x")
        )
        assert wrong_admin.status_code == 401
    await asyncio.gather(query.closed(), header.closed())
    await asyncio.sleep(0.5)  # let the last log lines reach the file

    text = gw.log.read_text(errors="replace")
    assert "/ws/events" in text and "/sse/events" in text, (
        "the test must see request logging to mean anything"
    )
    for secret in (SECRET, API_KEY, FILE_KEY, ADMIN, token, expired, forged):
        assert secret not in text, f"a secret leaked into the log: {secret[:6]}..."
    signature = token.rsplit(".", 1)[1]
    assert signature not in text
