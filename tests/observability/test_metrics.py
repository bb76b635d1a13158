"""/metrics after a known scenario: exact counters and gauges, with one worker and with a pod of two."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from app.causes import CloseCode
from tests.clients import Subscriber, batch, publish
from tests.observability.helpers import (
    Samples,
    connections_per_worker,
    promtool_check,
    scrape,
    scrape_until,
    value,
)
from tests.servers import Gateway, RedisServer

CHANNEL = "obs"
EVERY_FRAME = {"EVENTCAST_LATENCY_SAMPLE_EVERY": "1"}


async def open_subscribers(gw: Gateway, count: int) -> list[Subscriber]:
    return [await Subscriber.open(f"{gw.ws}/ws/events?channels={CHANNEL}") for _ in range(count)]


async def close_some(subscribers: list[Subscriber]) -> list[Subscriber]:
    """Two client closes (1000) and one server close for a bad control frame (4400); returns the rest."""
    for sub in subscribers[:2]:
        await sub.close()
    await subscribers[2].ws.send("not json")
    code, _ = await subscribers[2].closed()
    assert code == CloseCode.BAD_REQUEST
    return subscribers[3:]


async def deliver(gw: Gateway, subscribers: list[Subscriber], events: int) -> None:
    response = await publish(gw.http, batch(CHANNEL, events))
    assert response.status_code == 202, response.text
    await asyncio.gather(*(sub.collect(events) for sub in subscribers))


def expected(opened: int, live: int, events: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        ("eventcast_connections", (("transport", "websocket"),)): live,
        ("eventcast_connections", (("transport", "sse"),)): 0,
        ("eventcast_connections_opened_total", ()): opened,
        ("eventcast_connections_closed_total", (("reason", "client"),)): 2,
        ("eventcast_connections_closed_total", (("reason", "bad_request"),)): 1,
        ("eventcast_connect_duration_seconds_count", ()): opened,
        ("eventcast_events_published_total", ()): events,
        ("eventcast_messages_delivered_total", ()): events * live,
        ("eventcast_messages_dropped_total", (("reason", "slow_consumer"),)): 0,
        ("eventcast_send_queue_bytes", ()): 0,
        ("eventcast_broker_up", ()): 1,
    }


def matches(samples: Samples, want: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> bool:
    return all(value(samples, name, **dict(labels)) == number for (name, labels), number in want.items())


def check_derived(samples: Samples, live: int, events: int) -> None:
    # With EVENTCAST_LATENCY_SAMPLE_EVERY=1 every live frame written is observed, exactly once.
    assert value(samples, "eventcast_broadcast_latency_seconds_count") == live * events
    above = value(samples, "eventcast_memory_above_baseline_bytes")
    per_connection = value(samples, "eventcast_memory_per_connection_bytes")
    assert per_connection == (above / live if live else 0.0)


async def test_single_worker_counts_a_known_scenario(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory(env=EVERY_FRAME)
    subscribers = await open_subscribers(gateway, 6)
    rest = await close_some(subscribers)
    await deliver(gateway, rest, 5)
    want = expected(opened=6, live=3, events=5)
    text, samples = scrape_until(f"{gateway.http}/metrics", lambda s: matches(s, want))
    for (name, labels), number in want.items():
        assert value(samples, name, **dict(labels)) == number, (name, labels)
    check_derived(samples, live=3, events=5)
    assert value(samples, "process_resident_memory_bytes") > 0  # the standard process metrics
    promtool_check(text)
    for sub in rest:
        await sub.close()
    _, samples = scrape_until(
        f"{gateway.http}/metrics", lambda s: value(s, "eventcast_connections", transport="websocket") == 0
    )
    assert value(samples, "eventcast_connections", transport="websocket") == 0
    assert value(samples, "eventcast_memory_per_connection_bytes") == 0


async def test_two_workers_report_pod_totals(
    gateway_factory: Callable[..., Gateway], redis_server: RedisServer, tmp_path: Path
) -> None:
    stale = tmp_path / "counter_1.db"
    stale.write_bytes(b"left over from an earlier run")  # must be wiped at start, not merged
    gw = gateway_factory(
        broker=redis_server.url, workers=2, env={"EVENTCAST_METRICS_DIR": str(tmp_path), **EVERY_FRAME}
    )
    assert not stale.exists()
    subscribers = await open_subscribers(gw, 6)
    # Keep connecting until both workers hold some (the kernel picks the worker that accepts).
    for _ in range(60):
        await asyncio.sleep(1.2)  # workers republish their live gauges every second
        per_worker = connections_per_worker(tmp_path)
        if (
            len(per_worker) == 2
            and min(per_worker.values()) >= 1
            and sum(per_worker.values()) == len(subscribers)
        ):
            break
        subscribers += await open_subscribers(gw, 2)
    per_worker = connections_per_worker(tmp_path)
    assert len(per_worker) == 2 and min(per_worker.values()) >= 1, per_worker
    opened = len(subscribers)
    rest = await close_some(subscribers)
    await deliver(gw, rest, 4)
    want = expected(opened=opened, live=opened - 3, events=4)
    text, samples = scrape_until(f"{gw.http}/metrics", lambda s: matches(s, want))
    for (name, labels), number in want.items():
        assert value(samples, name, **dict(labels)) == number, (name, labels, per_worker)
    check_derived(samples, live=opened - 3, events=4)
    promtool_check(text)
    # Whichever worker answers, the pod totals are the same.
    for _ in range(6):
        _, again = scrape(f"{gw.http}/metrics")
        assert matches(again, want)
    for sub in rest:
        await sub.close()


async def test_broadcast_latency_is_sampled_one_in_n(gateway_factory: Callable[..., Gateway]) -> None:
    every = 4
    gw = gateway_factory(env={"EVENTCAST_LATENCY_SAMPLE_EVERY": str(every)})
    subscribers = await open_subscribers(gw, 3)
    await deliver(gw, subscribers, 40)
    _, samples = scrape_until(
        f"{gw.http}/metrics", lambda s: value(s, "eventcast_broadcast_latency_seconds_count") == 30
    )
    # Every 4th live frame of each connection (random phase): exactly 40 / 4 per connection.
    assert value(samples, "eventcast_broadcast_latency_seconds_count") == 3 * 40 // every
    assert value(samples, "eventcast_broadcast_latency_seconds_sum") > 0
    for sub in subscribers:
        await sub.close()
