"""Fan-out across replicas and workers sharing one Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from app.causes import CloseCode
from tests.clients import Subscriber, batch, publish, raw_subscriber
from tests.observability.helpers import connections_per_worker
from tests.servers import Gateway, RedisServer


async def test_publish_on_one_replica_reaches_subscribers_on_both(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    first = gateway_factory(broker=redis_server.url)
    second = gateway_factory(broker=redis_server.url)
    subs = [await Subscriber.open(f"{g.ws}/ws/events?channels=x") for g in (first, second) for _ in range(5)]
    assert {s.welcome["replica"] for s in subs} == {f"gw-{first.port}", f"gw-{second.port}"}
    ids = (await publish(first.http, batch("x", 10))).json()["ids"]
    ids += (await publish(second.http, batch("x", 10, start=10))).json()["ids"]
    for received in await asyncio.gather(*(s.collect(20) for s in subs)):
        assert [e["id"] for e in received] == ids
    for s in subs:
        await s.close()


async def test_two_workers_share_events(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory(broker=redis_server.url, workers=2)
    # The kernel spreads connections over both workers' accept queues; 40 clients land on both in practice,
    # and the connection ids in welcome frames are per process, so count distinct pids through /metrics later.
    subs = [await Subscriber.open(f"{gateway.ws}/ws/events?channels=w") for _ in range(40)]
    ids: list[str] = []
    for start in range(0, 30, 10):  # publishes land on either worker too
        ids += (await publish(gateway.http, batch("w", 10, start=start))).json()["ids"]
    for received in await asyncio.gather(*(s.collect(30) for s in subs)):
        assert [e["id"] for e in received] == ids
    for s in subs:
        await s.close()


def test_memory_broker_refuses_several_workers() -> None:
    import subprocess
    import sys

    from tests.servers import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "2", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "needs a shared broker" in result.stderr


async def test_two_workers_get_an_even_share_of_clients(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    """Each worker listens on its own SO_REUSEPORT socket: the kernel, not an accept race, splits clients."""
    gateway = gateway_factory(
        broker=redis_server.url, workers=2, env={"EVENTCAST_METRICS_DIR": str(tmp_path)}
    )
    clients = [await raw_subscriber(gateway.host, gateway.port) for _ in range(200)]
    per_worker: dict[int, float] = {}
    for _ in range(30):  # workers republish their live gauges every second
        await asyncio.sleep(0.5)
        per_worker = connections_per_worker(tmp_path)
        if sum(per_worker.values()) == len(clients):
            break
    assert len(per_worker) == 2 and sum(per_worker.values()) == len(clients), per_worker
    # A fair hash gives 100 +- 7 (one standard deviation) each; the accept race gave 68/32 at 10,000 clients.
    assert min(per_worker.values()) >= 60, per_worker
    for _, writer in clients:
        writer.close()


async def test_admin_shed_and_drain_reach_every_worker_of_the_pod(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    """One worker takes the request; the command reaches its siblings through Redis, not another pod's."""
    pod = gateway_factory(broker=redis_server.url, workers=2)
    other = gateway_factory(broker=redis_server.url)  # another pod on the same Redis: left alone
    subs = [await Subscriber.open(f"{pod.ws}/ws/events?channels=x") for _ in range(30)]
    bystanders = [await Subscriber.open(f"{other.ws}/ws/events?channels=x") for _ in range(3)]
    async with httpx.AsyncClient() as client:
        shed = await client.post(
            f"{pod.http}/admin/shed", json={"fraction": 1.0, "seconds": 0}, headers=pod.admin
        )
        assert shed.status_code == 202, shed.text
        codes = await asyncio.gather(*(s.closed() for s in subs))  # all 30, whichever worker holds them
        assert {code for code, _ in codes} == {CloseCode.SERVICE_RESTART}
        assert all(reason.endswith("shed") for _, reason in codes)
        assert shed.json()["shed"] > 0
        ids = (await publish(other.http, batch("x", 2))).json()["ids"]
        for s in bystanders:
            assert [e["id"] for e in await s.collect(2)] == ids

        late = [await Subscriber.open(f"{pod.ws}/ws/events?channels=x") for _ in range(10)]
        drain = await client.post(f"{pod.http}/admin/drain", json={"seconds": 0}, headers=pod.admin)
        assert drain.status_code == 202, drain.text
        codes = await asyncio.gather(*(s.closed() for s in late))
        assert {code for code, _ in codes} == {CloseCode.SERVICE_RESTART}
        for _ in range(8):  # whichever worker answers, it is draining
            assert (await client.get(f"{pod.http}/readyz")).status_code == 503
        assert (await client.get(f"{other.http}/readyz")).status_code == 200
    for s in bystanders:
        await s.close()


async def test_admin_shed_with_several_workers_and_redis_down_is_503(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    pod = gateway_factory(broker=redis_server.url, workers=2)
    sub = await Subscriber.open(f"{pod.ws}/ws/events?channels=x")
    redis_server.kill()
    async with httpx.AsyncClient() as client:
        shed = await client.post(f"{pod.http}/admin/shed", json={"fraction": 1.0}, headers=pod.admin)
        drain = await client.post(f"{pod.http}/admin/drain", json={"seconds": 0}, headers=pod.admin)
    for response in (shed, drain):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "broker_unavailable"
        assert response.headers["retry-after"] == "1"
    assert sub.ws.protocol.close_rcvd is None  # nobody was asked to leave
    await sub.close()
