"""The hub with the in-process broker and an in-test transport: fan-out, slow consumers, resume, drain, shed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from app.broker.base import Listener, Replay, StateListener
from app.broker.memory import MemoryBroker
from app.causes import Cause, CloseCode, Refused
from app.connection import Connection, State
from app.filters import EventFilter
from app.hub import Hub
from app.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, Event, EventId, EventIn, Framing, now_ms
from tests.fakes import FakeSocket

WAIT_SECONDS = 10.0
Hook = Callable[[], Awaitable[None]]


# ------------------------------------------------------------------------------------ doubles
class SpyBroker(MemoryBroker):
    """A memory broker that records what the hub asks of it and can run hooks around ``replay``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, str]] = []
        self.listened: list[Event] = []
        self.before_replay: Hook | None = None
        self.after_replay: Hook | None = None

    async def start(self, listener: Listener, on_state: StateListener | None = None) -> None:
        def spy(events: Sequence[Event]) -> None:
            self.listened.extend(events)
            listener(events)

        await super().start(spy, on_state)

    async def subscribe(self, channel: str) -> None:
        self.calls.append(("subscribe", channel))
        await super().subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.calls.append(("unsubscribe", channel))
        await super().unsubscribe(channel)

    async def replay(self, channels: Sequence[str], since: EventId, limit: int) -> Replay:
        if self.before_replay is not None:
            await self.before_replay()
        result = await super().replay(channels, since, limit)
        if self.after_replay is not None:
            await self.after_replay()
        return result


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def ev(channel: str, n: int, *, type_: str = "test.event", pad: int = 0) -> EventIn:
    data: dict[str, Any] = {"n": n}
    if pad:
        data["pad"] = "x" * pad
    return EventIn(channel, type_, data, now_ms())


# ------------------------------------------------------------------------------------ fixtures
class Env:
    def __init__(self, hub: Hub, broker: SpyBroker) -> None:
        self.hub = hub
        self.broker = broker

    async def connect(
        self,
        channels: Sequence[str] = ("a",),
        *,
        since: str | None = None,
        blocked: bool = False,
        max_queue_bytes: int = 1_000_000,
        framing: Framing = Framing.WS_JSON,
        event_filter: EventFilter | None = None,
    ) -> tuple[Connection, FakeSocket]:
        conn, transport = new_conn(
            channels,
            blocked=blocked,
            max_queue_bytes=max_queue_bytes,
            framing=framing,
            event_filter=event_filter,
        )
        await self.hub.attach(conn, EventId.parse(since) if since else None)
        return conn, transport

    async def publish(self, channel: str, count: int, start: int = 0, **kwargs: Any) -> list[str]:
        return await self.hub.publish([ev(channel, start + i, **kwargs) for i in range(count)])


def make_env(
    max_connections: int = 10_000, max_replay_events: int = 10_000, max_events: int = 100_000
) -> Env:
    broker = SpyBroker(max_events=max_events, max_age_seconds=3600.0)
    hub = Hub(
        broker, replica="test-replica", max_connections=max_connections, max_replay_events=max_replay_events
    )
    return Env(hub, broker)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = make_env()
    await e.hub.start()
    yield e
    await stop(e)


async def stop(e: Env) -> None:
    for conn in list(e.hub.connections):
        assert isinstance(conn.transport, FakeSocket)
        conn.transport.unblock()
    await asyncio.wait_for(e.hub.stop(), WAIT_SECONDS)


# ------------------------------------------------------------------------------------ welcome
async def test_welcome_frame_first_without_since(env: Env) -> None:
    before = await env.publish("a", 3)
    await asyncio.sleep(0)  # let the broker dispatch them
    conn, t = await env.connect(["a", "b"])
    await wait_until(lambda: len(t.frames) >= 1, "welcome")
    welcome = t.welcome
    assert welcome["recovered"] is False
    assert welcome["reason"] == "no_since"
    assert welcome["connection"] == conn.id
    assert welcome["replica"] == "test-replica"
    assert welcome["channels"] == ["a", "b"]
    assert welcome["protocol"] == SUBPROTOCOL_JSON
    position = EventId.parse(welcome["position"])
    assert position.epoch == env.broker.epoch
    assert str(position) == before[-1]  # starts live right after what was already dispatched
    live = await env.publish("a", 2, start=3)
    await wait_until(lambda: len(t.events) == 2, "live events")
    assert t.ids == live  # nothing from before the connection


async def test_welcome_frame_first_with_since(env: Env) -> None:
    ids = await env.publish("a", 5)
    await asyncio.sleep(0)
    _, t = await env.connect(["a"], since=ids[1])
    await wait_until(lambda: len(t.events) == 3, "replayed events")
    assert t.welcome["recovered"] is True
    assert "reason" not in t.welcome
    assert t.welcome["position"] == ids[1]
    assert t.ids == ids[2:]


async def test_welcome_with_unrecoverable_since_says_why(env: Env) -> None:
    ids = await env.publish("a", 3)
    await asyncio.sleep(0)
    other_epoch = "ffffffff" if env.broker.epoch != "ffffffff" else "eeeeeeee"
    stale = f"{other_epoch}.{EventId.parse(ids[0]).position}"
    _, t = await env.connect(["a"], since=stale)
    await wait_until(lambda: len(t.frames) >= 1, "welcome")
    assert t.welcome["recovered"] is False
    assert t.welcome["reason"] == "epoch_changed"
    assert t.welcome["position"] == f"{env.broker.epoch}.{env.broker.position}"
    live = await env.publish("a", 2)
    await wait_until(lambda: len(t.events) == 2, "live events after a gap")
    assert t.ids == live


def new_conn(
    channels: Sequence[str],
    *,
    blocked: bool = False,
    max_queue_bytes: int = 1_000_000,
    framing: Framing = Framing.WS_JSON,
    event_filter: EventFilter | None = None,
) -> tuple[Connection, FakeSocket]:
    transport = FakeSocket(framing=framing, blocked=blocked)
    conn = Connection(
        transport, channels=channels, event_filter=event_filter, max_queue_bytes=max_queue_bytes
    )
    transport.conn = conn
    return conn, transport


async def test_attach_now_only_when_every_channel_is_already_subscribed(env: Env) -> None:
    first, _ = new_conn(["a"])
    assert env.hub.attach_now(first) is False  # "a" needs a broker subscription: the async path
    assert not env.hub.connections and env.hub.subscriber_count("a") == 0
    await env.hub.attach(first, None)
    mixed, _ = new_conn(["a", "b"])
    assert env.hub.attach_now(mixed) is False  # "b" is new
    assert mixed not in env.hub.connections
    before = await env.publish("a", 2)
    await asyncio.sleep(0)
    conn, transport = new_conn(["a"])
    assert env.hub.attach_now(conn) is True
    assert conn in env.hub.connections and env.hub.subscriber_count("a") == 2
    assert env.broker.calls.count(("subscribe", "a")) == 1
    ids = await env.publish("a", 3)
    await wait_until(lambda: len(transport.frames) >= 4, "welcome and 3 events")
    welcome = transport.welcome
    assert (welcome["recovered"], welcome["reason"]) == (False, "no_since")
    assert EventId.parse(welcome["position"]).position == EventId.parse(before[-1]).position
    assert [e["id"] for e in transport.events] == ids  # live from the welcome on, nothing older


async def test_attach_now_refuses_like_attach(env: Env) -> None:
    await env.connect(["a"])
    env.hub.start_drain(60)
    conn, _ = new_conn(["a"])
    with pytest.raises(Refused) as exc:
        env.hub.attach_now(conn)
    assert exc.value.code == CloseCode.SERVICE_RESTART
    assert conn not in env.hub.connections and env.hub.subscriber_count("a") == 1


async def test_msgpack_connection_gets_msgpack_frames(env: Env) -> None:
    _, tj = await env.connect(["a"])
    _, tm = await env.connect(["a"], framing=Framing.WS_MSGPACK)
    ids = await env.publish("a", 3)
    await wait_until(lambda: len(tm.frames) == 4 and len(tj.frames) == 4, "both encodings")
    assert all(opcode == 0x2 for opcode, _ in tm.frames)  # binary frames
    assert all(opcode == 0x1 for opcode, _ in tj.frames)  # text frames
    assert tm.welcome["protocol"] == SUBPROTOCOL_MSGPACK
    assert tm.events == tj.events
    assert tm.ids == ids


# ------------------------------------------------------------------------------------ fan-out
async def test_fan_out_in_order_to_many_connections(env: Env) -> None:
    a = [await env.connect(["a"]) for _ in range(40)]
    b = [await env.connect(["b"]) for _ in range(30)]
    ab = [await env.connect(["a", "b"]) for _ in range(30)]
    ids_a: list[str] = []
    ids_b: list[str] = []
    all_ids: list[str] = []
    for i in range(50):
        batch = [ev("a", i), ev("b", i), ev("c", i)]
        ids = await env.hub.publish(batch)
        ids_a.append(ids[0])
        ids_b.append(ids[1])
        all_ids += ids[:2]
    await wait_until(
        lambda: all(len(t.events) == 50 for _, t in a + b) and all(len(t.events) == 100 for _, t in ab),
        "every connection to get every event",
    )
    for _, t in a:
        assert t.ids == ids_a
    for _, t in b:
        assert t.ids == ids_b
    for _, t in ab:
        assert t.ids == all_ids
        assert [e["data"]["n"] for e in t.events if e["channel"] == "a"] == list(range(50))


async def test_filter_applies_to_replay_and_live(env: Env) -> None:
    first = await env.hub.publish([ev("a", 0)])
    await env.hub.publish([ev("a", 1, type_="node.created"), ev("a", 2, type_="edge.created")])
    await asyncio.sleep(0)
    f = EventFilter.build(["edge.*"], None)
    conn, t = await env.connect(["a"], since=first[0], event_filter=f)
    await env.hub.publish([ev("a", 3, type_="edge.deleted"), ev("a", 4, type_="node.deleted")])
    await wait_until(lambda: len(t.events) == 2, "filtered events")
    await asyncio.sleep(0.02)
    assert [e["data"]["n"] for e in t.events] == [2, 3]
    conn.set_filter(EventFilter.build(["node.*"], None))
    await env.hub.publish([ev("a", 5, type_="edge.x"), ev("a", 6, type_="node.x")])
    await wait_until(lambda: len(t.events) == 3, "events after a filter change")
    assert t.events[-1]["data"]["n"] == 6


# ------------------------------------------------------------------------------------ slow consumers
async def test_slow_consumer_is_closed_4008_and_others_get_everything(env: Env) -> None:
    fast = [await env.connect(["a"]) for _ in range(20)]
    slow_conn, slow = await env.connect(["a"], blocked=True, max_queue_bytes=4_000)
    ids: list[str] = []
    for i in range(20):
        ids += await env.publish("a", 10, start=i * 10, pad=200)  # ~250 bytes a frame: far past 4 kB
    await wait_until(lambda: slow.closed is not None, "the slow consumer to be closed")
    assert slow.closed is not None
    assert slow.closed[0] == CloseCode.SLOW_CONSUMER == 4008
    assert slow_conn.cause is Cause.SLOW_CONSUMER
    assert slow_conn.queued_bytes <= slow_conn.max_queue_bytes
    await wait_until(lambda: all(len(t.events) == 200 for _, t in fast), "fast clients to get everything")
    for _, t in fast:
        assert t.ids == ids
        assert t.closed is None
    # Once closed it takes nothing more, and detaching it leaves the others untouched.
    await env.hub.detach(slow_conn)
    assert env.hub.subscriber_count("a") == 20
    more = await env.publish("a", 5, start=1000, pad=200)
    await wait_until(lambda: all(len(t.events) == 205 for _, t in fast), "fast clients after detach")
    assert all(t.ids[-5:] == more for _, t in fast)


async def test_queue_below_limit_is_not_closed(env: Env) -> None:
    conn, t = await env.connect(["a"], blocked=True, max_queue_bytes=100_000)
    ids = await env.publish("a", 50, pad=100)
    await asyncio.sleep(0.02)
    assert conn.state is State.LIVE
    assert t.closed is None
    assert 0 < conn.queued_bytes <= conn.max_queue_bytes
    t.unblock()
    await wait_until(lambda: len(t.events) == 50, "a blocked client to catch up")
    assert t.ids == ids
    await wait_until(lambda: conn.queued_bytes == 0, "queue to empty")


# ------------------------------------------------------------------------------------ resume
async def test_resume_gives_missed_then_live_events(env: Env) -> None:
    conn, t = await env.connect(["a", "b"])
    first = await env.hub.publish([ev("a" if i % 2 else "b", i) for i in range(10)])
    await wait_until(lambda: len(t.events) == 10, "first events")
    last_seen = t.ids[-1]
    await env.hub.detach(conn)
    missed = await env.hub.publish([ev("abc"[i % 3], 10 + i) for i in range(30)])
    await asyncio.sleep(0)
    _, t2 = await env.connect(["a", "b"], since=last_seen)
    live = await env.hub.publish([ev("ab"[i % 2], 100 + i) for i in range(10)])
    expected = [
        i for i, e in zip(missed, [ev("abc"[i % 3], 0) for i in range(30)], strict=True) if e.channel != "c"
    ]
    await wait_until(lambda: len(t2.events) == len(expected) + 10, "missed and live events")
    assert t2.welcome["recovered"] is True
    assert t2.ids == expected + live
    assert len(set(t2.ids)) == len(t2.ids)
    assert first[-1] == last_seen


async def test_resume_no_duplicates_with_publishes_during_replay() -> None:
    """Events published before the replay reads history, and while it runs, arrive exactly once."""
    e = make_env()
    await e.hub.start()
    try:
        _, watcher = await e.connect(["a"])  # keeps "a" subscribed the whole time
        ids = await e.publish("a", 10)
        await asyncio.sleep(0)
        since = ids[4]
        during: list[str] = []

        async def before() -> None:  # dispatched into the new connection's pending list AND in history
            during.extend(await e.publish("a", 5, start=100))
            await asyncio.sleep(0)

        async def after() -> None:  # dispatched while syncing, not in the replayed history
            during.extend(await e.publish("a", 5, start=200))
            await asyncio.sleep(0)

        e.broker.before_replay, e.broker.after_replay = before, after
        _, t = await e.connect(["a"], since=since)
        e.broker.before_replay = e.broker.after_replay = None
        live = await e.publish("a", 5, start=300)
        expected = ids[5:] + during + live
        await wait_until(lambda: len(t.events) >= len(expected), "replay, pending and live events")
        await wait_until(lambda: len(watcher.events) == 25, "the watcher")
        await asyncio.sleep(0.02)  # anything extra (a duplicate) would show up by now
        assert t.welcome["recovered"] is True
        assert t.ids == expected
        assert watcher.ids == ids + during + live
    finally:
        await stop(e)


async def test_resume_no_duplicates_when_publish_is_not_yet_dispatched(env: Env) -> None:
    _, watcher = await env.connect(["a"])
    ids = await env.publish("a", 5)
    await asyncio.sleep(0)
    # Published, accepted and in history, but not yet fanned out by the broker when the client resumes.
    undispatched = await env.publish("a", 3, start=5)
    _, t = await env.connect(["a"], since=ids[-1])
    live = await env.publish("a", 2, start=8)
    await wait_until(lambda: len(watcher.events) == 10, "the watcher")
    await wait_until(lambda: len(t.events) >= 5, "the resumed client")
    await asyncio.sleep(0.02)
    assert t.ids == undispatched + live


async def test_resume_too_far_behind_is_not_recovered() -> None:
    e = make_env(max_replay_events=5)
    await e.hub.start()
    try:
        ids = await e.publish("a", 20)
        await asyncio.sleep(0)
        _, t = await e.connect(["a"], since=ids[0])
        live = await e.publish("a", 2, start=20)
        await wait_until(lambda: len(t.events) == 2, "live events")
        assert t.welcome["recovered"] is False
        assert t.welcome["reason"] == "too_many"
        assert t.ids == live
    finally:
        await stop(e)


# ------------------------------------------------------------------------------------ subscriptions
async def test_upstream_subscription_follows_first_and_last_subscriber(env: Env) -> None:
    broker, hub = env.broker, env.hub
    _, marker = await env.connect(["marker"])
    assert hub.subscriber_count("a") == 0
    c1, t1 = await env.connect(["a"])
    assert hub.subscriber_count("a") == 1
    c2, t2 = await env.connect(["a", "b"])
    assert hub.subscriber_count("a") == 2
    assert hub.subscriber_count("b") == 1
    assert broker.calls.count(("subscribe", "a")) == 1  # taken once, for the first subscriber

    await hub.detach(c1)
    assert hub.subscriber_count("a") == 1
    assert ("unsubscribe", "a") not in broker.calls
    ids = await env.publish("a", 3)
    await wait_until(lambda: len(t2.events) == 3, "the remaining subscriber")
    assert [x.id for x in broker.listened if x.channel == "a"] == ids

    await hub.detach(c2)
    assert hub.subscriber_count("a") == 0
    assert hub.subscriber_count("b") == 0
    assert broker.calls.count(("unsubscribe", "a")) == 1
    assert broker.calls.count(("unsubscribe", "b")) == 1
    assert ("unsubscribe", "marker") not in broker.calls
    # Released upstream: the broker's listener no longer gets "a" (the marker proves delivery happened).
    await env.publish("a", 3, start=3)
    marker_ids = await env.publish("marker", 1)
    await wait_until(lambda: marker.ids == marker_ids, "the marker event")
    assert [x.id for x in broker.listened if x.channel == "a"] == ids
    assert t1.events == [] and len(t2.events) == 3

    # A new first subscriber takes it again.
    _, t3 = await env.connect(["a"])
    assert broker.calls.count(("subscribe", "a")) == 2
    again = await env.publish("a", 1, start=10)
    await wait_until(lambda: t3.ids == again, "delivery after re-subscribing")


async def test_detach_is_idempotent(env: Env) -> None:
    c, _ = await env.connect(["a"])
    await env.hub.detach(c)
    await env.hub.detach(c)
    assert env.hub.subscriber_count("a") == 0
    assert env.broker.calls.count(("unsubscribe", "a")) == 1
    assert c not in env.hub.connections


# ------------------------------------------------------------------------------------ capacity, drain, shed
async def test_draining_refuses_new_connections_with_1012(env: Env) -> None:
    env.hub.start_drain(0)
    assert env.hub.ready is False
    with pytest.raises(Refused) as exc:
        env.hub.check_capacity()
    assert exc.value.code == CloseCode.SERVICE_RESTART == 1012
    with pytest.raises(Refused):
        await env.connect(["a"])
    assert not env.hub.connections
    assert env.hub.subscriber_count("a") == 0


async def test_max_connections_refuses_with_1013() -> None:
    e = make_env(max_connections=3)
    await e.hub.start()
    try:
        conns = [await e.connect(["a"]) for _ in range(3)]
        with pytest.raises(Refused) as exc:
            e.hub.check_capacity()
        assert exc.value.code == CloseCode.TRY_AGAIN_LATER == 1013
        with pytest.raises(Refused) as exc2:
            await e.connect(["a"])
        assert exc2.value.code == 1013
        assert len(e.hub.connections) == 3
        assert e.hub.subscriber_count("a") == 3
        await e.hub.detach(conns[0][0])
        await e.connect(["a"])  # room again
        assert len(e.hub.connections) == 3
    finally:
        await stop(e)


async def test_shed_closes_that_share_with_1012(env: Env) -> None:
    conns = [await env.connect(["a"]) for _ in range(10)]
    ids = await env.publish("a", 3)
    closed_count = await env.hub.shed(0.5)
    assert closed_count == 5
    await wait_until(lambda: sum(t.closed is not None for _, t in conns) == 5, "five closes")
    await asyncio.sleep(0.02)
    closed = [(c, t) for c, t in conns if t.closed is not None]
    kept = [(c, t) for c, t in conns if t.closed is None]
    assert len(closed) == 5 and len(kept) == 5
    for c, t in closed:
        assert t.closed is not None and t.closed[0] == CloseCode.SERVICE_RESTART
        assert t.ids == ids  # queued events were flushed before the close
        assert c.cause is Cause.SHED and c.cause.label == "shed"
    for c, _ in closed:
        await env.hub.detach(c)
    more = await env.publish("a", 2, start=3)
    await wait_until(lambda: all(t.ids == ids + more for _, t in kept), "the kept clients")
    assert env.hub.ready is True


async def test_shed_zero_and_all(env: Env) -> None:
    conns = [await env.connect(["a"]) for _ in range(4)]
    assert await env.hub.shed(0.0) == 0
    assert await env.hub.shed(1.0) == 4
    await wait_until(lambda: all(t.closed is not None for _, t in conns), "every client closed")


async def test_drain_closes_everyone_with_1012(env: Env) -> None:
    conns = [await env.connect(["a"]) for _ in range(12)]
    ids = await env.publish("a", 4)
    task = env.hub.start_drain(0.2)
    assert env.hub.start_drain(0.2) is task  # idempotent
    assert env.hub.draining and not env.hub.ready
    await asyncio.wait_for(task, WAIT_SECONDS)
    for c, t in conns:
        assert t.closed is not None and t.closed[0] == CloseCode.SERVICE_RESTART
        assert t.ids == ids
        assert c.cause is Cause.DRAIN and c.cause.label == "drain"
