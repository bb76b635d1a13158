"""The broker contract: every test here runs unchanged against ``memory://`` and ``redis://``."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from app.broker.base import Broker
from app.protocol import EventId, EventIn, Position, now_ms
from tests.broker.conftest import BrokerFactory, Started, wait_until


def ev(channel: str, n: int, data: Any = None) -> EventIn:
    return EventIn(channel, "test.event", {"n": n} if data is None else data, now_ms())


def pos(event_id: str) -> Position:
    return EventId.parse(event_id).position


async def publish(broker: Broker, channel: str, count: int, start: int = 0) -> list[str]:
    return await broker.publish([ev(channel, start + i) for i in range(count)])


# ------------------------------------------------------------------------------------ publish
async def test_publish_returns_increasing_epoch_prefixed_ids(started: Started) -> None:
    broker = started.broker
    ids = await publish(broker, "a", 5)
    ids += await publish(broker, "b", 3)
    ids += await broker.publish([ev("a", 100)])
    assert len(ids) == 9
    assert len(set(ids)) == 9
    parsed = [EventId.parse(i) for i in ids]
    assert {p.epoch for p in parsed} == {broker.epoch}
    assert broker.epoch
    assert [str(p) for p in parsed] == ids  # ids are canonical ``<epoch>.<ms>-<seq>``
    positions = [p.position for p in parsed]
    assert positions == sorted(positions)
    assert all(a < b for a, b in itertools.pairwise(positions))


async def test_concurrent_publishes_each_get_their_own_ids_in_log_order(started: Started) -> None:
    """Many publishers at once (the Redis engine sends them in groups): each gets exactly its events' ids."""
    broker, rec = started.broker, started.recorder
    await broker.subscribe("c")
    sizes = [1 + (i % 4) for i in range(40)]
    batches = [[ev("c", 1000 * i + j) for j in range(size)] for i, size in enumerate(sizes)]
    results = await asyncio.gather(*(broker.publish(batch) for batch in batches))
    assert [len(ids) for ids in results] == sizes
    every = [event_id for ids in results for event_id in ids]
    assert len(set(every)) == len(every)
    for ids in results:  # one request's events stay together and in order
        positions = [pos(i) for i in ids]
        assert positions == sorted(positions)
    await rec.wait_for_ids(sorted(every, key=pos))
    delivered = {event.id: event.data["n"] for event in rec.events}
    for i, ids in enumerate(results):  # each id names the event its own request sent
        assert [delivered[event_id] for event_id in ids] == [1000 * i + j for j in range(sizes[i])]


# ------------------------------------------------------------------------------------ fan-out
async def test_listener_receives_subscribed_channels_in_publish_order(started: Started) -> None:
    broker, rec = started.broker, started.recorder
    await broker.subscribe("a")
    await broker.subscribe("b")
    published: list[str] = []
    for i in range(30):
        channel = ("a", "b", "c")[i % 3]
        ids = await broker.publish([ev(channel, i)])
        if channel != "c":
            published += ids
    await rec.wait_for_ids(published)
    # Let the last "c" event be dispatched too (it would arrive after the last a/b one).
    await wait_until(lambda: broker.position == pos(published[-1]) or broker.position > pos(published[-1]))
    assert rec.ids == published
    assert {e.channel for e in rec.events} == {"a", "b"}
    assert [e.data["n"] for e in rec.events] == [i for i in range(30) if i % 3 != 2]


async def test_unsubscribed_channels_are_never_delivered(started: Started) -> None:
    broker, rec = started.broker, started.recorder
    await broker.subscribe("marker")
    await publish(broker, "other", 10)
    marker = await publish(broker, "marker", 1)
    await rec.wait_for_ids(marker)
    assert rec.ids == marker


async def test_unsubscribe_stops_delivery(started: Started) -> None:
    broker, rec = started.broker, started.recorder
    await broker.subscribe("a")
    await broker.subscribe("marker")
    first = await publish(broker, "a", 3)
    await rec.wait_for_ids(first)
    await broker.unsubscribe("a")
    await publish(broker, "a", 3, start=3)
    marker = await publish(broker, "marker", 1)
    await rec.wait_for_ids(marker)
    assert rec.ids == first + marker
    # Subscribing again resumes delivery of new events only.
    await broker.subscribe("a")
    again = await publish(broker, "a", 2, start=6)
    await rec.wait_for_ids(again)
    assert rec.ids == first + marker + again


async def test_position_advances_to_last_dispatched_event(started: Started) -> None:
    broker, rec = started.broker, started.recorder
    await broker.subscribe("a")
    ids = await publish(broker, "a", 5)
    await rec.wait_for_ids(ids)
    await wait_until(lambda: broker.position == pos(ids[-1]), what="position at last event")
    # Events of channels nobody subscribed to still move the position on.
    other = await publish(broker, "nobody", 3)
    await wait_until(lambda: broker.position == pos(other[-1]), what="position past unsubscribed events")
    assert broker.position > pos(ids[-1])


async def test_batches_keep_order(started: Started) -> None:
    broker, rec = started.broker, started.recorder
    await broker.subscribe("a")
    await broker.subscribe("b")
    ids: list[str] = []
    for batch in range(5):
        ids += await broker.publish([ev("ab"[i % 2], batch * 100 + i) for i in range(40)])
    await rec.wait_for_ids(ids)
    assert rec.ids == ids
    assert all(rec.batches), "no empty batches"
    positions = [e.position for e in rec.events]
    assert all(a < b for a, b in itertools.pairwise(positions))
    for channel in "ab":
        ns = [e.data["n"] for e in rec.events if e.channel == channel]
        assert ns == sorted(ns)


async def test_data_round_trips(started: Started) -> None:
    broker, rec = started.broker, started.recorder
    await broker.subscribe("data")
    payloads: list[Any] = [
        {"nested": {"list": [1, 2.5, None, True, False, {"deep": ["x"]}], "empty": {}}, "n": -7},
        "héllo wörld ✓ 日本語 🚀",
        {"emoji": "🎉", "quote": 'a "quoted" \\ backslash\nnewline', "tab": "\t"},
        [1, "two", {"three": 3}],
        42,
        3.25,
        True,
        None,
        "",
        {"big": 2**53, "neg": -(2**31)},
    ]
    ids = await broker.publish([EventIn("data", "t.data", p, now_ms()) for p in payloads])
    await rec.wait_for_ids(ids)
    assert [e.data for e in rec.events] == payloads
    for event in rec.events:
        assert event.channel == "data"
        assert event.type == "t.data"
        assert event.ts > 0
    replay = await broker.replay(["data"], EventId.parse(ids[0]), 100)
    assert replay.recovered
    assert [e.data for e in replay.events] == payloads[1:]


async def test_ts_is_carried(started: Started) -> None:
    broker, rec = started.broker, started.recorder
    await broker.subscribe("a")
    ids = await broker.publish([EventIn("a", "t", 1, 1234567.5)])
    await rec.wait_for_ids(ids)
    assert rec.events[0].ts == 1234567.5


# ------------------------------------------------------------------------------------ replay
async def test_replay_returns_exactly_later_events_of_requested_channels(started: Started) -> None:
    broker = started.broker
    before = await broker.publish([ev(ch, i) for i, ch in enumerate("abcabc")])
    since = before[-1]
    later = await broker.publish([ev(ch, 10 + i) for i, ch in enumerate("abcdabcd")])
    replay = await broker.replay(["a", "b"], EventId.parse(since), 1000)
    assert replay.recovered is True
    expected = [i for i, e in zip(later, "abcdabcd", strict=True) if e in "ab"]
    assert [e.id for e in replay.events] == expected
    assert [e.channel for e in replay.events] == ["a", "b", "a", "b"]
    assert [e.data["n"] for e in replay.events] == [10, 11, 14, 15]
    # One id resumes any set of channels, including one absent from that id's own channel.
    only_d = await broker.replay(["d"], EventId.parse(since), 1000)
    assert only_d.recovered and [e.channel for e in only_d.events] == ["d", "d"]


async def test_replay_from_an_unsubscribed_channel_id_works(started: Started) -> None:
    broker = started.broker
    ids = await broker.publish([ev("x", 0), ev("a", 1), ev("y", 2), ev("a", 3)])
    replay = await broker.replay(["a"], EventId.parse(ids[0]), 10)
    assert replay.recovered
    assert [e.id for e in replay.events] == [ids[1], ids[3]]


async def test_replay_ids_match_live_ids(started: Started) -> None:
    broker, rec = started.broker, started.recorder
    await broker.subscribe("a")
    first = await publish(broker, "a", 1)
    ids = await publish(broker, "a", 5, start=1)
    await rec.wait_for_ids(ids)
    replay = await broker.replay(["a"], EventId.parse(first[0]), 10)
    assert replay.recovered
    assert [e.id for e in replay.events] == ids == rec.ids[1:]
    assert [e.as_dict() for e in replay.events] == [e.as_dict() for e in rec.events[1:]]


async def test_replay_of_latest_id_is_recovered_and_empty(started: Started) -> None:
    broker = started.broker
    ids = await publish(broker, "a", 3)
    replay = await broker.replay(["a"], EventId.parse(ids[-1]), 10)
    assert replay.recovered is True
    assert replay.events == []


async def test_replay_from_another_epoch_is_not_recovered(started: Started) -> None:
    broker = started.broker
    ids = await publish(broker, "a", 3)
    real = EventId.parse(ids[0])
    other = "0" * len(broker.epoch) if broker.epoch != "0" * len(broker.epoch) else "1" * len(broker.epoch)
    replay = await broker.replay(["a"], EventId(other, real.position), 1000)
    assert replay.recovered is False
    assert replay.reason == "epoch_changed"
    assert replay.events == []


async def test_replay_ahead_of_log_is_not_recovered(started: Started) -> None:
    broker = started.broker
    ids = await publish(broker, "a", 3)
    last = pos(ids[-1])
    ahead = EventId(broker.epoch, Position(last.ms + 60_000, 0))
    replay = await broker.replay(["a"], ahead, 1000)
    assert replay.recovered is False
    assert replay.reason  # never silently false
    assert replay.events == []
    just_ahead = EventId(broker.epoch, Position(last.ms, last.seq + 1))
    assert (await broker.replay(["a"], just_ahead, 1000)).recovered is False


async def test_replay_with_limit_smaller_than_gap_is_too_many(started: Started) -> None:
    broker = started.broker
    ids = await publish(broker, "a", 20)
    replay = await broker.replay(["a"], EventId.parse(ids[0]), 5)
    assert replay.recovered is False
    assert replay.reason == "too_many"
    # Exactly at the limit is fine; only events of the requested channels count.
    await publish(broker, "b", 20)
    fits = await broker.replay(["a"], EventId.parse(ids[-6]), 5)
    assert fits.recovered is True
    assert [e.id for e in fits.events] == ids[-5:]


async def test_replay_after_trim_by_count_is_not_recovered(make_broker: BrokerFactory) -> None:
    s = await make_broker(max_events=10)
    broker = s.broker
    ids: list[str] = []
    for chunk in range(6):  # Redis trims ``MAXLEN ~`` by whole nodes (100 entries): publish plenty
        ids += await publish(broker, "a", 100, start=chunk * 100)
    replay = await broker.replay(["a"], EventId.parse(ids[0]), 10_000)
    assert replay.recovered is False
    assert replay.reason == "trimmed"
    assert replay.events == []
    # The recent past is still resumable.
    recent = await broker.replay(["a"], EventId.parse(ids[-4]), 10_000)
    assert recent.recovered is True
    assert [e.id for e in recent.events] == ids[-3:]
