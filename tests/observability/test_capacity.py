"""Capacity metrics on real gateways: the connection limit (one worker and a pod of two) and every refusal
reason, produced for real on both WebSocket paths (native and ASGI) and on SSE, each counted once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app import metrics
from app.causes import Cause, CloseCode
from tests.clients import Subscriber
from tests.observability.helpers import Samples, promtool_check, scrape, scrape_until, value
from tests.security.helpers import SECRET, make_token
from tests.servers import Gateway, RedisServer

REFUSED = "eventcast_connections_refused_total"
CLOSED = "eventcast_connections_closed_total"
ENGINES = {"native": {}, "asgi": {"EVENTCAST_WS_ENGINE": "asgi"}}
ALLOWED = "https://app.example.com"
CHANNEL = "cap"


def refused(samples: Samples) -> dict[str, float]:
    return {reason: value(samples, REFUSED, reason=reason) for reason in metrics.REFUSAL_REASONS}


def expect_refused(**counts: int) -> dict[str, float]:
    """Every refusal reason at 0 except the ones given."""
    assert set(counts) <= set(metrics.REFUSAL_REASONS), counts
    return {reason: float(counts.get(reason, 0)) for reason in metrics.REFUSAL_REASONS}


def assert_zero_series(samples: Samples) -> None:
    """Every closed and refused reason is exported from the start (as 0), so rate() sees its first increase."""
    for name, reasons in ((CLOSED, metrics.CLOSE_REASONS), (REFUSED, metrics.REFUSAL_REASONS)):
        for reason in reasons:
            key = (name, frozenset({("reason", reason)}))
            assert key in samples, f"{name}{{reason={reason!r}}} missing from a fresh scrape"
            assert samples[key] == 0, key


async def ws_refused(url: str, **kwargs: object) -> int:
    """Connect as a subscriber that must be turned away: the close code, or the HTTP status of the upgrade."""
    try:
        async with connect(url, open_timeout=10, **kwargs) as ws:  # type: ignore[arg-type]
            try:
                first = await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed:
                rcvd = ws.protocol.close_rcvd
                return rcvd.code if rcvd is not None else 1006
            raise AssertionError(f"a refused subscriber got a frame: {first!r}")
    except InvalidStatus as exc:
        return exc.response.status_code


async def sse_status(url: str, **kwargs: object) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(url, **kwargs)).status_code  # type: ignore[arg-type]


async def raw_bad_upgrade(gw: Gateway) -> bytes:
    """An upgrade request with the wrong Sec-WebSocket-Version: the native handshake answers 426."""
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    writer.write(
        b"GET /ws/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    )
    status = (await reader.readline()).strip()
    writer.close()
    return status


# ------------------------------------------------------------------------------------------------ the limit
def test_every_close_and_refusal_label_is_pre_created() -> None:
    """Every cause's label (app/causes.py) is exported from the start, under the right counter."""
    for cause in Cause:
        labels = metrics.REFUSAL_REASONS if cause.ending.refusal else metrics.CLOSE_REASONS
        assert cause.label in labels
    assert "other" in metrics.CLOSE_REASONS


def test_limit_with_one_worker_and_zero_series(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_MAX_CONNECTIONS": "3"})
    text, samples = scrape(f"{gw.http}/metrics")
    assert value(samples, "eventcast_connections_max") == 3
    assert_zero_series(samples)
    promtool_check(text)


def test_limit_with_two_workers_is_the_pod_total(
    gateway_factory: Callable[..., Gateway], redis_server: RedisServer
) -> None:
    gw = gateway_factory(broker=redis_server.url, workers=2, env={"EVENTCAST_MAX_CONNECTIONS": "3"})
    text, samples = scrape_until(f"{gw.http}/metrics", lambda s: value(s, "eventcast_connections_max") == 6)
    assert value(samples, "eventcast_connections_max") == 6, "2 workers x 3"
    assert_zero_series(samples)  # multiprocess mode exports the pre-created series too
    promtool_check(text)
    for _ in range(6):  # whichever worker answers
        _, again = scrape(f"{gw.http}/metrics")
        assert value(again, "eventcast_connections_max") == 6


# ------------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("engine", ENGINES)
async def test_refusals_by_reason(gateway_factory: Callable[..., Gateway], engine: str) -> None:
    """unauthenticated, forbidden (Origin and channel rights), bad_request, overload, draining: WS and SSE."""
    gw = gateway_factory(
        env={
            "EVENTCAST_MAX_CONNECTIONS": "2",
            "EVENTCAST_JWT_SECRET": SECRET,
            "EVENTCAST_ALLOWED_ORIGINS": ALLOWED,
            **ENGINES[engine],
        }
    )
    url = f"{gw.ws}/ws/events?channels={CHANNEL}"
    token = make_token([CHANNEL])
    metrics_url = f"{gw.http}/metrics"
    assert refused(scrape(metrics_url)[1]) == expect_refused()

    assert await ws_refused(f"{url}&token=not-a-jwt") == CloseCode.UNAUTHENTICATED
    assert await ws_refused(f"{url}&token={token}", origin="https://evil.example.com") == 403  # type: ignore[arg-type]
    assert await ws_refused(f"{gw.ws}/ws/events?channels=other&token={token}") == CloseCode.FORBIDDEN
    assert await ws_refused(f"{url}&token={token}&since=garbage") == CloseCode.BAD_REQUEST
    bad_request = 1
    if engine == "native":  # the native handshake answers a malformed upgrade itself
        assert await raw_bad_upgrade(gw) == b"HTTP/1.1 426 Upgrade Required"
        bad_request += 1
    want = expect_refused(unauthenticated=1, forbidden=2, bad_request=bad_request)
    assert refused(scrape(metrics_url)[1]) == want

    held = [await Subscriber.open(f"{url}&token={token}") for _ in range(2)]  # EVENTCAST_MAX_CONNECTIONS
    assert await ws_refused(f"{url}&token={token}") == CloseCode.TRY_AGAIN_LATER
    sse = f"{gw.http}/sse/events?channels={CHANNEL}"
    assert await sse_status(f"{sse}&token={token}") == 503  # overloaded
    assert await sse_status(f"{sse}&token=not-a-jwt") == 401
    want = expect_refused(unauthenticated=2, forbidden=2, bad_request=bad_request, overload=2)
    assert refused(scrape(metrics_url)[1]) == want

    async with httpx.AsyncClient(timeout=10) as client:
        assert (
            await client.post(f"{gw.http}/admin/drain", json={"seconds": 0}, headers=gw.admin)
        ).status_code == 202
    for sub in held:
        assert (await sub.closed())[0] == CloseCode.SERVICE_RESTART
    assert await ws_refused(f"{url}&token={token}") == CloseCode.SERVICE_RESTART
    assert await sse_status(f"{sse}&token={token}") == 503  # draining
    want = expect_refused(unauthenticated=2, forbidden=2, bad_request=bad_request, overload=2, draining=2)
    text, samples = scrape_until(metrics_url, lambda s: value(s, CLOSED, reason="drain") == 2)
    assert refused(samples) == want
    # Refused subscribers were never opened, nor closed.
    assert value(samples, "eventcast_connections_opened_total") == 2
    assert value(samples, CLOSED, reason="drain") == 2
    assert sum(v for (name, _), v in samples.items() if name == CLOSED) == 2
    promtool_check(text)


@pytest.mark.parametrize("engine", ENGINES)
async def test_broker_unavailable_and_rate_limited(
    gateway_factory: Callable[..., Gateway], redis_server: RedisServer, engine: str
) -> None:
    """A resume while Redis is dead (WS and SSE), then the connect rate per IP (WS and SSE)."""
    gw = gateway_factory(
        broker=redis_server.url,
        env={"EVENTCAST_CONNECT_RATE": "0.001", "EVENTCAST_CONNECT_BURST": "3", **ENGINES[engine]},
    )
    url = f"{gw.ws}/ws/events?channels={CHANNEL}"
    sub = await Subscriber.open(url)  # token 1 of 3
    since = sub.welcome["position"]
    await sub.close()

    redis_server.kill()
    assert await ws_refused(f"{url}&since={since}") == CloseCode.TRY_AGAIN_LATER  # token 2
    sse = f"{gw.http}/sse/events?channels={CHANNEL}&since={since}"
    assert await sse_status(sse) == 503  # token 3: refused before the stream started, as the table says
    metrics_url = f"{gw.http}/metrics"
    assert refused(scrape(metrics_url)[1]) == expect_refused(broker_unavailable=2)

    assert await ws_refused(url) == CloseCode.TRY_AGAIN_LATER  # no token left
    assert await sse_status(f"{gw.http}/sse/events?channels={CHANNEL}") == 429
    text, samples = scrape(metrics_url)
    assert refused(samples) == expect_refused(broker_unavailable=2, rate_limited=2)
    assert value(samples, "eventcast_connections_opened_total") == 1
    promtool_check(text)
