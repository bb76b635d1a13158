"""The real operator against kmock (the Kubernetes API) and real gateways (the pods), with real WebSocket clients."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from app.operator.constants import DELETION_COST_ANNOTATION, Phase
from tests.clients import Subscriber
from tests.operator.conftest import (
    CAS,
    DEPLOYMENTS,
    EVENTS,
    NS,
    PODS,
    SECRETS,
    Pods,
    Service,
    admin_secret,
    autoscaler,
    deployment,
    eventually,
    pod,
)

Start = Callable[..., Awaitable[Any]]
NO_SCALE_DOWN = {"stabilizationWindowSeconds": 3600}


def status(api: Any, name: str = "gw") -> dict[str, Any]:
    return dict(api.objects[CAS, NS, name].raw.get("status") or {})


def replicas(api: Any, name: str = "eventcast") -> int:
    return int(api.objects[DEPLOYMENTS, NS, name]["spec"]["replicas"])


def cost(api: Any, name: str) -> str | None:
    annotations = api.objects[PODS, NS, name].raw["metadata"].get("annotations") or {}
    return annotations.get(DELETION_COST_ANNOTATION)


def deployment_patches(api: Any) -> list[Any]:
    return [request.data for request in api["patch", api.resource(DEPLOYMENTS)]]


def closed(subscribers: list[Subscriber]) -> list[tuple[int, str]]:
    """(code, reason) of every subscriber the server has closed so far."""
    frames = [s.ws.protocol.close_rcvd for s in subscribers]
    return [(frame.code, frame.reason) for frame in frames if frame is not None]


async def subscribe(ws_base: str, count: int) -> list[Subscriber]:
    opened = await asyncio.gather(*(Subscriber.open(f"{ws_base}/ws/events?channels=c") for _ in range(count)))
    return list(opened)


def add_pods(api: Any, gateways: Pods, names: list[str]) -> None:
    for index, name in enumerate(names):
        api.objects[PODS, NS, name] = pod(name, gateways.hosts[index])


async def test_scale_up_marks_costs_and_the_new_pods_get_clients_once_ready(
    pods: Callable[[int], Pods], api: Any, operator: Start
) -> None:
    gateways = pods(4)
    service = Service(gateways)
    await service.connect(0, 30)
    await service.connect(1, 2)
    assert [gateways.connections(i) for i in range(4)] == [30, 2, 0, 0]
    api.objects[DEPLOYMENTS, NS, "eventcast"] = deployment("eventcast", 2)
    add_pods(api, gateways, ["gw-a", "gw-b"])
    api.objects[PODS, NS, "unrelated"] = pod("unrelated", gateways.hosts[2], labels={"app": "other"})
    api.objects[SECRETS, NS, "eventcast-admin"] = admin_secret()
    api.objects[CAS, NS, "gw"] = autoscaler(
        "gw",
        "eventcast",
        connectionsPerReplica=10,
        minReplicas=1,
        maxReplicas=6,
        metricsPort=gateways.metrics_port,
        shedSpreadSeconds=0,
        scaleDown=NO_SCALE_DOWN,
        rebalance={"windowSeconds": 1, "churnBudget": 100},
        adminTokenSecretRef={"name": "eventcast-admin", "key": "token"},
    )
    try:
        await operator()
        # 32 connections at 10 per replica: 4 replicas, at once.
        await eventually(lambda: replicas(api) == 4, 15, "the Deployment scaled to 4")
        await eventually(lambda: status(api)["desiredReplicas"] == 4, 5, "status written")
        # Costs follow connections, so the emptiest pod goes first; a pod outside the selector is left alone.
        await eventually(lambda: (cost(api, "gw-a"), cost(api, "gw-b")) == ("30", "2"), 5, "deletion costs")
        assert cost(api, "unrelated") is None
        written = status(api)
        assert written["observedConnections"] == 32 and written["lastScaleTime"]
        assert written["pods"] == [{"name": "gw-a", "connections": 30}, {"name": "gw-b", "connections": 2}]
        conditions = {c["type"]: c["status"] for c in written["conditions"]}
        assert conditions == {"TargetFound": "True", "MetricsAvailable": "True", "ScalingLimited": "False"}

        # Nothing is shed while the new pods are not there: the Deployment has not settled.
        await asyncio.sleep(1.5)
        assert gateways.connections(0) == 30 and service.reconnects == 0
        assert "settle" in status(api)["message"]

        # The Deployment controller's part, played here: the two new pods come up ready.
        add_pods(api, gateways, ["gw-a", "gw-b", "gw-c", "gw-d"])
        shed = await eventually(lambda: status(api).get("lastShed"), 10, "a shed")
        # Mean 8 per pod: gw-a (30) sheds 22, gw-b (2) nothing.
        assert [(row["pod"], row["shed"]) for row in shed["pods"]] == [("gw-a", 22)]
        assert shed["meanConnections"] == 8
        await eventually(
            lambda: _balanced([gateways.connections(i) for i in range(4)], 1.25, 32),
            60,
            "every pod within 125 % of 8",
        )
        assert {(code, reason.endswith("shed")) for code, reason in closed(service.clients[:30])} == {
            (1012, True)
        }
        # One Deployment patch (2 -> 4); the new pods get their costs.
        assert deployment_patches(api) == [{"spec": {"replicas": 4}}]
        await eventually(lambda: cost(api, "gw-c") is not None, 5, "the new pods' costs")
        # No finalizer: deleting the autoscaler never waits for the operator; only its status is written.
        assert "finalizers" not in api.objects[CAS, NS, "gw"].raw["metadata"]
        assert {request.url.path.rsplit("/", 1)[-1] for request in api["patch", api.resource(CAS)]} == {
            "status"
        }
        reasons = {request.data.get("reason") for request in api["post", api.resource(EVENTS)]}
        assert {"ScaledUp", "Rebalanced"} <= reasons
    finally:
        await service.close()


async def test_rebalancing_from_30_2_0_0_converges_within_tolerance_inside_the_churn_budget(
    pods: Callable[[int], Pods], api: Any, operator: Start
) -> None:
    gateways = pods(4)
    service = Service(gateways)
    await service.connect(0, 30)
    await service.connect(1, 2)
    api.objects[DEPLOYMENTS, NS, "eventcast"] = deployment("eventcast", 4)
    add_pods(api, gateways, ["gw-a", "gw-b", "gw-c", "gw-d"])
    budget, period = 25, 4
    api.objects[SECRETS, NS, "eventcast-admin"] = admin_secret()
    api.objects[CAS, NS, "gw"] = autoscaler(
        "gw",
        "eventcast",
        connectionsPerReplica=10,
        minReplicas=4,
        maxReplicas=6,
        metricsPort=gateways.metrics_port,
        shedSpreadSeconds=0,
        scaleDown=NO_SCALE_DOWN,
        rebalance={
            "imbalancePercent": 125,
            "windowSeconds": 1,
            "churnBudget": budget,
            "churnPeriodSeconds": period,
        },
        adminTokenSecretRef={"name": "eventcast-admin", "key": "token"},
    )
    closes: list[float] = []
    watching = asyncio.create_task(_record_closes(service, closes))
    try:
        started = time.monotonic()
        await operator()
        try:
            counts = await eventually(
                lambda: _balanced([gateways.connections(i) for i in range(4)], 1.25, 32),
                30,
                "balance within 125 %",
            )
        except TimeoutError as exc:
            now = [gateways.connections(i) for i in range(4)]
            raise AssertionError(f"{exc}: {now}, {len(closes)} closes, status {status(api)}") from exc
        took = time.monotonic() - started
        await asyncio.sleep(2.5)  # a few more rounds: nothing more is shed once balanced
        settled = [gateways.connections(i) for i in range(4)]
        assert _balanced(settled, 1.25, 32), settled  # every shed client came back, and the balance held
        assert service.reconnects == len(closes)
        # The budget held: no window of the churn period saw more closes than the budget.
        assert len(closes) > budget  # 30/2/0/0 needs more than one budget's worth, so the budget was used up
        for first in closes:
            assert sum(1 for t in closes if first <= t < first + period - 0.2) <= budget, (closes, budget)
        # ... and it took at least one wait for the budget to come back.
        assert took >= period
        print(f"converged to {counts} in {took:.1f}s with {len(closes)} sheds (budget {budget}/{period}s)")
        assert status(api)["phase"] in (Phase.STABLE, Phase.REBALANCING)
        assert replicas(api) == 4 and deployment_patches(api) == []
    finally:
        watching.cancel()
        await service.close()


def _balanced(counts: list[int], limit: float, total: int) -> list[int] | None:
    """``counts`` when all ``total`` clients are connected and the busiest pod is within ``limit`` of the mean."""
    mean = sum(counts) / len(counts)
    return counts if sum(counts) == total and max(counts) <= mean * limit else None


async def _record_closes(service: Service, closes: list[float]) -> None:
    """The time each shed close reached a client (the Service reconnects them)."""
    seen = 0
    while True:
        now = len(closed(service.clients))
        closes.extend([time.monotonic()] * (now - seen))
        seen = now
        await asyncio.sleep(0.02)


async def test_scale_down_is_never_faster_than_the_policy(
    pods: Callable[[int], Pods], api: Any, operator: Start
) -> None:
    gateways = pods(4)
    opened = await subscribe(gateways.gateways[0].ws, 2) + await subscribe(gateways.gateways[1].ws, 1)
    api.objects[DEPLOYMENTS, NS, "eventcast"] = deployment("eventcast", 4)
    names = ["gw-a", "gw-b", "gw-c", "gw-d"]
    add_pods(api, gateways, names)
    window, period = 1, 2
    api.objects[CAS, NS, "gw"] = autoscaler(
        "gw",
        "eventcast",
        connectionsPerReplica=10,
        maxReplicas=5,
        metricsPort=gateways.metrics_port,
        scaleDown={"stabilizationWindowSeconds": window, "type": "Pods", "value": 1, "periodSeconds": period},
        rebalance={"enabled": False},
    )
    steps: list[tuple[float, int]] = []
    try:
        started = time.monotonic()
        await operator()
        # 3 connections ask for 1 replica; the policy lets one pod go per period, after the window.
        while replicas(api) > 1:
            assert time.monotonic() - started < 30, f"no scale-down to 1 in 30 s: {steps}"
            now = replicas(api)
            if not steps or steps[-1][1] != now:
                steps.append((time.monotonic(), now))
            # The ReplicaSet's part: remove the pod with the lowest pod-deletion-cost.
            present = [
                n for n in names if (PODS, NS, n) in api.objects and not api.objects[PODS, NS, n].deleted
            ]
            if len(present) > now and all(cost(api, n) is not None for n in present):
                cheapest = min(present, key=lambda n: (int(cost(api, n) or 0), n))
                del api.objects[PODS, NS, cheapest]
            await asyncio.sleep(0.05)
        steps.append((time.monotonic(), 1))
        assert [count for _, count in steps] == [4, 3, 2, 1], steps
        assert steps[1][0] - started >= window
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(steps[1:])]  # between scale-downs
        assert all(gap >= period - 0.1 for gap in gaps), gaps  # never faster than 1 pod per period
        assert deployment_patches(api) == [{"spec": {"replicas": n}} for n in (3, 2, 1)]
        # The emptiest pods went first: the two clients of gw-a and the one of gw-b are never cut.
        assert [s for s in opened if s.ws.protocol.close_rcvd is not None] == []
        decisions = {status(api)["lastDecision"]}
        assert decisions <= {
            "steady",
            "within_tolerance",
            "limited",
            "scale_down",
            "rate_limited",
            "stabilizing",
        }
    finally:
        for subscriber in opened:
            await subscriber.close()


async def test_an_unreachable_pod_and_a_missing_deployment_are_reported_not_fatal(
    pods: Callable[[int], Pods], api: Any, operator: Start
) -> None:
    gateways = pods(1)
    opened = await subscribe(gateways.gateways[0].ws, 5)
    api.objects[DEPLOYMENTS, NS, "eventcast"] = deployment("eventcast", 2)
    api.objects[PODS, NS, "gw-a"] = pod("gw-a", gateways.hosts[0])
    api.objects[PODS, NS, "gw-dead"] = pod("gw-dead", "127.0.0.9")  # nothing listens there
    api.objects[PODS, NS, "gw-starting"] = pod("gw-starting", "127.0.0.10", ready=False)
    common = {"connectionsPerReplica": 10, "maxReplicas": 5, "scaleDown": {"stabilizationWindowSeconds": 0}}
    api.objects[CAS, NS, "gw"] = autoscaler("gw", "eventcast", metricsPort=gateways.metrics_port, **common)
    api.objects[CAS, NS, "ghost"] = autoscaler("ghost", "no-such-deployment", **common)
    await operator()

    degraded = await eventually(
        lambda: status(api).get("phase") == Phase.DEGRADED and status(api), 10, "degraded"
    )
    # 5 connections would fit one pod, but the pod that did not answer counts as full: no scale-down.
    assert degraded["observedConnections"] == 5
    assert degraded["pods"][0] == {"name": "gw-a", "connections": 5}
    assert degraded["pods"][1]["name"] == "gw-dead" and "127.0.0.9" in degraded["pods"][1]["error"]
    assert len(degraded["pods"]) == 2  # the pod that is not ready is not scraped
    metrics_condition = next(c for c in degraded["conditions"] if c["type"] == "MetricsAvailable")
    assert metrics_condition["status"] == "False" and metrics_condition["reason"] == "ScrapeFailed"
    ghost = await eventually(
        lambda: status(api, "ghost").get("phase") == Phase.TARGET_NOT_FOUND and status(api, "ghost"),
        10,
        "target not found",
    )
    assert "no-such-deployment" in ghost["message"]
    assert ghost["conditions"][0]["type"] == "TargetFound" and ghost["conditions"][0]["status"] == "False"
    # The operator keeps going: later rounds run, and the Deployment was never touched.
    first = status(api)["lastReconcileTime"]
    await eventually(lambda: status(api)["lastReconcileTime"] != first, 5, "another round")
    assert replicas(api) == 2 and deployment_patches(api) == []
    assert cost(api, "gw-a") == "5" and cost(api, "gw-dead") is None
    # Deleting an autoscaler is immediate (no finalizer) and the operator goes on with the others.
    async with httpx.AsyncClient(base_url=str(api.url)) as client:
        response = await client.delete(
            f"/apis/eventcast.dev/v1alpha1/namespaces/{NS}/connectionautoscalers/ghost"
        )
        assert response.status_code == 200
        missing = await client.get(
            f"/apis/eventcast.dev/v1alpha1/namespaces/{NS}/connectionautoscalers/ghost"
        )
        assert missing.status_code == 404
    before = status(api)["lastReconcileTime"]
    await eventually(lambda: status(api)["lastReconcileTime"] != before, 5, "rounds after the deletion")
    for subscriber in opened:
        await subscriber.close()
