"""One reconciliation of a ConnectionAutoscaler: observe the pods, scale, mark deletion costs, rebalance.

``reconcile`` is what the kopf timer calls (see main.py). It reads the target Deployment and its ready pods,
scrapes each pod's /metrics, and returns the status to write; the decisions are in scaling.py. Every step is
idempotent: running it twice in a row changes nothing the second time (a pod's cost is rewritten only when
it moved, the Deployment is patched only when the count differs, a rebalance is sent once).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from app.operator import constants, metrics, pods, scaling
from app.operator.constants import ConditionType, Phase
from app.operator.kube import KubeApi, KubeError, NotFound, deployment_path, pod_path, pods_path
from app.operator.spec import AutoscalerSpec, InvalidSpec, parse_spec
from app.operator.status import (
    Condition,
    Memory,
    PendingRebalance,
    memory_fields,
    merge_conditions,
    pods_summary,
    timestamp,
)

Announce = Callable[[str, str], None]  # (reason, message) -> a Kubernetes Event on the autoscaler


@dataclass(frozen=True, slots=True)
class Target:
    """The autoscaler being reconciled: where it lives and what it says."""

    namespace: str
    name: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]


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
    target: Target,
    memory: Memory,
    now: float,
    announce: Announce,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> dict[str, Any]:
    """Do one round and return the new ``status`` (``memory`` is updated in place for the next round)."""
    try:
        spec = parse_spec(target.spec)
    except InvalidSpec as exc:
        return _status(target, Phase.INVALID, str(exc), [], now)
    try:
        deployment = await kube.get(deployment_path(target.namespace, spec.target))
    except NotFound:
        message = f"Deployment {target.namespace}/{spec.target} not found"
        found = Condition(ConditionType.TARGET_FOUND, False, "DeploymentNotFound", message)
        return _status(target, Phase.TARGET_NOT_FOUND, message, [found], now, **memory_fields(memory))
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
    async with httpx.AsyncClient(trust_env=False) as http:
        scrapes = await metrics.scrape_pods(
            http,
            {name: metrics.metrics_url(p["status"]["podIP"], spec.metrics_port) for name, p in ready.items()},
        )
        counts = {name: s.connections for name, s in scrapes.items() if s.connections is not None}
        unreadable = sorted(name for name, s in scrapes.items() if s.connections is None)
        total = sum(counts.values())
        conditions = [
            Condition(
                ConditionType.TARGET_FOUND, True, "DeploymentFound", f"scaling Deployment {spec.target}"
            ),
            _metrics_condition(len(ready), unreadable, scrapes),
        ]

        # 1. How many replicas: nothing is decided on no data at all (e.g. every pod still starting).
        if counts:
            if (
                not memory.recommendations
            ):  # first sight: count the current size as a recommendation, as the HPA does
                memory.recommendations = [scaling.Recommendation(now, current)]
            recommended = scaling.recommend_replicas(
                observed_connections=total,
                unobserved_pods=len(unreadable),
                current_replicas=current,
                connections_per_replica=spec.connections_per_replica,
                min_replicas=spec.min_replicas,
                max_replicas=spec.max_replicas,
            )
            memory.recommendations = scaling.record_recommendation(
                memory.recommendations, now, recommended, spec.scale_down_stabilization_seconds
            )
            desired = scaling.stabilized_replicas(
                current, recommended, scaling.window_maximum(memory.recommendations)
            )
        else:
            recommended = desired = current
        desired = scaling.clamp(desired, spec.min_replicas, spec.max_replicas)
        unclamped = scaling.replicas_for(total, spec.connections_per_replica)
        conditions.append(_limit_condition(unclamped, spec, bool(counts)))

        phase = Phase.STABLE
        if desired != current:
            await kube.merge_patch(
                deployment_path(target.namespace, spec.target), {"spec": {"replicas": desired}}
            )
            memory.last_scale_time = timestamp(now)
            direction = "up" if desired > current else "down"
            phase = Phase.SCALING_UP if desired > current else Phase.SCALING_DOWN
            # Shed toward new pods once they are ready; a scale-down drops any rebalance still waiting.
            memory.pending_rebalance = PendingRebalance(desired, now) if desired > current else None
            why = (
                f"scaled {direction} from {current} to {desired} replicas: {total} connections on "
                f"{len(counts)} pods, {spec.connections_per_replica} per replica"
            )
            logger.info(why)
            announce("ScaledUp" if desired > current else "ScaledDown", why)

        # 2. Deletion costs, so a scale-down (ours or anyone's) removes the emptiest pods first.
        await _write_deletion_costs(kube, target.namespace, ready, counts, spec)

        # 3. After a scale-up, once the new pods are ready: ask the busiest to shed toward the mean.
        rebalance_note = await _rebalance(
            kube, http, target, spec, memory, ready, counts, now, announce, logger
        )
    if phase is Phase.STABLE and memory.pending_rebalance is not None:
        phase = Phase.REBALANCING
    elif phase is Phase.STABLE and (unreadable or not counts):
        phase = Phase.DEGRADED

    message = (
        f"{total} connections on {len(counts)} of {len(ready)} ready pods; "
        f"{recommended} replicas recommended, {desired} desired, {current} before this round"
    )
    if unreadable:
        message += f"; unreadable: {', '.join(unreadable[:5])}{' ...' if len(unreadable) > 5 else ''}"
    if rebalance_note:
        message += f"; {rebalance_note}"
    return _status(
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
        **memory_fields(memory),
    )


def _metrics_condition(ready: int, unreadable: list[str], scrapes: Mapping[str, metrics.Scrape]) -> Condition:
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


def _limit_condition(unclamped: int, spec: AutoscalerSpec, observed: bool) -> Condition:
    if observed and unclamped > spec.max_replicas:
        return Condition(
            ConditionType.SCALING_LIMITED,
            True,
            "TooManyReplicas",
            f"the load asks for {unclamped} replicas; maxReplicas is {spec.max_replicas}",
        )
    if observed and unclamped < spec.min_replicas:
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
    now: float,
    announce: Announce,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> str:
    """Shed the busiest pods once the pods of the last scale-up are ready; returns a note for the message."""
    pending = memory.pending_rebalance
    if pending is None:
        return ""
    if now - pending.since > constants.REBALANCE_TIMEOUT_SECONDS:
        memory.pending_rebalance = None
        return f"rebalance dropped: {pending.target_replicas} pods were not ready within {constants.REBALANCE_TIMEOUT_SECONDS:.0f}s"
    if len(counts) < pending.target_replicas:
        return f"rebalance waits for {pending.target_replicas} ready pods ({len(counts)} now)"
    token = ""
    token_note = ""
    if spec.admin_token_secret is not None:
        ref = spec.admin_token_secret
        try:
            token = await kube.secret_value(target.namespace, ref.name, ref.key)
        except NotFound:
            # As the gateway's own optional secretKeyRef: no Secret, no token on either side.
            token_note = f" (Secret {ref.name}/{ref.key} not found: sent without a token)"
        except KubeError as exc:
            return f"rebalance waits: cannot read the admin token from Secret {ref.name}: {exc}"
    memory.pending_rebalance = None
    plan = scaling.shed_plan(counts)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    results: list[dict[str, Any]] = []
    for order in plan:
        pod_ip = ready[order.pod]["status"]["podIP"]
        url = metrics.admin_url(pod_ip, spec.metrics_port, constants.SHED_PATH)
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
    mean = math.floor(sum(counts.values()) / len(counts)) if counts else 0
    memory.last_shed = {"time": timestamp(now), "pods": results, "shed": shed, "meanConnections": mean}
    if not plan:
        return "rebalance: the pods are already even"
    note = f"asked {len(plan)} pods to shed {shed} connections toward {mean} per pod"
    logger.info(note)
    announce("Rebalanced", note)
    failed = [r["pod"] for r in results if "error" in r]
    return note + token_note + (f" (failed: {', '.join(failed)})" if failed else "")
