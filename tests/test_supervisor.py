"""app/supervisor.py: several workers, a socket each, and no worker outliving its supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import psutil

from app.supervisor import bind_reuseport
from tests.clients import Subscriber
from tests.servers import Gateway, RedisServer, wait_for


def workers_of(supervisor: psutil.Process) -> list[psutil.Process]:
    """The uvicorn workers (multiprocessing also starts a resource tracker)."""
    return [p for p in supervisor.children() if "resource_tracker" not in " ".join(p.cmdline())]


async def test_workers_drain_and_exit_when_the_supervisor_is_killed(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory(broker=redis_server.url, workers=2, env={"EVENTCAST_DRAIN_SECONDS": "1"})
    assert gateway.process is not None
    supervisor = psutil.Process(gateway.process.pid)
    wait_for(lambda: len(workers_of(supervisor)) == 2, 20, "two workers")
    workers = workers_of(supervisor)
    subscriber = await Subscriber.open(f"{gateway.ws}/ws/events?channels=a")

    os.kill(supervisor.pid, signal.SIGKILL)  # as the OOM killer would

    # Each worker notices, drains its clients (1012, so they resume elsewhere) and exits.
    code, _ = await subscriber.closed(timeout=15)
    assert code == 1012
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"orphaned workers still running: {[p.pid for p in alive]}"
    # Nobody listens on the port any more: a new gateway gets it to itself.
    deadline = time.monotonic() + 10
    while True:
        try:
            sockets = bind_reuseport("127.0.0.1", gateway.port, 1, 16)
            break
        except OSError:
            assert time.monotonic() < deadline, "the port is still held by an orphan"
            await asyncio.sleep(0.2)
    for sock in sockets:
        sock.close()
