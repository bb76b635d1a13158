"""The real operator against kmock (the Kubernetes API) and real gateways (the pods), with real WebSocket clients."""

from __future__ import annotations

import asyncio
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
    admin_secret,
    autoscaler,
    deployment,
    eventually,
    pod,
)

Start = Callable[[], Awaitable[Any]]


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


async def test_scale_up_marks_costs_then_sheds_the_busiest_pod_toward_the_new_ones(
    pods: Callable[[int], Pods], api: Any, operator: Start
) -> None:
    gateways = pods(4)
    busy = await subscribe(gateways.gateways[0].ws, 30)
    quiet = await subscribe(gateways.gateways[1].ws, 2)
    assert [gateways.connections(i) for i in range(4)] == [30, 2, 0, 0]
    api.objects[DEPLOYMENTS, NS, "eventcast"] = deployment("eventcast", 2)
    api.objects[PODS, NS, "gw-a"] = pod("gw-a", gateways.hosts[0])
    api.objects[PODS, NS, "gw-b"] = pod("gw-b", gateways.hosts[1])
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
        adminTokenSecretRef={"name": "eventcast-admin", "key": "token"},
    )
    await operator()

    # 32 connections at 10 per replica: 4 replicas.
    await eventually(lambda: replicas(api) == 4, 15, "the Deployment scaled to 4")
    await eventually(lambda: status(api)["desiredReplicas"] == 4, 5, "status written")
    # Costs follow connections, so the emptiest pod goes first; a pod outside the selector is left alone.
    await eventually(lambda: (cost(api, "gw-a"), cost(api, "gw-b")) == ("30", "2"), 5, "deletion costs")
    assert cost(api, "unrelated") is None
    written = status(api)
    assert written["observedConnections"] == 32
    assert written["pendingRebalance"]["targetReplicas"] == 4
    assert written["pods"] == [{"name": "gw-a", "connections": 30}, {"name": "gw-b", "connections": 2}]
    assert written["lastScaleTime"]
    assert written["phase"] in (Phase.SCALING_UP, Phase.REBALANCING)
    conditions = {c["type"]: c["status"] for c in written["conditions"]}
    assert conditions == {"TargetFound": "True", "MetricsAvailable": "True", "ScalingLimited": "False"}

    # Nothing is shed while the new pods are not ready.
    await asyncio.sleep(1.0)
    assert gateways.connections(0) == 30
    assert closed(busy) == []
    assert status(api)["phase"] == Phase.REBALANCING

    # The Deployment controller's part, played here: the two new pods come up ready.
    api.objects[PODS, NS, "gw-c"] = pod("gw-c", gateways.hosts[2])
    api.objects[PODS, NS, "gw-d"] = pod("gw-d", gateways.hosts[3])
    shed = await eventually(lambda: status(api)["lastShed"], 10, "the rebalance")
    # Mean 8 per pod: gw-a (30) sheds 22, gw-b (2) nothing.
    assert [(row["pod"], row["shed"]) for row in shed["pods"]] == [("gw-a", 22)]
    assert shed["meanConnections"] == 8
    await eventually(lambda: len(closed(busy)) == 22, 10, "22 of the busy pod's clients closed")
    assert {(code, reason.endswith("shed")) for code, reason in closed(busy)} == {(1012, True)}
    assert closed(quiet) == []
    await eventually(lambda: gateways.connections(0) == 8, 5, "the busy pod's gauge to drop to 8")

    # One Deployment patch (2 -> 4); the new pods get their costs; the rebalance is done once.
    assert deployment_patches(api) == [{"spec": {"replicas": 4}}]
    await eventually(lambda: (cost(api, "gw-c"), cost(api, "gw-d")) == ("0", "0"), 5, "the new pods' costs")
    await eventually(lambda: "pendingRebalance" not in status(api), 5, "the rebalance to be cleared")
    await asyncio.sleep(1.0)
    assert status(api)["lastShed"]["time"] == shed["time"]
    assert len(closed(busy)) == 22
    # No finalizer: deleting the autoscaler never waits for the operator; only its status is written.
    assert "finalizers" not in api.objects[CAS, NS, "gw"].raw["metadata"]
    assert {request.url.path.rsplit("/", 1)[-1] for request in api["patch", api.resource(CAS)]} == {"status"}
    # kopf posted Kubernetes Events for the scale and the rebalance.
    reasons = {request.data.get("reason") for request in api["post", api.resource(EVENTS)]}
    assert {"ScaledUp", "Rebalanced"} <= reasons
    for subscriber in busy + quiet:
        await subscriber.close()


async def test_scale_down_waits_for_the_stabilisation_window(
    pods: Callable[[int], Pods], api: Any, operator: Start
) -> None:
    gateways = pods(3)
    opened = await subscribe(gateways.gateways[0].ws, 3) + await subscribe(gateways.gateways[1].ws, 1)
    api.objects[DEPLOYMENTS, NS, "eventcast"] = deployment("eventcast", 3)
    for index, name in enumerate(["gw-a", "gw-b", "gw-c"]):
        api.objects[PODS, NS, name] = pod(name, gateways.hosts[index])
    window = 3
    api.objects[CAS, NS, "gw"] = autoscaler(
        "gw",
        "eventcast",
        connectionsPerReplica=10,
        maxReplicas=5,
        scaleDownStabilizationSeconds=window,
        metricsPort=gateways.metrics_port,
    )
    started = time.monotonic()
    await operator()

    # 4 connections ask for 1 replica, but for `window` seconds the operator holds at 3.
    await eventually(lambda: status(api).get("desiredReplicas") == 3, 10, "a first reconciliation")
    assert replicas(api) == 3
    assert status(api)["phase"] == Phase.STABLE
    costs = await eventually(
        lambda: [cost(api, n) for n in ("gw-a", "gw-b", "gw-c")] if cost(api, "gw-c") else None, 5, "costs"
    )
    assert costs == ["3", "1", "0"]  # gw-c, the emptiest, is the cheapest to delete
    await eventually(lambda: replicas(api) == 1, window + 10, "the scale-down after the window")
    assert time.monotonic() - started >= window
    assert deployment_patches(api) == [{"spec": {"replicas": 1}}]
    # The status written in the same round as the patch says so.
    await eventually(
        lambda: status(api).get("phase") == Phase.SCALING_DOWN or status(api).get("currentReplicas") == 1,
        5,
        "status",
    )
    assert status(api)["lastScaleTime"] and status(api)["desiredReplicas"] == 1
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
    common = {"connectionsPerReplica": 10, "maxReplicas": 5, "scaleDownStabilizationSeconds": 0}
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
