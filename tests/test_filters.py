"""Server-side filters on /ws/events/filtered: type globs, where equality, and replacing the filter live."""

from __future__ import annotations

import json

from tests.clients import Subscriber, publish
from tests.servers import Gateway

EVENTS = [
    {"channel": "g", "type": "node.created", "data": {"repo": "a", "n": 1}},
    {"channel": "g", "type": "edge.added", "data": {"repo": "b", "n": 2}},
    {"channel": "g", "type": "edge.removed", "data": {"repo": "a", "n": 3}},
    {"channel": "g", "type": "node.deleted", "data": {"repo": "a", "n": "3"}},
    {"channel": "g", "type": "edge.added", "data": [1, 2]},
]


async def test_type_globs_and_where(gateway: Gateway) -> None:
    edges = await Subscriber.open(f"{gateway.ws}/ws/events/filtered?channels=g&types=edge.*")
    repo_a = await Subscriber.open(f"{gateway.ws}/ws/events/filtered?channels=g&where=repo=a")
    both = await Subscriber.open(
        f"{gateway.ws}/ws/events/filtered?channels=g&types=node.*,edge.removed&where=repo=a&where=n=3"
    )
    everything = await Subscriber.open(f"{gateway.ws}/ws/events/filtered?channels=g")
    await publish(gateway.http, EVENTS)
    await publish(gateway.http, {"channel": "g", "type": "end", "data": {"repo": "a", "n": 3}})
    assert [e["type"] for e in await edges.collect(3)] == ["edge.added", "edge.removed", "edge.added"]
    assert [e["data"]["n"] for e in await repo_a.collect(4)] == [1, 3, "3", 3]
    assert [e["type"] for e in await both.collect(1)] == ["edge.removed"]  # n=3 is the number, not "3"
    assert len(await everything.collect(6)) == 6
    for s in (edges, repo_a, both, everything):
        await s.close()


async def test_filter_can_be_replaced_at_any_time(gateway: Gateway) -> None:
    sub = await Subscriber.open(f"{gateway.ws}/ws/events/filtered?channels=g&types=node.*")
    await publish(gateway.http, EVENTS[:2])
    assert [e["type"] for e in await sub.collect(1)] == ["node.created"]
    await sub.ws.send(json.dumps({"op": "filter", "types": ["edge.*"], "where": {"repo": "b"}}))
    assert json.loads(await sub.ws.recv()) == {"type": "eventcast.filter", "ok": True}
    await publish(gateway.http, EVENTS)
    assert [e["data"]["repo"] for e in await sub.collect(2)][1:] == ["b"]
    await sub.ws.send(json.dumps({"op": "filter"}))  # an empty filter lets everything through
    assert json.loads(await sub.ws.recv())["ok"] is True
    await publish(gateway.http, EVENTS[:1])
    assert (await sub.collect(3))[-1]["type"] == "node.created"
    await sub.close()


async def test_filters_apply_to_replayed_history(gateway: Gateway) -> None:
    first = await Subscriber.open(f"{gateway.ws}/ws/events/filtered?channels=g")
    position = first.welcome["position"]
    await first.close()
    await publish(gateway.http, EVENTS)
    back = await Subscriber.open(
        f"{gateway.ws}/ws/events/filtered?channels=g&types=edge.added&since={position}"
    )
    assert back.welcome["recovered"] is True
    assert [e["data"] for e in await back.collect(2)] == [{"repo": "b", "n": 2}, [1, 2]]
    await back.close()
