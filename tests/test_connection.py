"""app/connection.py: the one delivery path, driven through a fake socket (tests/fakes.py).

Coalescing (one write per connection per loop turn), the byte bound and 4008, the high-water mark that
keeps a slow client's close frame close to the front, and a replay streamed as the client reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from app import metrics
from app.broker.memory import MemoryBroker
from app.causes import Cause
from app.connection import FLUSHER, HIGH_WATER, Connection, State
from app.hub import Hub
from app.protocol import EventId, EventIn, Framing, now_ms
from tests.fakes import FakeSocket

PAD = 1000  # bytes of padding per event: big enough to reach the marks with few events


def ev(n: int, pad: int = 0) -> EventIn:
    return EventIn("a", "t", {"n": n, "pad": "x" * pad}, now_ms())


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    hub = Hub(
        MemoryBroker(max_events=100_000, max_age_seconds=3600.0),
        replica="r",
        max_connections=1000,
        max_replay_events=100_000,
    )
    await hub.start()
    yield hub
    for conn in list(hub.connections):
        assert isinstance(conn.transport, FakeSocket)
        conn.transport.unblock()
    await hub.stop()


async def connect(
    hub: Hub, *, blocked: bool = False, max_queue_bytes: int = 1_000_000, since: str | None = None
) -> tuple[Connection, FakeSocket]:
    socket = FakeSocket(blocked=blocked)
    conn = Connection(socket, channels=["a"], event_filter=None, max_queue_bytes=max_queue_bytes)
    socket.conn = conn
    assert await hub.attach(conn, EventId.parse(since) if since else None)
    return conn, socket


async def turns(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def wait_until(predicate: object, what: str, timeout: float = 10.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


def busy(seconds: float) -> None:
    """Make the flusher look busy (a flush of ``seconds`` just ended) or, with 0, idle."""
    FLUSHER.last_end, FLUSHER.last_seconds = time.perf_counter(), seconds


async def test_while_busy_events_of_one_loop_turn_leave_in_one_write(hub: Hub) -> None:
    conns = [await connect(hub) for _ in range(5)]
    await turns()
    writes_before = [len(s.writes) for _, s in conns]
    busy(1.0)
    ids: list[str] = []
    for n in range(10):  # ten publishes without yielding: one fan-out each, one flush for all
        ids += await hub.publish([ev(n)])
    await wait_until(lambda: all(len(s.events) == 10 for _, s in conns), "every event")
    for (_, socket), before in zip(conns, writes_before, strict=True):
        assert len(socket.writes) - before == 1, "one system call carried the ten events"
        assert socket.ids == ids


async def test_when_idle_a_fan_out_writes_each_client_as_it_goes(hub: Hub) -> None:
    conns = [await connect(hub) for _ in range(5)]
    await turns()
    busy(0)
    writes_before = [len(s.writes) for _, s in conns]
    await hub.publish([ev(1)])
    await asyncio.sleep(0)  # the broker's dispatch runs: no further loop turn for a flush
    assert [len(s.writes) - before for (_, s), before in zip(conns, writes_before, strict=True)] == [1] * 5
    assert not FLUSHER.dirty and not FLUSHER.holding


async def test_every_flush_writes_each_dirty_connection_once(hub: Hub) -> None:
    conn, socket = await connect(hub)
    await turns()
    before = len(socket.writes)
    for n in range(3):
        await hub.publish([ev(n)])
        await turns()  # a flush between publishes
    assert len(socket.writes) - before == 3
    assert [e["data"]["n"] for e in socket.events] == [0, 1, 2]
    assert conn.delivered == 4  # the welcome and three events


async def test_past_the_byte_bound_the_client_is_closed_4008_and_nothing_more_is_queued(hub: Hub) -> None:
    conn, socket = await connect(hub, blocked=True, max_queue_bytes=20_000)
    dropped = metrics.MESSAGES_DROPPED.labels("slow_consumer")._value.get()
    for n in range(40):
        await hub.publish([ev(n, PAD)])
        await turns(1)
    await wait_until(lambda: socket.closed is not None, "the 4008 close")
    assert socket.closed == (4008, "slow consumer")
    assert conn.cause is Cause.SLOW_CONSUMER and conn.state is State.CLOSING
    assert conn.queued == 0  # what waited was dropped
    assert metrics.MESSAGES_DROPPED.labels("slow_consumer")._value.get() > dropped
    writes = len(socket.writes)
    await hub.publish([ev(99)])
    await turns()
    assert len(socket.writes) == writes


async def test_above_high_water_frames_wait_in_the_queue_and_follow_when_the_peer_reads(hub: Hub) -> None:
    conn, socket = await connect(hub, blocked=True)
    ids: list[str] = []
    for n in range(200):  # ~200 KB: three times the high-water mark
        ids += await hub.publish([ev(n, PAD)])
        await turns(1)
    await turns()
    assert socket.buffered() <= HIGH_WATER + 2 * PAD, "the transport holds about the high-water mark"
    assert conn.queued > 0, "the rest waits in the connection's queue"
    assert conn.state is State.LIVE
    socket.unblock()
    await wait_until(lambda: len(socket.events) == 200, "everything, once the peer reads")
    assert socket.ids == ids


async def test_a_slow_consumers_close_waits_behind_at_most_the_high_water_mark(hub: Hub) -> None:
    conn, socket = await connect(hub, blocked=True, max_queue_bytes=300_000)
    for n in range(400):
        await hub.publish([ev(n, PAD)])
        await turns(1)
    await wait_until(lambda: socket.closed is not None, "the 4008 close")
    # The close goes out right behind what the transport holds: about HIGH_WATER, not the 300 KB bound.
    assert socket.buffered() <= HIGH_WATER + 2 * PAD
    assert conn.cause is Cause.SLOW_CONSUMER


async def test_a_long_replay_is_streamed_as_the_client_reads_and_never_overflows(hub: Hub) -> None:
    first = await hub.publish([ev(0)])
    ids = [id_ for n in range(1, 301) for id_ in await hub.publish([ev(n, PAD)])]  # ~300 KB of history
    await turns()
    conn, socket = await connect(hub, blocked=True, max_queue_bytes=100_000, since=first[0])
    await turns()
    assert conn.state is State.SYNCING, "the replay is not all queued at once"
    assert conn.queued + socket.buffered() <= 100_000
    while len(socket.events) < 300:
        socket.take(20_000)  # a peer reading 20 KB at a time
        await turns()
    assert socket.ids == ids
    assert socket.welcome["recovered"] is True
    assert conn.cause is None


async def test_a_connection_of_another_framing_gets_its_own_frames(hub: Hub) -> None:
    socket = FakeSocket(framing=Framing.WS_MSGPACK)
    conn = Connection(socket, channels=["a"], event_filter=None, max_queue_bytes=100_000)
    socket.conn = conn
    await hub.attach(conn, None)
    _, json_socket = await connect(hub)
    ids = await hub.publish([ev(1)])
    await wait_until(lambda: len(socket.events) == 1 and len(json_socket.events) == 1, "both")
    assert socket.welcome["protocol"] == "eventcast.v1.msgpack"
    assert socket.ids == json_socket.ids == ids
    assert {opcode for opcode, _ in socket.frames} == {0x2}
