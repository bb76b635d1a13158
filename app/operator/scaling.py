"""The scaling decisions, as pure functions of what was observed: no Kubernetes, no HTTP, no clock.

One round is ``decide``: it takes the replicas now, the connections seen, the policy and what earlier rounds
remembered (``History``), and returns the replicas wanted, why, and the history for the next round. The
simulation (simulation.py), the unit tests and the operator all call that one function.

- ``recommend_replicas``: ceil(connections / connectionsPerReplica), clamped to [min, max], unchanged while
  the load is within ``tolerance`` of the current capacity; pods that could not be scraped never cause a
  scale-down and never hold back a scale-up (the HPA's rule for missing metrics).
- stabilisation: scale up at once; scale down only to the highest recommendation of the last
  ``stabilization_seconds`` (the HPA's scale-down stabilisation window).
- rate: a scale-down removes at most ``value`` pods (``Pods``) or ``value`` percent of the replicas at the
  start of the period (``Percent``, at least one pod) per ``period_seconds``: the HPA's scale-down policy.
- ``deletion_costs``: a pod's cost is its connection count, so a ReplicaSet removes the emptiest pods first.
- ``shed_plan`` / ``trim_to_budget``: which pods should close what share of their clients so the busiest
  move toward the mean, within a churn budget (closed clients reconnect through the Service).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from app.operator import constants


class Reason(StrEnum):
    """Why a round chose its replica count: the bounded ``reason`` label of eventcast_operator_decisions_total."""

    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    RATE_LIMITED = "rate_limited"  # a scale-down, held back (partly or wholly) by the pods-per-period rate
    STABILIZING = "stabilizing"  # the load asks for fewer pods, the stabilisation window holds them
    WITHIN_TOLERANCE = "within_tolerance"  # the load is off target, but within the tolerance band
    STEADY = "steady"  # the load asks for exactly the replicas there are
    LIMITED = (
        "limited"  # the load asks for more than maxReplicas (or fewer than minReplicas): held at the bound
    )
    NO_METRICS = "no_metrics"  # no pod could be read: nothing is decided


class PolicyType(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


@dataclass(frozen=True, slots=True)
class ScaleDownPolicy:
    """The one scale-down policy of every autoscaling mode (docs/kubernetes.md): a window plus a rate."""

    stabilization_seconds: int = constants.DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS
    type: PolicyType = PolicyType.PODS
    value: int = constants.DEFAULT_SCALE_DOWN_VALUE
    period_seconds: int = constants.DEFAULT_SCALE_DOWN_PERIOD_SECONDS

    def removable(self, period_start_replicas: int) -> int:
        """How many pods may go in one period that started at ``period_start_replicas``."""
        if self.type is PolicyType.PODS:
            return self.value
        return max(1, math.floor(period_start_replicas * self.value / 100))


@dataclass(frozen=True, slots=True)
class Bounds:
    connections_per_replica: int
    min_replicas: int
    max_replicas: int
    tolerance: float = constants.DEFAULT_TOLERANCE_PERCENT / 100


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float  # seconds since the epoch
    replicas: int


@dataclass(frozen=True, slots=True)
class ScaleDown:
    at: float
    removed: int  # pods removed by that scale-down


@dataclass(frozen=True, slots=True)
class History:
    """What one round hands to the next (kept in the autoscaler's status, so a new operator goes on)."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_downs: tuple[ScaleDown, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    recommended: int  # before stabilisation and rate
    reason: Reason
    history: History = field(default_factory=History)


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
    tolerance: float = constants.DEFAULT_TOLERANCE_PERCENT / 100,
) -> int:
    """The replica count the load asks for right now (before stabilisation and rate).

    ``unobserved_pods`` are pods that should have been scraped but were not: counted as empty when the
    observed load already asks for more pods, and as full otherwise, so a failing scrape never shrinks the
    Deployment. While the load is within ``tolerance`` of what the current replicas hold at target, the
    current count stands (the HPA's tolerance): small swings around a boundary do not move pods.
    """
    load = max(observed_connections, 0)
    if unobserved_pods and replicas_for(load, connections_per_replica) <= current_replicas:
        load += unobserved_pods * connections_per_replica
    wanted = replicas_for(load, connections_per_replica)
    if current_replicas > 0 and abs(load / (current_replicas * connections_per_replica) - 1) <= tolerance:
        wanted = current_replicas
    return clamp(wanted, min_replicas, max_replicas)


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


def recent_scale_downs(events: Sequence[ScaleDown], now: float, period_seconds: float) -> list[ScaleDown]:
    return [e for e in events if now - period_seconds < e.at <= now]


def scale_down_floor(
    current_replicas: int, events: Sequence[ScaleDown], now: float, policy: ScaleDownPolicy
) -> int:
    """The fewest replicas the rate allows now: the period's start count less what may go in a period."""
    removed = sum(e.removed for e in recent_scale_downs(events, now, policy.period_seconds))
    period_start = current_replicas + removed
    return max(0, period_start - policy.removable(period_start))


def decide(
    *,
    current_replicas: int,
    observed_connections: int | None,
    unobserved_pods: int,
    bounds: Bounds,
    policy: ScaleDownPolicy,
    history: History,
    now: float,
) -> Decision:
    """One round: the replicas wanted, why, and what the next round must remember.

    ``observed_connections`` is None when no pod could be read: then nothing changes (the HPA decides
    nothing on no data either). The first sight of an autoscaler counts the current size as a recommendation,
    as the HPA does, so a fresh operator never scales down before a whole window has passed.
    """
    recommendations = list(history.recommendations) or [Recommendation(now, current_replicas)]
    scale_downs = recent_scale_downs(history.scale_downs, now, policy.period_seconds)
    if observed_connections is None:
        kept = History(tuple(recommendations), tuple(scale_downs))
        return Decision(current_replicas, current_replicas, Reason.NO_METRICS, kept)
    recommended = recommend_replicas(
        observed_connections=observed_connections,
        unobserved_pods=unobserved_pods,
        current_replicas=current_replicas,
        connections_per_replica=bounds.connections_per_replica,
        min_replicas=bounds.min_replicas,
        max_replicas=bounds.max_replicas,
        tolerance=bounds.tolerance,
    )
    recommendations = record_recommendation(recommendations, now, recommended, policy.stabilization_seconds)
    stabilized = stabilized_replicas(current_replicas, recommended, window_maximum(recommendations))
    desired = stabilized
    if stabilized < current_replicas:
        desired = max(stabilized, scale_down_floor(current_replicas, scale_downs, now, policy))
    desired = clamp(desired, bounds.min_replicas, bounds.max_replicas)
    if desired < current_replicas:
        scale_downs.append(ScaleDown(now, current_replicas - desired))
    reason = _reason(current_replicas, observed_connections, bounds, recommended, stabilized, desired)
    return Decision(desired, recommended, reason, History(tuple(recommendations), tuple(scale_downs)))


def _reason(
    current: int, observed: int, bounds: Bounds, recommended: int, stabilized: int, desired: int
) -> Reason:
    if desired > current:
        return Reason.SCALE_UP
    if desired < current:
        return Reason.RATE_LIMITED if desired > stabilized else Reason.SCALE_DOWN
    if stabilized < current:
        return Reason.RATE_LIMITED
    if recommended < current:
        return Reason.STABILIZING
    exact = replicas_for(observed, bounds.connections_per_replica)
    if (exact > current == bounds.max_replicas) or (exact < current == bounds.min_replicas):
        return Reason.LIMITED
    if exact != current:
        return Reason.WITHIN_TOLERANCE
    return Reason.STEADY


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

    @property
    def shed(self) -> int:
        """What the gateway closes for this order: round(connections * fraction)."""
        return round(self.connections * self.fraction)


def imbalance(connections: Mapping[str, int]) -> float:
    """The busiest pod over the mean (1.0 is perfectly even; 0 with no pod or no connection)."""
    if len(connections) < 2:
        return 1.0 if connections else 0.0
    mean = sum(connections.values()) / len(connections)
    return max(connections.values()) / mean if mean else 0.0


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


def trim_to_budget(plan: Sequence[ShedOrder], budget: int) -> list[ShedOrder]:
    """The plan cut to at most ``budget`` closed connections in all, busiest first."""
    kept: list[ShedOrder] = []
    left = budget
    for order in plan:
        if left <= 0:
            break
        if order.shed <= left:
            kept.append(order)
            left -= order.shed
        else:
            kept.append(replace(order, fraction=round(left / order.connections, 4)))
            left -= kept[-1].shed
    return [order for order in kept if order.shed > 0]


@dataclass(frozen=True, slots=True)
class Shed:
    at: float
    connections: int


def churn_left(sheds: Sequence[Shed], now: float, budget: int, period_seconds: float) -> int:
    """What the churn budget still allows: ``budget`` less what was shed in the last ``period_seconds``."""
    return max(0, budget - sum(s.connections for s in sheds if now - period_seconds < s.at <= now))
