"""Limits with clear answers: Origin (403 before the upgrade), control-frame size (1009), publish body and
batch size (413), publish rate (429 + Retry-After), subscriptions per connection (4400), connect rate (1013)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.causes import CloseCode
from tests.clients import Subscriber, batch, close_code, publish
from tests.security.helpers import bearer, open_sse
from tests.servers import Gateway

ORIGINS = "https://app.example.com, https://*.trusted.dev"


async def test_origin_allow_list(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_ALLOWED_ORIGINS": ORIGINS})
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{gw.ws}/ws/events", origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    for origin in ("https://app.example.com", "https://eu.trusted.dev", None):
        sub = await Subscriber.open(f"{gw.ws}/ws/events", origin=origin)
        await sub.close()
    async with open_sse(f"{gw.http}/sse/events", headers={"origin": "https://evil.example"}) as sse:
        assert sse.response.status_code == 403
        await sse.response.aread()
        assert sse.response.json()["error"]["code"] == "forbidden"
    refused_publish = await publish(gw.http, batch("o", 1), headers={"origin": "https://evil.example"})
    assert refused_publish.status_code == 403
    assert (
        await publish(gw.http, batch("o", 1), headers={"origin": "https://app.example.com"})
    ).status_code == 202


async def test_sizes_control_frame_1009_body_and_batch_413(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(
        env={
            "EVENTCAST_MAX_CONTROL_BYTES": "1024",
            "EVENTCAST_MAX_PUBLISH_BYTES": "2048",
            "EVENTCAST_MAX_BATCH_EVENTS": "5",
        }
    )
    code, reason = await close_code(f"{gw.ws}/ws/events", send='{"op":"ping","pad":"' + "x" * 2000 + '"}')
    assert code == CloseCode.TOO_BIG and reason
    big = {"channel": "s", "type": "t", "data": "x" * 4096}
    response = await publish(gw.http, big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    response = await publish(gw.http, batch("s", 6))
    assert response.status_code == 413 and response.json()["error"]["code"] == "batch_too_large"
    assert (await publish(gw.http, batch("s", 5))).status_code == 202


async def test_publish_rate_per_key_429_with_retry_after(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(
        env={
            "EVENTCAST_PUBLISH_RATE": "0.5",
            "EVENTCAST_PUBLISH_BURST": "2",
            "EVENTCAST_API_KEYS": "key-one,key-two",
        }
    )
    one, two = bearer("key-one"), bearer("key-two")
    assert [(await publish(gw.http, batch("r", 1), headers=one)).status_code for _ in range(2)] == [202, 202]
    limited = await publish(gw.http, batch("r", 1), headers=one)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert (await publish(gw.http, batch("r", 1), headers=two)).status_code == 202  # its own bucket


async def test_max_subscriptions_4400(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_MAX_SUBSCRIPTIONS": "3"})
    sub = await Subscriber.open(f"{gw.ws}/ws/events?channels=a,b,c")
    await sub.close()
    code, reason = await close_code(f"{gw.ws}/ws/events?channels=a,b,c,d")
    assert (code, reason) == (CloseCode.BAD_REQUEST, "too many channels: at most 3 per connection")
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{gw.http}/sse/events?channels=a,b,c,d")
    assert response.status_code == 400 and "too many channels" in response.json()["error"]["message"]


async def test_connect_rate_per_ip_1013(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_CONNECT_RATE": "0.2", "EVENTCAST_CONNECT_BURST": "2"})
    subs = [await Subscriber.open(f"{gw.ws}/ws/events") for _ in range(2)]
    code, reason = await close_code(f"{gw.ws}/ws/events")
    assert code == CloseCode.TRY_AGAIN_LATER and reason.startswith("too many connections from this address")
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{gw.http}/sse/events")
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    for sub in subs:
        await sub.close()


async def test_bad_filter_4400(gateway: Gateway) -> None:
    code, reason = await close_code(f"{gateway.ws}/ws/events/filtered", send='{"op":"filter","types":"x"}')
    assert code == CloseCode.BAD_REQUEST and reason.startswith("filter needs")
