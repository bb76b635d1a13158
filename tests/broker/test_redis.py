"""Redis-only behaviour of the Redis engine, against a real redis-server we can kill and restart."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import pytest
import redis.asyncio as aioredis

from app.broker.base import BrokerUnavailable
from app.broker.redis import RedisBroker
from app.protocol import Event, EventId, EventIn, Framing, Position, now_ms
from tests.broker.conftest import PREFIX, Recorder, wait_until
from tests.servers import RedisServer

LOG_KEY = f"{PREFIX}:log"

Factory = Callable[[RedisServer], Awaitable[tuple[RedisBroker, Recorder]]]


def ev(channel: str, n: int) -> EventIn:
    return EventIn(channel, "test.event", {"n": n}, now_ms())


@pytest.fixture
async def make_redis_broker() -> AsyncIterator[Factory]:
    started: list[RedisBroker] = []

    async def make(server: RedisServer) -> tuple[RedisBroker, Recorder]:
        broker = RedisBroker(
            server.url, prefix=PREFIX, max_events=10_000, max_age_seconds=3600.0, retry_seconds=0.05
        )
        recorder = Recorder()
        await broker.start(recorder, recorder.on_state)
        started.append(broker)
        return broker, recorder

    yield make
    for broker in started:
        await broker.stop()


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client: aioredis.Redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_redis_restarted_empty_gives_epoch_changed_and_live_delivery_continues(
    redis_server: RedisServer, make_redis_broker: Factory
) -> None:
    broker, rec = await make_redis_broker(redis_server)
    await broker.subscribe("a")
    old = await broker.publish([ev("a", i) for i in range(5)])
    await rec.wait_for_ids(old)
    old_epoch = broker.epoch

    redis_server.restart(wipe=True)

    # Old ids cannot be resumed: the history they point into is gone.
    async def old_id_refused() -> bool:
        try:
            replay = await broker.replay(["a"], EventId.parse(old[0]), 1000)
        except BrokerUnavailable:
            return False
        assert replay.recovered is False
        return replay.reason == "epoch_changed"

    await wait_until_async(old_id_refused, what="replay of an old id after restart")

    # New events reach the listener without restarting the broker, with ids of the new epoch.
    new = await publish_when_up(broker, [ev("a", 100 + i) for i in range(5)])
    await rec.wait_for_ids(new)
    assert rec.ids[-5:] == new
    assert [e.data["n"] for e in rec.events[-5:]] == [100, 101, 102, 103, 104]
    new_epoch = EventId.parse(new[0]).epoch
    assert new_epoch != old_epoch
    await wait_until(lambda: broker.epoch == new_epoch, what="broker to learn the new epoch")
    assert {e.id.split(".")[0] for e in rec.events[-5:]} == {new_epoch}
    replay = await broker.replay(["a"], EventId.parse(new[0]), 1000)
    assert replay.recovered and [e.id for e in replay.events] == new[1:]
    # The same old id is still refused (never silently resumed in the new log).
    again = await broker.replay(["a"], EventId.parse(old[-1]), 1000)
    assert (again.recovered, again.reason) == (False, "epoch_changed")


async def test_redis_killed_publish_fails_fast_then_recovers(
    redis_server: RedisServer, make_redis_broker: Factory
) -> None:
    broker, rec = await make_redis_broker(redis_server)
    await broker.subscribe("a")
    assert broker.is_up
    assert await broker.ping() is True
    before = await broker.publish([ev("a", 0)])
    await rec.wait_for_ids(before)

    redis_server.kill()

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await broker.publish([ev("a", 1)])
    assert time.monotonic() - started < 10, "publish must fail fast, not hang"
    assert broker.is_up is False
    assert await broker.ping() is False
    assert rec.states[-1] is False
    with pytest.raises(BrokerUnavailable):
        await broker.replay(["a"], EventId.parse(before[0]), 10)

    redis_server.restart(wipe=False)  # no AOF: comes back empty, but reachable

    after = await publish_when_up(broker, [ev("a", 2)])
    await wait_until(lambda: broker.is_up, what="is_up after restart")
    assert await broker.ping() is True
    assert rec.states[-1] is True
    await rec.wait_for_ids(after)
    assert rec.events[-1].data == {"n": 2}
    assert rec.ids[-1] == after[0]  # the live id carries the new epoch, as the publisher was told


async def test_redis_killed_under_concurrent_publishes_fails_each_request_and_accepts_none(
    redis_server: RedisServer, make_redis_broker: Factory, raw: aioredis.Redis
) -> None:
    """Group commit: every waiting request of a failed group hears BrokerUnavailable, none hangs."""
    broker, _ = await make_redis_broker(redis_server)
    await broker.publish([ev("a", 0)])
    redis_server.kill()
    started = time.monotonic()
    results = await asyncio.gather(
        *(broker.publish([ev("a", n), ev("a", n + 1)]) for n in range(1, 60, 2)), return_exceptions=True
    )
    assert time.monotonic() - started < 10
    assert all(isinstance(result, BrokerUnavailable) for result in results), results
    redis_server.restart(wipe=False)
    ids = await publish_when_up(broker, [ev("a", 100)])
    assert len(ids) == 1
    # Redis came back empty (no AOF) and nothing of the refused requests reached it afterwards.
    entries = await raw.xrange(LOG_KEY)
    assert [json.loads(fields["data"])["n"] for _, fields in entries] == [100]


async def test_history_survives_restart_with_aof(aof_server: RedisServer, make_redis_broker: Factory) -> None:
    broker, rec = await make_redis_broker(aof_server)
    await broker.subscribe("a")
    ids = await broker.publish([ev("a", i) for i in range(10)])
    await rec.wait_for_ids(ids)
    epoch = broker.epoch

    aof_server.restart(wipe=False)

    async def recovered() -> bool:
        try:
            replay = await broker.replay(["a"], EventId.parse(ids[2]), 1000)
        except BrokerUnavailable:
            return False
        assert replay.recovered, replay.reason
        assert [e.id for e in replay.events] == ids[3:]
        return True

    await wait_until_async(recovered, what="replay after an AOF restart")
    more = await publish_when_up(broker, [ev("a", 10)])
    assert EventId.parse(more[0]).epoch == epoch
    await rec.wait_for_ids(more)
    # Nothing redelivered after reconnecting: the old events came once, then the new one.
    assert rec.ids == ids + more


async def test_direct_producer_xadd_is_delivered_with_ts_from_id(
    redis_server: RedisServer, raw: aioredis.Redis, make_redis_broker: Factory
) -> None:
    broker, rec = await make_redis_broker(redis_server)
    await broker.subscribe("direct")
    payload = {"nested": {"x": [1, 2, 3]}, "text": "héllo ✓"}
    entry_id = await raw.xadd(
        LOG_KEY, {"channel": "direct", "type": "ext.created", "data": json.dumps(payload)}
    )
    await wait_until(lambda: len(rec.events) == 1, what="a directly produced event")
    event = rec.events[0]
    assert event.id == f"{broker.epoch}.{entry_id}"
    assert event.channel == "direct"
    assert event.type == "ext.created"
    assert event.data == payload
    assert event.ts == float(Position.parse(entry_id).ms)
    assert json.loads(event.frame(Framing.JSON)) == event.as_dict()
    # Direct entries share the log with published ones: they can be resumed from and through.
    published = await broker.publish([ev("direct", 1)])
    await rec.wait_for_ids(published)
    second = await raw.xadd(LOG_KEY, {"channel": "direct", "type": "ext.updated", "data": "7"})
    await wait_until(lambda: len(rec.events) == 3, what="second direct event")
    replay = await broker.replay(["direct"], EventId.parse(event.id), 10)
    assert replay.recovered
    assert [e.id for e in replay.events] == [published[0], f"{broker.epoch}.{second}"]
    assert rec.events[2].data == 7


async def test_direct_producer_invalid_json_arrives_as_string(
    redis_server: RedisServer, raw: aioredis.Redis, make_redis_broker: Factory
) -> None:
    broker, rec = await make_redis_broker(redis_server)
    await broker.subscribe("direct")
    for text in ("not json {", "hello world", "{'single': 'quotes'}"):
        await raw.xadd(LOG_KEY, {"channel": "direct", "type": "ext.text", "data": text})
    await raw.xadd(LOG_KEY, {"channel": "direct", "type": "ext.text"})  # no data at all
    await wait_until(lambda: len(rec.events) == 4, what="four direct events")
    assert [e.data for e in rec.events] == ["not json {", "hello world", "{'single': 'quotes'}", None]
    for event in rec.events:
        assert json.loads(event.frame(Framing.JSON)) == event.as_dict()


async def test_direct_producer_other_channel_is_not_delivered(
    redis_server: RedisServer, raw: aioredis.Redis, make_redis_broker: Factory
) -> None:
    broker, rec = await make_redis_broker(redis_server)
    await broker.subscribe("direct")
    await raw.xadd(LOG_KEY, {"channel": "elsewhere", "type": "t", "data": "1"})
    last = await raw.xadd(LOG_KEY, {"channel": "direct", "type": "t", "data": "2"})
    await wait_until(lambda: len(rec.events) == 1, what="one direct event")
    assert rec.events[0].id.endswith(last)
    await wait_until(lambda: broker.position == Position.parse(last), what="position at the last entry")


# ------------------------------------------------------------------------------------ helpers
async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = ""
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def publish_when_up(broker: RedisBroker, events: list[EventIn], timeout: float = 15.0) -> list[str]:
    """Publish, retrying (bounded) while the broker still reports the outage."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await broker.publish(events)
        except BrokerUnavailable:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("ts", ["nan", "inf", "-inf"])
async def test_direct_producer_non_finite_ts_still_gives_valid_json(
    redis_server: RedisServer, raw: aioredis.Redis, make_redis_broker: Factory, ts: str
) -> None:
    broker, rec = await make_redis_broker(redis_server)
    await broker.subscribe("direct")
    await raw.xadd(LOG_KEY, {"channel": "direct", "type": "t", "data": "1", "ts": ts})
    await wait_until(lambda: len(rec.events) == 1, what="a direct event")
    decoded = json.loads(rec.events[0].frame(Framing.JSON), parse_constant=_reject_constant)
    assert decoded["data"] == 1
    assert isinstance(decoded["ts"], float | int)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


# ------------------------------------------------------------------------------------ poison entries
def quarantined(reason: str) -> float:
    from app import metrics

    return float(metrics.EVENTS_QUARANTINED.labels(reason)._value.get())


async def test_entries_no_encoding_can_carry_are_quarantined_and_reading_goes_on(
    redis_server: RedisServer, make_redis_broker: Factory
) -> None:
    broker, rec = await make_redis_broker(redis_server)
    await broker.subscribe("direct")
    before = {r: quarantined(r) for r in ("invalid_utf8", "too_deep", "integer_range", "invalid_type")}
    raw_bytes: aioredis.Redis = aioredis.Redis.from_url(redis_server.url)  # writes bytes as given
    try:
        good = [await raw_bytes.xadd(LOG_KEY, {"channel": "direct", "type": "t", "data": b"1"})]
        poison: list[dict[bytes | str, bytes | str]] = [
            {"channel": "direct", "type": "t", "data": b"\xff\xfe"},
            {"channel": "direct", "type": b"t\xff", "data": b"1"},
            {"channel": "direct", "type": "t\nx", "data": b"1"},
            {"channel": "direct", "type": "t", "data": b"[" * 300 + b"]" * 300},
            {"channel": "direct", "type": "t", "data": b'{"n": 18446744073709551616}'},
            {"channel": b"\xff", "type": "t", "data": b"1"},  # a channel nobody could subscribe to
            {"channel": "elsewhere", "type": "t", "data": b"\xff"},  # not subscribed here: never read
        ]
        for fields in poison:
            await raw_bytes.xadd(LOG_KEY, fields)  # type: ignore[arg-type]
        # A trace that is not a context, nested past any recursion limit: ignored, the event delivered.
        good.append(
            await raw_bytes.xadd(
                LOG_KEY, {"channel": "direct", "type": "t", "data": b"2", "trace": b"[" * 5000 + b"]" * 5000}
            )
        )
        good.append(await raw_bytes.xadd(LOG_KEY, {"channel": "direct", "type": "t", "data": b"3"}))
    finally:
        await raw_bytes.aclose()
    good_ids = [f"{broker.epoch}.{entry_id.decode()}" for entry_id in good]
    await rec.wait_for_ids(good_ids)
    assert rec.ids == good_ids
    assert [e.data for e in rec.events] == [1, 2, 3]
    assert rec.events[1].trace is None
    assert quarantined("invalid_utf8") == before["invalid_utf8"] + 1
    assert quarantined("invalid_type") == before["invalid_type"] + 2
    assert quarantined("too_deep") == before["too_deep"] + 1
    assert quarantined("integer_range") == before["integer_range"] + 1
    assert broker.is_up
    # A resume across the poison gets the good events only, and counts as recovered.
    replay = await broker.replay(["direct"], EventId.parse(good_ids[0]), 100)
    assert replay.recovered
    assert [e.id for e in replay.events] == good_ids[1:]
    # Publishing and live delivery go on.
    published = await broker.publish([ev("direct", 4)])
    await rec.wait_for_ids(published)


async def test_the_reader_survives_a_failing_listener_and_says_it_was_down(
    redis_server: RedisServer, make_redis_broker: Factory
) -> None:
    from app import metrics

    broker, rec = await make_redis_broker(redis_server)
    await broker.subscribe("a")
    restarts = metrics.BROKER_READER_RESTARTS._value.get()
    failures = {"left": 1}
    deliver = rec.__call__

    def flaky(events: Sequence[Event]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("a bug in the fan-out")
        deliver(events)

    broker._listener = flaky
    lost = await broker.publish([ev("a", 1)])
    await wait_until(lambda: metrics.BROKER_READER_RESTARTS._value.get() == restarts + 1, what="a restart")
    await wait_until(lambda: broker.is_up, what="the reader back up")
    assert False in rec.states  # broker_up said 0 while the reader was restarting
    later = await broker.publish([ev("a", 2)])
    await rec.wait_for_ids(later)
    assert lost[0] not in rec.ids  # the failed batch is not read again: the reader moved past it
