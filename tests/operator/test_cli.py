"""`eventcast operator` as users run it: a separate process, logging in from a kubeconfig, stopped by SIGTERM."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.clients import Subscriber
from tests.operator.conftest import (
    CAS,
    DEPLOYMENTS,
    NS,
    PODS,
    OperatorProcess,
    Pods,
    autoscaler,
    deployment,
    eventually,
    pod,
)
from tests.servers import free_port


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric ``name`` in an exposition: sorted labels -> value."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_the_operator_command_scales_serves_its_metrics_and_stops_cleanly_on_sigterm(
    pods: Callable[[int], Pods], api: Any, tmp_path: Path
) -> None:
    gateways = pods(1)
    opened = [await Subscriber.open(f"{gateways.gateways[0].ws}/ws/events?channels=c") for _ in range(12)]
    api.objects[DEPLOYMENTS, NS, "eventcast"] = deployment("eventcast", 1)
    api.objects[PODS, NS, "gw-a"] = pod("gw-a", gateways.hosts[0])
    api.objects[CAS, NS, "gw"] = autoscaler(
        "gw", "eventcast", connectionsPerReplica=10, maxReplicas=3, metricsPort=gateways.metrics_port
    )
    health_port = free_port()
    operator = await OperatorProcess(
        api, tmp_path, "--interval", "0.3", "--liveness", f"http://127.0.0.1:{health_port}/healthz"
    ).start()
    try:
        # 12 connections at 10 per replica: 2 replicas.
        await eventually(
            lambda: api.objects[DEPLOYMENTS, NS, "eventcast"]["spec"]["replicas"] == 2, 30, "scale"
        )
        await eventually(
            lambda: api.objects[CAS, NS, "gw"]["status"]["observedConnections"] == 12, 10, "status"
        )
        # The token from the kubeconfig is what the operator's own calls carry.
        patches = list(api["patch", api.resource(DEPLOYMENTS)])
        assert patches[0].headers["Authorization"] == "Bearer test-token"
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{health_port}/healthz", timeout=5)
            assert health.status_code == 200 and health.json()["autoscaling"]["rounds"] > 0
        # Its own metrics: what it decided for the autoscaler, labelled by the autoscaler.
        key = (("autoscaler", "gw"), ("autoscaler_namespace", NS))
        text = await eventually(
            lambda: samples(operator.metrics(), "eventcast_operator_desired_replicas") and operator.metrics(),
            10,
            "the operator's metrics",
        )
        assert samples(text, "eventcast_operator_desired_replicas")[key] == 2
        assert samples(text, "eventcast_operator_max_replicas")[key] == 3
        decisions = samples(text, "eventcast_operator_decisions_total")
        assert decisions[(*key[:1], *key[1:], ("reason", "scale_up"))] == 1
        assert samples(text, "eventcast_operator_leader") == {(("autoscaler_namespace", NS),): 1.0}
    finally:
        code = await operator.stop()
        for subscriber in opened:
            await subscriber.close()
    assert code == 0, operator.log()
