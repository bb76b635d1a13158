"""Fan-out across replicas and workers sharing one Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.clients import Subscriber, batch, publish
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
