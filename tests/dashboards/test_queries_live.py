"""Every dashboard query returns data from a real Prometheus scraping two loaded gateways and the operator.

Two pods on one Redis: ``gw-a`` runs two uvicorn workers (multiprocess metrics), ``gw-b`` one. The load makes
every panel meaningful: subscribers on both, publishes through both, a client that stops reading until it is
closed with 4008 (drops, slow-consumer closes, queued bytes), a resume with ``since`` (recoveries), clients
that leave (closes) and clients refused on both pods (refusals). The real operator (against kmock) scales
their Deployment, sheds the busier pod, fails to read a dead pod of a second autoscaler and fails a round of a
third, so the autoscaler row and the scale annotation have data too. Prometheus gets the labels a
ServiceMonitor would add (namespace, pod). Queries on kube-state-metrics and cAdvisor series
(``Query.external``) run for their syntax only: neither runs here.
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
import redis

from app.causes import CloseCode
from dashboards import build
from tests.clients import Subscriber, close_code, publish
from tests.observability.helpers import scrape, value
from tests.observability.test_prometheus import start_prometheus
from tests.operator.conftest import (  # noqa: F401  (api: the kmock cluster fixture)
    CAS,
    DEPLOYMENTS,
    NS,
    SECRETS,
    OperatorProcess,
    Pods,
    admin_secret,
    api,
    autoscaler,
    deployment,
    pod,
)
from tests.operator.conftest import (
    PODS as POD_RESOURCE,
)
from tests.servers import RedisServer, free_port, wait_for

NAMESPACE, JOB, PODS = NS, "eventcast", ("gw-a", "gw-b")
OPERATOR_JOB = "eventcast-operator"
#: The test's whole life fits in a minute, so a one-minute window sees everything it caused.
RATE_INTERVAL = "1m"
CHANNEL = "firehose"
BIG = "x" * 10_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # a loaded 2-core machine: ~2 minutes


def substitute(text: str) -> str:
    """What Grafana sends for the dashboard's variables (All pods selected: a regex alternation)."""
    for name, real in (
        ("$cluster", ".*"),  # one Prometheus, no cluster label: Grafana's "All"
        ("$namespace", NAMESPACE),
        ("$job", JOB),
        ("$pod", "|".join(PODS)),
        ("$__rate_interval", RATE_INTERVAL),
        ("$__interval", "1s"),
    ):
        text = text.replace(name, real)
    return text


@pytest.fixture
def pods(redis_server: RedisServer) -> Iterator[Pods]:
    """gw-a with two workers; gw-b hosts the slow client: a small queue, and no idle cut-off while it stalls."""
    made = Pods(
        2,
        broker=redis_server.url,
        workers=(2, 1),
        env=({}, {"EVENTCAST_SEND_QUEUE_BYTES": "262144", "EVENTCAST_IDLE_TIMEOUT_SECONDS": "300"}),
    )
    try:
        made.start()
        yield made
    finally:
        made.stop()


@contextlib.contextmanager
def prometheus(tmp_path: Path, jobs: dict[str, dict[str, str]]) -> Iterator[str]:
    """Scrape every 1 s: job -> {pod: host:port}, with the labels a ServiceMonitor adds."""
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is missing: run `make test` (it installs the Debian package)"
    config = tmp_path / "prometheus.yml"
    scrape_configs = "".join(
        f"  - job_name: {job}\n    static_configs:\n"
        + "".join(
            f"      - targets: ['{address}']\n        labels: {{namespace: {NAMESPACE}, pod: {pod}}}\n"
            for pod, address in targets.items()
        )
        for job, targets in jobs.items()
    )
    config.write_text(
        f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_configs}"
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


def prom_get(base: str, path: str, **params: Any) -> Any:
    body = httpx.get(f"{base}/api/v1/{path}", params=params, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]


def instant(base: str, promql: str) -> list[dict[str, Any]]:
    return list(prom_get(base, "query", query=promql)["result"])


async def drain(sub: Subscriber) -> None:
    with contextlib.suppress(Exception):
        async for _ in sub.ws:
            pass


async def trickle(gateways: Pods) -> None:
    """Small publishes through both pods, so rates and latencies are live while the queries run."""
    n = 0
    while True:
        await publish(gateways.gateways[n % 2].http, {"channel": CHANNEL, "type": "tick", "data": {"n": n}})
        n += 1
        await asyncio.sleep(0.1)


async def stall_then_cut(gateways: Pods, *, cuts: int, hold: bool) -> Subscriber:
    """A client on gw-b that stops reading: its queue fills (held until Prometheus scraped it), then 4008.

    Returns once gw-b counts ``cuts`` slow-consumer closes in all.
    """
    b = gateways.gateways[1]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((b.host, b.port))
    slow = await Subscriber.open(f"{b.ws}/ws/events?channels={CHANNEL}", sock=sock, max_queue=1)
    slow.ws.transport.pause_reading()
    held = not hold
    for burst in range(200):  # at most 40 MB; the loopback buffers hide a few MB
        events = [{"channel": CHANNEL, "type": "big", "data": {"n": burst, "p": BIG}} for _ in range(20)]
        await publish(gateways.gateways[burst % 2].http, events)
        _, samples = await asyncio.to_thread(scrape, gateways.metrics_url(1))
        if value(samples, "eventcast_connections_closed_total", reason="slow_consumer") >= cuts:
            return slow
        if not held and value(samples, "eventcast_send_queue_bytes") > 0:
            held = True
            await asyncio.sleep(2.5)  # a queue with bytes in it, seen by a few 1 s scrapes
        await asyncio.sleep(0.01)
    raise AssertionError(f"the stalled client was never closed with 4008\n{b.tail()}")


def cluster(kube: Any, gateways: Pods) -> None:
    """What the operator watches: the gateways' Deployment (1 replica until the clients come), a Deployment whose
    only pod never answers (scrape failures) and one whose spec it cannot read (failed rounds)."""
    kube.objects[DEPLOYMENTS, NS, "eventcast"] = deployment("eventcast", 1)
    for index, name in enumerate(PODS):
        kube.objects[POD_RESOURCE, NS, name] = pod(name, gateways.hosts[index])
    kube.objects[SECRETS, NS, "eventcast-admin"] = admin_secret()
    kube.objects[CAS, NS, "gw"] = autoscaler(
        "gw",
        "eventcast",
        connectionsPerReplica=10,  # no client yet: 1 pod; the test's clients make it 2 (a scale event)
        minReplicas=1,
        maxReplicas=2,
        metricsPort=gateways.metrics_port,
        shedSpreadSeconds=0,
        rebalance={"windowSeconds": 1},
        adminTokenSecretRef={"name": "eventcast-admin", "key": "token"},
    )
    flaky = deployment("flaky", 1) | {
        "metadata": {"name": "flaky", "namespace": NS, "uid": "uid-flaky", "resourceVersion": "1"}
    }
    flaky["spec"]["selector"] = {"matchLabels": {"app": "flaky"}}
    kube.objects[DEPLOYMENTS, NS, "flaky"] = flaky
    kube.objects[POD_RESOURCE, NS, "flaky-dead"] = pod("flaky-dead", "127.0.0.9", labels={"app": "flaky"})
    kube.objects[CAS, NS, "flaky"] = autoscaler("flaky", "flaky", connectionsPerReplica=10, maxReplicas=3)
    broken = deployment("broken", 1)
    broken["spec"]["replicas"] = "many"  # not a number: its rounds fail, are counted, and the others go on
    broken["metadata"] = {"name": "broken", "namespace": NS, "uid": "uid-broken", "resourceVersion": "1"}
    kube.objects[DEPLOYMENTS, NS, "broken"] = broken
    kube.objects[CAS, NS, "broken"] = autoscaler("broken", "broken", connectionsPerReplica=10, maxReplicas=3)


async def test_every_panel_query_returns_data(pods: Pods, api: Any, tmp_path: Path) -> None:  # noqa: F811
    a, b = pods.gateways
    started = time.time()
    cluster(api, pods)
    operator = await OperatorProcess(api, tmp_path, "--interval", "0.5").start()
    targets = {f"{pod}": f"{host}:{pods.metrics_port}" for pod, host in zip(PODS, pods.hosts, strict=True)}
    jobs = {JOB: targets, OPERATOR_JOB: {"op-a": f"127.0.0.1:{operator.metrics_port}"}}
    try:
        with prometheus(tmp_path, jobs) as base:
            await exercise(pods, a, b, base, started, api)
    finally:
        await operator.stop()


async def exercise(pods: Pods, a: Any, b: Any, base: str, started: float, kube: Any) -> None:
    # Prometheus sees the operator hold one replica before any client comes: their arrival is a scale event.
    one = 'eventcast_operator_desired_replicas{autoscaler="gw"} == 1'
    await asyncio.to_thread(wait_for, lambda: instant(base, one), 30, one, 0.5)
    fast = [await Subscriber.open(f"{gw.ws}/ws/events?channels={CHANNEL}") for gw in (b, a) for _ in range(6)]
    readers = [asyncio.create_task(drain(sub)) for sub in fast]
    ticker = asyncio.create_task(trickle(pods))
    try:
        # Once is enough: every reason and result series exists from the start at 0, so the first
        # slow-consumer close, client close, recovery and refusal already show as a rate.
        slow = await stall_then_cut(pods, cuts=1, hold=True)
        slow.ws.transport.resume_reading()
        await slow.closed(timeout=30)  # 4008, or 1006 when the close handshake itself stalled
        back = await Subscriber.open(f"{b.ws}/ws/events?channels={CHANNEL}&since={slow.last_id}")
        assert back.welcome["recovered"] is True
        await fast[1].close()  # a client of gw-b that leaves: closed by reason "client"
        for gw in (a, b):  # a subscriber refused on each pod: a bad since is closed with 4400
            code, _ = await close_code(f"{gw.ws}/ws/events?channels={CHANNEL}&since=garbage")
            assert code == CloseCode.BAD_REQUEST
        # A producer writing straight into Redis, past the API's checks: the gateways skip and count it.
        redis.Redis.from_url(a.broker).xadd(
            "eventcast:log", {"channel": CHANNEL, "type": "not a type!", "data": "1"}
        )
        # gw-a gets more clients than gw-b: the operator sheds some of them toward the mean.
        extra = [await Subscriber.open(f"{a.ws}/ws/events?channels={CHANNEL}") for _ in range(10)]
        fast += extra
        readers += [asyncio.create_task(drain(sub)) for sub in extra]
        for promql in (
            f'sum(eventcast_connections_closed_total{{job="{JOB}", reason="slow_consumer"}})',
            f'sum(eventcast_recoveries_total{{job="{JOB}", result="recovered"}})',
            f'sum(eventcast_connections_closed_total{{job="{JOB}", reason="client"}})',
            f'sum(eventcast_connections_refused_total{{job="{JOB}", reason="bad_request"}})',
            f'sum(eventcast_events_quarantined_total{{job="{JOB}"}})',
            f'sum(eventcast_operator_shed_connections_total{{job="{OPERATOR_JOB}"}})',
            f'sum(eventcast_operator_scrape_failures_total{{job="{OPERATOR_JOB}"}})',
            f'sum(eventcast_operator_reconcile_errors_total{{job="{OPERATOR_JOB}"}})',
        ):
            try:  # in a thread: kmock, which the operator talks to, runs on this event loop
                await asyncio.to_thread(
                    wait_for, lambda q=promql: float(instant(base, q)[0]["value"][1]) >= 1, 30, promql, 0.5
                )
            except TimeoutError as exc:
                raise AssertionError(
                    f"{exc}; the operator says: {kube.objects[CAS, NS, 'gw'].raw.get('status')}"
                ) from exc
        await asyncio.sleep(2)  # a couple more scrapes of live traffic

        checked = check_every_query(base, started)
        check_annotations(base, started)
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
    """Each target: a finite value now, and some value above zero during the test (external ones: it runs)."""
    board = json_board()
    external = {q.expr for queries in build.QUERIES.values() for q in queries if q.external}
    quiet = {q.expr for queries in build.QUERIES.values() for q in queries if q.quiet}
    checked = 0
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            promql = substitute(target["expr"])
            assert "$" not in promql, promql
            now = instant(base, promql)  # a query Prometheus cannot parse fails here
            checked += 1
            if target["expr"] in external:
                continue
            where = f"panel {panel['title']!r} target {target['refId']}: {promql}"
            assert now, f"no data for {where}"
            assert all(math.isfinite(float(series["value"][1])) for series in now), (where, now)
            over_time = prom_get(base, "query_range", query=promql, start=started, end=time.time(), step=1)[
                "result"
            ]
            peak = max(
                float(v) for series in over_time for _, v in series["values"] if math.isfinite(float(v))
            )
            assert peak > 0 or target["expr"] in quiet, f"only zeros for {where}"
    return checked


def check_annotations(base: str, started: float) -> None:
    """Each annotation query runs; ours (not kube-state-metrics') marked something during the test."""
    for annotation in json_board()["annotations"]["list"]:
        promql = substitute(annotation["target"]["expr"])
        over_time = prom_get(base, "query_range", query=promql, start=started, end=time.time(), step=1)[
            "result"
        ]
        if "kube_" in promql:
            continue
        assert over_time, f"annotation {annotation['name']!r} marked nothing: {promql}"


def check_variables(base: str) -> None:
    """The variable queries (label_values) list the real namespace, job and pods."""
    expected: dict[str, set[str]] = {
        "cluster": set(),
        "namespace": {NAMESPACE},
        "job": {JOB},
        "pod": set(PODS),
    }
    for variable in json_board()["templating"]["list"][1:]:
        query = substitute(variable["query"]["query"])
        series, label = query.removeprefix("label_values(").removesuffix(")").rsplit(", ", 1)
        values = prom_get(base, f"label/{label}/values", **{"match[]": series})
        assert set(values) == expected[variable["name"]], (query, values)


def json_board() -> dict[str, Any]:
    import json

    return dict(json.loads(build.OUTPUT.read_text()))
