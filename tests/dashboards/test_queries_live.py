"""Every dashboard query returns data from a real Prometheus scraping two loaded gateways.

Two pods on one Redis: ``gw-a`` runs two uvicorn workers (multiprocess metrics), ``gw-b`` one. The load makes
every panel meaningful: subscribers on both, publishes through both, a client that stops reading until it is
closed with 4008 (drops, slow-consumer closes, queued bytes), a resume with ``since`` (recoveries), clients
that leave (closes) and clients refused on both pods (refusals). Prometheus gets the labels a ServiceMonitor
would add (namespace, pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.causes import CloseCode
from dashboards import build
from tests.clients import Subscriber, close_code, publish
from tests.observability.helpers import scrape, value
from tests.observability.test_prometheus import start_prometheus
from tests.servers import Gateway, RedisServer, free_port, wait_for

NAMESPACE, JOB, PODS = "eventcast-test", "eventcast", ("gw-a", "gw-b")
#: The test's whole life fits in a minute, so a one-minute window sees everything it caused.
RATE_INTERVAL = "1m"
CHANNEL = "firehose"
BIG = "x" * 10_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def substitute(text: str) -> str:
    """What Grafana sends for the dashboard's variables (All pods selected: a regex alternation)."""
    for name, real in (
        ("$namespace", NAMESPACE),
        ("$job", JOB),
        ("$pod", "|".join(PODS)),
        ("$__rate_interval", RATE_INTERVAL),
        ("$__interval", "1s"),
    ):
        text = text.replace(name, real)
    return text


@pytest.fixture
def pods(redis_server: RedisServer) -> Iterator[tuple[Gateway, Gateway]]:
    a = Gateway(broker=redis_server.url, workers=2)
    # gw-b hosts the slow client: a small queue, and no idle cut-off while it stalls on a busy machine.
    b = Gateway(
        broker=redis_server.url,
        env={"EVENTCAST_SEND_QUEUE_BYTES": "262144", "EVENTCAST_IDLE_TIMEOUT_SECONDS": "300"},
    )
    try:
        yield a.start(), b.start()
    finally:
        a.stop()
        b.stop()


@contextlib.contextmanager
def prometheus(tmp_path: Path, targets: dict[str, int]) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is missing: run `make test` (it installs the Debian package)"
    config = tmp_path / "prometheus.yml"
    static = "".join(
        f"      - targets: ['127.0.0.1:{port}']\n        labels: {{namespace: {NAMESPACE}, pod: {pod}}}\n"
        for pod, port in targets.items()
    )
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n{static}"
    )
    port = free_port()
    process = start_prometheus(binary, config, tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/-/ready", timeout=1).status_code == 200, 30, "prometheus ready")
        yield base
    finally:
        process.kill()
        process.wait(10)


def api(base: str, path: str, **params: Any) -> Any:
    body = httpx.get(f"{base}/api/v1/{path}", params=params, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]


def instant(base: str, promql: str) -> list[dict[str, Any]]:
    return list(api(base, "query", query=promql)["result"])


async def drain(sub: Subscriber) -> None:
    with contextlib.suppress(Exception):
        async for _ in sub.ws:
            pass


async def trickle(gateways: tuple[Gateway, Gateway]) -> None:
    """Small publishes through both pods, so rates and latencies are live while the queries run."""
    n = 0
    while True:
        await publish(gateways[n % 2].http, {"channel": CHANNEL, "type": "tick", "data": {"n": n}})
        n += 1
        await asyncio.sleep(0.1)


async def stall_then_cut(
    b: Gateway, gateways: tuple[Gateway, Gateway], *, cuts: int, hold: bool
) -> Subscriber:
    """A client on gw-b that stops reading: its queue fills (held until Prometheus scraped it), then 4008.

    Returns once gw-b counts ``cuts`` slow-consumer closes in all.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((b.host, b.port))
    slow = await Subscriber.open(f"{b.ws}/ws/events?channels={CHANNEL}", sock=sock, max_queue=1)
    slow.ws.transport.pause_reading()
    held = not hold
    for burst in range(400):  # at most 20 MB; the loopback buffers hide a few MB
        events = [{"channel": CHANNEL, "type": "big", "data": {"n": burst, "p": BIG}} for _ in range(5)]
        await publish(gateways[burst % 2].http, events)
        _, samples = await asyncio.to_thread(scrape, f"{b.http}/metrics")
        if value(samples, "eventcast_connections_closed_total", reason="slow_consumer") >= cuts:
            return slow
        if not held and value(samples, "eventcast_send_queue_bytes") > 0:
            held = True
            await asyncio.sleep(2.5)  # a queue with bytes in it, seen by a few 1 s scrapes
        await asyncio.sleep(0.01)
    raise AssertionError(f"the stalled client was never closed with 4008\n{b.tail()}")


async def test_every_panel_query_returns_data(pods: tuple[Gateway, Gateway], tmp_path: Path) -> None:
    a, b = pods
    started = time.time()
    with prometheus(tmp_path, {"gw-a": a.port, "gw-b": b.port}) as base:
        fast = [
            await Subscriber.open(f"{gw.ws}/ws/events?channels={CHANNEL}") for gw in (a, b) for _ in range(6)
        ]
        readers = [asyncio.create_task(drain(sub)) for sub in fast]
        ticker = asyncio.create_task(trickle(pods))
        try:
            # Once is enough: every reason and result series exists from the start at 0, so the first
            # slow-consumer close, client close, recovery and refusal already show as a rate.
            slow = await stall_then_cut(b, pods, cuts=1, hold=True)
            slow.ws.transport.resume_reading()
            await slow.closed(timeout=30)  # 4008, or 1006 when the close handshake itself stalled
            back = await Subscriber.open(f"{b.ws}/ws/events?channels={CHANNEL}&since={slow.last_id}")
            assert back.welcome["recovered"] is True
            await fast[1].close()  # a client that leaves: closed by reason "client"
            for gw in pods:  # a subscriber refused on each pod: a bad since is closed with 4400
                code, _ = await close_code(f"{gw.ws}/ws/events?channels={CHANNEL}&since=garbage")
                assert code == CloseCode.BAD_REQUEST
            for promql in (
                f'sum(eventcast_connections_closed_total{{job="{JOB}", reason="slow_consumer"}})',
                f'sum(eventcast_recoveries_total{{job="{JOB}", result="recovered"}})',
                f'sum(eventcast_connections_closed_total{{job="{JOB}", reason="client"}})',
                f'sum(eventcast_connections_refused_total{{job="{JOB}", reason="bad_request"}})',
            ):
                wait_for(
                    lambda q=promql: float(instant(base, q)[0]["value"][1]) >= 1, 30, promql, interval=0.5
                )
            await asyncio.sleep(2)  # a couple more scrapes of live traffic

            checked = check_every_query(base, started)
            check_variables(base)
        finally:
            ticker.cancel()
            for task in readers:
                task.cancel()
            for sub in fast:
                with contextlib.suppress(Exception):
                    await sub.close()
    assert checked == sum(len(queries) for queries in build.QUERIES.values())


def check_every_query(base: str, started: float) -> int:
    """Each target: a finite value now, and some value above zero during the test."""
    board = json_board()
    checked = 0
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            promql = substitute(target["expr"])
            assert "$" not in promql, promql
            now = instant(base, promql)
            where = f"panel {panel['title']!r} target {target['refId']}: {promql}"
            assert now, f"no data for {where}"
            assert all(math.isfinite(float(series["value"][1])) for series in now), (where, now)
            over_time = api(base, "query_range", query=promql, start=started, end=time.time(), step=1)[
                "result"
            ]
            peak = max(
                float(v) for series in over_time for _, v in series["values"] if math.isfinite(float(v))
            )
            assert peak > 0, f"only zeros for {where}"
            checked += 1
    return checked


def check_variables(base: str) -> None:
    """The variable queries (label_values) list the real namespace, job and pods."""
    expected = {"namespace": {NAMESPACE}, "job": {JOB}, "pod": set(PODS)}
    for variable in json_board()["templating"]["list"][1:]:
        query = substitute(variable["query"]["query"])
        series, label = query.removeprefix("label_values(").removesuffix(")").rsplit(", ", 1)
        values = api(base, f"label/{label}/values", **{"match[]": series})
        assert set(values) == expected[variable["name"]], (query, values)


def json_board() -> dict[str, Any]:
    import json

    return dict(json.loads(build.OUTPUT.read_text()))
