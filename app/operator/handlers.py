"""One reconciliation of a ConnectionAutoscaler: observe the pods, scale, mark deletion costs, rebalance.

``reconcile`` is what the autoscaling loop (loop.py) calls for each autoscaler on every round. It reads the
target Deployment and its ready pods, scrapes each pod's /metrics, and returns the status to write with what
it did; the decisions are in scaling.py. Every step is idempotent: running it twice in a row changes nothing
the second time (a pod's cost is rewritten only when it moved, the Deployment is patched only when the count
differs, a shed is counted against the churn budget and the imbalance window restarts after it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.operator import constants, pods, scaling, scrape
from app.operator.constants import ConditionType, Phase
from app.operator.kube import KubeApi, KubeError, NotFound, deployment_path, pod_path, pods_path
from app.operator.scaling import Reason
from app.operator.spec import AutoscalerSpec, InvalidSpec, parse_spec
from app.operator.status import Condition, Memory, memory_fields, merge_conditions, pods_summary, timestamp

Announce = Callable[[str, str], None]  # (reason, message) -> a Kubernetes Event on the autoscaler
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True, slots=True)
class Target:
    """The autoscaler being reconciled: where it lives and what it says."""

    namespace: str
    name: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]


@dataclass(slots=True)
class Outcome:
    """What one round did: the status to write, and the facts the operator's own metrics count."""

    status: dict[str, Any]
    reason: Reason | None = None  # None when the spec or the target is unusable
    desired: int | None = None
    current: int | None = None
    ready_pods: int = 0
    scrape_failures: int = 0
    sheds: list[dict[str, Any]] = field(default_factory=list)  # one row per POST /admin/shed
    bounds: tuple[int, int] | None = None  # (minReplicas, maxReplicas)


def _status(
    target: Target, phase: Phase, message: str, conditions: list[Condition], now: float, **fields: Any
) -> dict[str, Any]:
    return {
        "phase": phase.value,
        "message": message,
        "conditions": merge_conditions(target.status.get("conditions") or [], conditions, now),
        "lastReconcileTime": timestamp(now),
        **fields,
    }


async def reconcile(
    kube: KubeApi,
    http: httpx.AsyncClient,
    target: Target,
    memory: Memory,
    now: float,
    announce: Announce,
    logger: Logger,
) -> Outcome:
    """Do one round and return what to write (``memory`` is updated in place for the next round)."""
    try:
        spec = parse_spec(target.spec)
    except InvalidSpec as exc:
        return Outcome(_status(target, Phase.INVALID, str(exc), [], now))
    try:
        deployment = await kube.get(deployment_path(target.namespace, spec.target))
    except NotFound:
        message = f"Deployment {target.namespace}/{spec.target} not found"
        found = Condition(ConditionType.TARGET_FOUND, False, "DeploymentNotFound", message)
        return Outcome(
            _status(target, Phase.TARGET_NOT_FOUND, message, [found], now, **memory_fields(memory))
        )
    selector = (deployment.get("spec") or {}).get("selector") or {}
    current = int((deployment.get("spec") or {}).get("replicas", 1))
    listed = await kube.list(pods_path(target.namespace), label_selector=pods.selector_string(selector))
    members = [
        p
        for p in listed
        if pods.selector_matches(selector, (p.get("metadata") or {}).get("labels") or {})
        and not pods.is_terminating(p)
    ]
    ready = {pods.pod_name(p): p for p in members if pods.is_ready(p)}
    scrapes = await scrape.scrape_pods(
        http, {name: scrape.metrics_url(p["status"]["podIP"], spec.metrics_port) for name, p in ready.items()}
    )
    counts = {name: s.connections for name, s in scrapes.items() if s.connections is not None}
    unreadable = sorted(name for name, s in scrapes.items() if s.connections is None)
    total = sum(counts.values())
    conditions = [
        Condition(ConditionType.TARGET_FOUND, True, "DeploymentFound", f"scaling Deployment {spec.target}"),
        _metrics_condition(len(ready), unreadable, scrapes),
    ]

    # 1. How many replicas (scaling.decide: tolerance, stabilisation window, scale-down rate).
    decision = scaling.decide(
        current_replicas=current,
        observed_connections=total if counts else None,
        unobserved_pods=len(unreadable),
        bounds=spec.bounds,
        policy=spec.scale_down,
        history=memory.history,
        now=now,
    )
    memory.history = decision.history
    desired = decision.desired
    conditions.append(
        _limit_condition(scaling.replicas_for(total, spec.connections_per_replica), spec, counts)
    )

    phase = Phase.STABLE
    if desired != current:
        await kube.merge_patch(
            deployment_path(target.namespace, spec.target), {"spec": {"replicas": desired}}
        )
        memory.last_scale_time = timestamp(now)
        memory.imbalanced_since = None  # pods come and go: the imbalance window starts again once settled
        phase = Phase.SCALING_UP if desired > current else Phase.SCALING_DOWN
        why = (
            f"scaled {'up' if desired > current else 'down'} from {current} to {desired} replicas: {total} "
            f"connections on {len(counts)} pods, {spec.connections_per_replica} per replica ({decision.reason})"
        )
        logger.info(why)
        announce("ScaledUp" if desired > current else "ScaledDown", why)

    # 2. Deletion costs, so a scale-down (ours or anyone's) removes the emptiest pods first.
    await _write_deletion_costs(kube, target.namespace, ready, counts, spec)

    # 3. Continuous rebalancing, once the Deployment is settled (after scale-ups and rollouts alike).
    settled = desired == current and len(counts) == current == len(members)
    sheds, rebalance_note = await _rebalance(
        kube, http, target, spec, memory, ready, counts, settled, now, announce, logger
    )
    if phase is Phase.STABLE and sheds:
        phase = Phase.REBALANCING
    elif phase is Phase.STABLE and (unreadable or not counts):
        phase = Phase.DEGRADED

    message = (
        f"{total} connections on {len(counts)} of {len(ready)} ready pods; "
        f"{decision.recommended} replicas recommended, {desired} desired, {current} before this round "
        f"({decision.reason})"
    )
    if unreadable:
        message += f"; unreadable: {', '.join(unreadable[:5])}{' ...' if len(unreadable) > 5 else ''}"
    if rebalance_note:
        message += f"; {rebalance_note}"
    status = _status(
        target,
        phase,
        message,
        conditions,
        now,
        observedConnections=total,
        readyPods=len(ready),
        pods=pods_summary(scrapes),
        currentReplicas=current,
        desiredReplicas=desired,
        lastDecision=decision.reason.value,
        imbalancePercent=round(scaling.imbalance(counts) * 100),
        **memory_fields(memory),
    )
    return Outcome(
        status,
        decision.reason,
        desired,
        current,
        len(ready),
        len(unreadable),
        sheds,
        (spec.min_replicas, spec.max_replicas),
    )


def _metrics_condition(ready: int, unreadable: list[str], scrapes: Mapping[str, scrape.Scrape]) -> Condition:
    if not ready:
        return Condition(ConditionType.METRICS_AVAILABLE, False, "NoReadyPods", "no ready pod to scrape")
    if unreadable:
        first = scrapes[unreadable[0]].error or "unreadable"
        return Condition(
            ConditionType.METRICS_AVAILABLE,
            False,
            "ScrapeFailed",
            f"{len(unreadable)} of {ready} ready pods could not be scraped (first: {first})",
        )
    return Condition(ConditionType.METRICS_AVAILABLE, True, "ScrapeSucceeded", f"scraped {ready} pods")


def _limit_condition(unclamped: int, spec: AutoscalerSpec, counts: Mapping[str, int]) -> Condition:
    if counts and unclamped > spec.max_replicas:
        return Condition(
            ConditionType.SCALING_LIMITED,
            True,
            "TooManyReplicas",
            f"the load asks for {unclamped} replicas; maxReplicas is {spec.max_replicas}",
        )
    if counts and unclamped < spec.min_replicas:
        return Condition(
            ConditionType.SCALING_LIMITED,
            True,
            "TooFewReplicas",
            f"the load asks for {unclamped} replicas; minReplicas is {spec.min_replicas}",
        )
    return Condition(ConditionType.SCALING_LIMITED, False, "DesiredWithinRange", "within [min, max]")


async def _write_deletion_costs(
    kube: KubeApi,
    namespace: str,
    ready: Mapping[str, Mapping[str, Any]],
    counts: Mapping[str, int],
    spec: AutoscalerSpec,
) -> None:
    written = {name: pods.annotation(ready[name], constants.DELETION_COST_ANNOTATION) for name in counts}
    updates = scaling.cost_updates(
        scaling.deletion_costs(counts), written, scaling.deletion_cost_tolerance(spec.connections_per_replica)
    )
    for name, cost in updates.items():
        try:
            await kube.merge_patch(
                pod_path(namespace, name),
                {"metadata": {"annotations": {constants.DELETION_COST_ANNOTATION: str(cost)}}},
            )
        except NotFound:
            pass  # the pod went away since the listing: nothing to mark


async def _rebalance(
    kube: KubeApi,
    http: httpx.AsyncClient,
    target: Target,
    spec: AutoscalerSpec,
    memory: Memory,
    ready: Mapping[str, Mapping[str, Any]],
    counts: Mapping[str, int],
    settled: bool,
    now: float,
    announce: Announce,
    logger: Logger,
) -> tuple[list[dict[str, Any]], str]:
    """Shed the busiest pods toward the mean when the imbalance outlasted the window, within the churn budget.

    Returns one row per shed request and a note for the status message.
    """
    policy = spec.rebalance
    memory.sheds = [s for s in memory.sheds if now - policy.churn_period_seconds < s.at <= now]
    ratio = scaling.imbalance(counts)
    if not policy.enabled or not settled or ratio <= policy.imbalance:
        memory.imbalanced_since = None
        waiting = policy.enabled and not settled and ratio > policy.imbalance
        return [], "rebalance waits for the Deployment to settle" if waiting else ""
    if memory.imbalanced_since is None:
        memory.imbalanced_since = now
    if now - memory.imbalanced_since < policy.window_seconds:
        return [], f"busiest pod at {ratio:.0%} of the mean since {timestamp(memory.imbalanced_since)}"
    budget = scaling.churn_left(memory.sheds, now, policy.churn_budget, policy.churn_period_seconds)
    plan = scaling.trim_to_budget(scaling.shed_plan(counts), budget)
    if not plan:
        return (
            [],
            f"busiest pod at {ratio:.0%} of the mean; churn budget spent ({policy.churn_budget} per {policy.churn_period_seconds}s)",
        )
    token, token_note = "", ""
    if spec.admin_token_secret is not None:
        ref = spec.admin_token_secret
        try:
            token = await kube.secret_value(target.namespace, ref.name, ref.key)
        except NotFound:
            # As the gateway's own optional secretKeyRef: no Secret, no token on either side.
            token_note = f" (Secret {ref.name}/{ref.key} not found: sent without a token)"
        except KubeError as exc:
            return [], f"rebalance waits: cannot read the admin token from Secret {ref.name}: {exc}"
    headers = {"authorization": f"Bearer {token}"} if token else {}
    results: list[dict[str, Any]] = []
    for order in plan:
        pod_ip = ready[order.pod]["status"]["podIP"]
        url = scrape.admin_url(pod_ip, spec.metrics_port, constants.SHED_PATH)
        row: dict[str, Any] = {"pod": order.pod, "connections": order.connections, "fraction": order.fraction}
        try:
            response = await http.post(
                url,
                json={"fraction": order.fraction, "seconds": spec.shed_spread_seconds},
                headers=headers,
                timeout=constants.SHED_TIMEOUT_SECONDS,
            )
            if response.status_code == 202:
                row["shed"] = int(response.json().get("shed", 0))
            else:
                row["error"] = f"HTTP {response.status_code}: {response.text[:200]}"
        except (httpx.HTTPError, ValueError) as exc:
            row["error"] = f"{type(exc).__name__} {exc}".strip()
        results.append(row)
    shed = sum(r.get("shed", 0) for r in results)
    # What was asked counts against the budget even when a call failed: it may have closed clients anyway.
    memory.sheds.append(scaling.Shed(now, max(shed, sum(order.shed for order in plan))))
    memory.imbalanced_since = None  # the shed clients reconnect: judge the balance again after a new window
    mean = math.floor(sum(counts.values()) / len(counts))
    memory.last_shed = {"time": timestamp(now), "pods": results, "shed": shed, "meanConnections": mean}
    note = f"asked {len(plan)} pods to shed {shed} connections toward {mean} per pod (busiest at {ratio:.0%} of the mean)"
    logger.info(note)
    announce("Rebalanced", note)
    failed = [r["pod"] for r in results if "error" in r]
    return results, note + token_note + (f" (failed: {', '.join(failed)})" if failed else "")
