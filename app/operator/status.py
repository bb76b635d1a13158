"""``status`` of a ConnectionAutoscaler: what is kept between reconciliations, and the dict that is written.

Pure: times come in as epoch seconds, dicts go out. The status also carries the operator's memory (the
recommendations of the stabilisation window, the recent scale-downs the rate counts, and the rebalancing
window and churn), so a restarted operator, or the standby replica taking over, goes on where the last one
stopped.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.operator import constants
from app.operator.scaling import History, Recommendation, ScaleDown, Shed
from app.operator.scrape import Scrape


def timestamp(epoch: float) -> str:
    """RFC 3339 in UTC, to the second, as Kubernetes writes times."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def precise_timestamp(epoch: float) -> str:
    """RFC 3339 with microseconds: stabilisation windows in tests are shorter than a second."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(slots=True)
class Memory:
    """What one reconciliation hands to the next."""

    history: History = field(default_factory=History)
    imbalanced_since: float | None = None  # the busiest pod has been above the threshold since then
    sheds: list[Shed] = field(default_factory=list)  # within the churn period, for the budget
    last_scale_time: str | None = None
    last_shed: dict[str, Any] | None = None


def _times(rows: Any, value: str, make: Any) -> list[Any]:
    return [make(parse_timestamp(row["time"]), int(row[value])) for row in rows or []]


def memory_from_status(status: Mapping[str, Any]) -> Memory:
    """Seed the memory of a (re)started operator from what the last one wrote; unreadable parts are dropped."""
    memory = Memory(last_scale_time=status.get("lastScaleTime"), last_shed=status.get("lastShed"))
    try:
        memory.history = History(
            tuple(_times(status.get("recommendations"), "replicas", Recommendation)),
            tuple(_times(status.get("scaleDowns"), "removed", ScaleDown)),
        )
    except (KeyError, TypeError, ValueError):
        memory.history = History()
    rebalance = status.get("rebalance")
    if isinstance(rebalance, Mapping):
        try:
            since = rebalance.get("imbalancedSince")
            memory.imbalanced_since = parse_timestamp(since) if since else None
            memory.sheds = _times(rebalance.get("sheds"), "connections", Shed)
        except (KeyError, TypeError, ValueError):
            memory.imbalanced_since, memory.sheds = None, []
    return memory


@dataclass(frozen=True, slots=True)
class Condition:
    type: constants.ConditionType
    ok: bool
    reason: str
    message: str


def merge_conditions(
    previous: Sequence[Mapping[str, Any]], conditions: Sequence[Condition], now: float
) -> list[dict[str, Any]]:
    """Conditions as Kubernetes writes them: ``lastTransitionTime`` moves only when ``status`` changes."""
    before = {c.get("type"): c for c in previous}
    merged = []
    for condition in conditions:
        status = "True" if condition.ok else "False"
        old = before.get(condition.type.value)
        changed = old is None or old.get("status") != status or not old.get("lastTransitionTime")
        merged.append(
            {
                "type": condition.type.value,
                "status": status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": timestamp(now) if changed else old["lastTransitionTime"],  # type: ignore[index]
            }
        )
    return merged


def pods_summary(
    scrapes: Mapping[str, Scrape], limit: int = constants.STATUS_PODS_LIMIT
) -> list[dict[str, Any]]:
    """Busiest first, then the pods that could not be read, at most ``limit`` entries."""
    read = sorted(
        (s for s in scrapes.values() if s.connections is not None),
        key=lambda s: (-(s.connections or 0), s.pod),
    )
    failed = sorted((s for s in scrapes.values() if s.connections is None), key=lambda s: s.pod)
    rows: list[dict[str, Any]] = [{"name": s.pod, "connections": s.connections} for s in read]
    rows += [{"name": s.pod, "error": s.error or "unreadable"} for s in failed]
    return rows[:limit]


def memory_fields(memory: Memory) -> dict[str, Any]:
    """The memory as status fields; None clears a field under a JSON merge patch."""
    history = memory.history
    return {
        "recommendations": [
            {"time": precise_timestamp(r.at), "replicas": r.replicas} for r in history.recommendations
        ],
        "scaleDowns": [{"time": precise_timestamp(e.at), "removed": e.removed} for e in history.scale_downs],
        "rebalance": {
            "imbalancedSince": None
            if memory.imbalanced_since is None
            else precise_timestamp(memory.imbalanced_since),
            "sheds": [{"time": precise_timestamp(s.at), "connections": s.connections} for s in memory.sheds],
        },
        "lastScaleTime": memory.last_scale_time,
        "lastShed": memory.last_shed,
    }
