"""The scaling decisions, as pure functions of what was observed: no Kubernetes, no HTTP, no clock.

- ``recommend_replicas``: ceil(connections / connectionsPerReplica), clamped to [min, max]; pods that could not
  be scraped never cause a scale-down and never hold back a scale-up (the HPA's rule for missing metrics).
- ``record_recommendation`` / ``stabilized_replicas``: scale up at once, scale down only to the highest
  recommendation of the last ``scaleDownStabilizationSeconds`` (the HPA's scale-down stabilisation).
- ``deletion_costs``: a pod's cost is its connection count, so a ReplicaSet removes the emptiest pods first.
- ``shed_plan``: after a scale-up, which pods should close what share of their clients so that the busiest
  move toward the mean (closed clients reconnect through the Service and land anywhere, new pods included).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.operator import constants


def clamp(replicas: int, min_replicas: int, max_replicas: int) -> int:
    return max(min_replicas, min(max_replicas, replicas))


def replicas_for(connections: int, connections_per_replica: int) -> int:
    """How many pods hold ``connections`` at ``connections_per_replica`` each (0 for none)."""
    return math.ceil(max(connections, 0) / connections_per_replica)


def recommend_replicas(
    *,
    observed_connections: int,
    unobserved_pods: int,
    current_replicas: int,
    connections_per_replica: int,
    min_replicas: int,
    max_replicas: int,
) -> int:
    """The replica count the load asks for right now (before stabilisation).

    ``unobserved_pods`` are pods that should have been scraped but were not: counted as empty when the
    observed load already asks for more pods, and as full otherwise, so a failing scrape never shrinks the
    Deployment.
    """
    wanted = replicas_for(observed_connections, connections_per_replica)
    if unobserved_pods and wanted <= current_replicas:
        wanted = replicas_for(
            observed_connections + unobserved_pods * connections_per_replica, connections_per_replica
        )
    return clamp(wanted, min_replicas, max_replicas)


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float  # seconds since the epoch
    replicas: int


def record_recommendation(
    history: Sequence[Recommendation], now: float, replicas: int, window_seconds: float
) -> list[Recommendation]:
    """Add ``replicas`` at ``now`` and keep only what can still be the window's maximum.

    An entry older than the window is gone; an entry not above a newer one can never be the maximum again
    (the newer one outlives it). What is left is strictly decreasing, so its length is bounded by the
    number of distinct replica counts, and its first entry is the window's highest recommendation.
    """
    kept = [r for r in history if r.at > now - window_seconds and r.at <= now]
    while kept and kept[-1].replicas <= replicas:
        kept.pop()
    kept.append(Recommendation(now, replicas))
    return kept


def window_maximum(history: Sequence[Recommendation]) -> int:
    return max(r.replicas for r in history)


def stabilized_replicas(current_replicas: int, recommended: int, window_max: int) -> int:
    """Scale up to ``recommended`` at once; scale down only as far as the window's highest recommendation."""
    if recommended > current_replicas:
        return recommended
    return min(current_replicas, max(window_max, recommended))


def deletion_costs(connections: Mapping[str, int]) -> dict[str, int]:
    """Pod name -> ``pod-deletion-cost``: its connections, so the emptiest pod is removed first."""
    return {pod: min(count, constants.DELETION_COST_MAX) for pod, count in connections.items()}


def deletion_cost_tolerance(connections_per_replica: int) -> int:
    """Rewrite a pod's cost only when it moved by this much: every rewrite is a pod update on the API server."""
    return max(1, connections_per_replica // 20)


def cost_updates(
    wanted: Mapping[str, int], current: Mapping[str, str | None], tolerance: int
) -> dict[str, int]:
    """The pods whose annotation is missing, unreadable, or off by at least ``tolerance``."""
    updates: dict[str, int] = {}
    for pod, cost in wanted.items():
        written = current.get(pod)
        try:
            old = int(written) if written is not None else None
        except ValueError:
            old = None
        if old is None or abs(old - cost) >= tolerance:
            updates[pod] = cost
    return updates


@dataclass(frozen=True, slots=True)
class ShedOrder:
    pod: str
    fraction: float  # for POST /admin/shed, in (0, 1]
    connections: int  # what the pod held when the plan was made


def shed_plan(connections: Mapping[str, int], tolerance: float = constants.SHED_TOLERANCE) -> list[ShedOrder]:
    """Ask every pod above the mean (by more than ``tolerance`` of it) to shed its excess over the mean.

    Busiest first. Empty when there is nothing to even out (fewer than two pods, or no connection).
    """
    if len(connections) < 2:
        return []
    mean = sum(connections.values()) / len(connections)
    orders = []
    for pod, count in sorted(connections.items(), key=lambda item: (-item[1], item[0])):
        excess = count - mean
        if excess >= 1 and count > mean * (1 + tolerance):
            orders.append(ShedOrder(pod, round(excess / count, 4), count))
    return orders
