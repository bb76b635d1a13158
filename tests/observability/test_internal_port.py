"""EVENTCAST_INTERNAL_PORT: /metrics and /admin/* only there; the public port answers 404 for them."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.clients import Subscriber, batch, publish
from tests.servers import Gateway, RedisServer, free_port

TOKEN = "internal-admin-token-1"


def check_split(gw: Gateway, internal: str) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{gw.http}/metrics").status_code == 404
    assert httpx.post(f"{gw.http}/admin/shed", json={"fraction": 0.5}, headers=auth).status_code == 404
    assert httpx.post(f"{gw.http}/admin/drain", headers=auth).status_code == 404
    assert httpx.get(f"{gw.http}/readyz").status_code == 200  # probes stay on both ports
    scraped = httpx.get(f"{internal}/metrics")
    assert scraped.status_code == 200 and "eventcast_connections" in scraped.text
    assert httpx.get(f"{internal}/readyz").status_code == 200
    assert httpx.post(f"{internal}/events", json=batch("x", 1)).status_code == 404  # not the public API
    assert (
        httpx.post(f"{internal}/admin/shed", json={"fraction": 0.5}).status_code == 401
    )  # still needs the token


@pytest.mark.parametrize("workers", [1, 2])
async def test_internal_port_splits_metrics_and_admin(
    gateway_factory: Callable[..., Gateway], redis_server: RedisServer, workers: int
) -> None:
    internal_port = free_port()
    gw = gateway_factory(
        broker=redis_server.url if workers > 1 else "memory://",
        workers=workers,
        env={"EVENTCAST_INTERNAL_PORT": str(internal_port), "EVENTCAST_ADMIN_TOKEN": TOKEN},
    )
    internal = f"http://127.0.0.1:{internal_port}"
    for _ in range(4):  # with two workers, requests land on either (both bind the port)
        check_split(gw, internal)
    sub = await Subscriber.open(f"{gw.ws}/ws/events?channels=x")  # the public API is untouched
    ids = (await publish(gw.http, batch("x", 2))).json()["ids"]
    assert [e["id"] for e in await sub.collect(2)] == ids
    async with httpx.AsyncClient() as client:
        shed = await client.post(
            f"{internal}/admin/shed", json={"fraction": 1.0}, headers={"authorization": f"Bearer {TOKEN}"}
        )
    assert shed.status_code == 202, shed.text
    await sub.close()
