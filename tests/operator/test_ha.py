"""Two operator replicas with kopf peering: exactly one acts; kill it and the other takes over."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.clients import Subscriber
from tests.operator.conftest import (
    CAS,
    DEPLOYMENTS,
    NS,
    PEERINGS,
    PODS,
    OperatorProcess,
    Pods,
    autoscaler,
    deployment,
    eventually,
    peering_object,
    pod,
)
from tests.operator.test_cli import samples

LIFETIME = 3  # seconds a silent replica stays the leader: short, to keep the test short
LEADER = "eventcast_operator_leader"
DECISIONS = "eventcast_operator_decisions_total"


def rounds(process: OperatorProcess) -> float:
    """Decisions this replica made (one per autoscaler per round it acted in)."""
    return sum(samples(process.metrics(), DECISIONS).values())


def leads(process: OperatorProcess) -> bool:
    return samples(process.metrics(), LEADER).get((("autoscaler_namespace", NS),)) == 1.0


def replicas(api: Any) -> int:
    return int(api.objects[DEPLOYMENTS, NS, "eventcast"]["spec"]["replicas"])


def status(api: Any) -> dict[str, Any]:
    return dict(api.objects[CAS, NS, "gw"].raw.get("status") or {})


async def test_two_replicas_one_acts_and_the_other_takes_over_when_it_is_killed(
    pods: Callable[[int], Pods], api: Any, tmp_path: Path
) -> None:
    gateways = pods(1)
    opened = [await Subscriber.open(f"{gateways.gateways[0].ws}/ws/events?channels=c") for _ in range(12)]
    api.objects[DEPLOYMENTS, NS, "eventcast"] = deployment("eventcast", 1)
    api.objects[PODS, NS, "gw-a"] = pod("gw-a", gateways.hosts[0])
    api.objects[PEERINGS, NS, "eventcast-operator"] = peering_object()
    api.objects[CAS, NS, "gw"] = autoscaler(
        "gw", "eventcast", connectionsPerReplica=10, maxReplicas=5, metricsPort=gateways.metrics_port
    )
    common = ["--interval", "0.3", "--peering", "eventcast-operator", "--peering-lifetime", str(LIFETIME)]
    # Priorities as the default gives them (the oldest replica first), made explicit for the test.
    first = await OperatorProcess(api, tmp_path, *common, "--identity", "op-a", "--priority", "-100").start()
    second = await OperatorProcess(api, tmp_path, *common, "--identity", "op-b", "--priority", "-200").start()
    try:
        # kopf keeps both replicas' keep-alives in the peering object; op-a leads and scales 1 -> 2.
        peers = await eventually(
            lambda: (
                {"op-a", "op-b"}
                <= set(api.objects[PEERINGS, NS, "eventcast-operator"].raw.get("status") or {})
                and api.objects[PEERINGS, NS, "eventcast-operator"].raw["status"]
            ),
            20,
            "both keep-alives",
        )
        assert peers["op-a"]["priority"] == -100 and peers["op-a"]["lifetime"] == LIFETIME
        await eventually(lambda: replicas(api) == 2, 20, "the leader's scale-up")
        await eventually(lambda: status(api)["operator"] == "op-a", 5, "op-a's status")
        await eventually(lambda: rounds(first) >= 5, 60, "op-a's rounds")
        # Exactly one acts: op-b stands by, having decided nothing.
        assert leads(first) and not leads(second)
        assert rounds(second) == 0
        assert replicas(api) == 2 and len(list(api["patch", api.resource(DEPLOYMENTS)])) == 1

        # The leader dies without a word (no clean exit, so its keep-alive stays until it expires).
        await first.stop(signal.SIGKILL)
        more = [await Subscriber.open(f"{gateways.gateways[0].ws}/ws/events?channels=c") for _ in range(13)]
        opened += more
        # 25 connections: 3 replicas, decided by op-b once op-a's keep-alive expired.
        await eventually(lambda: replicas(api) == 3, 10 + 2 * LIFETIME, "op-b's scale-up")
        await eventually(lambda: status(api)["operator"] == "op-b", 5, "op-b's status")
        await eventually(lambda: leads(second) and rounds(second) > 0, 10, "op-b's metrics")
        # op-b went on from op-a's status: the window it read back holds op-a's recommendations too.
        assert status(api)["recommendations"]
    finally:
        code = await second.stop()
        if first.process is not None and first.process.returncode is None:
            await first.stop()
        for subscriber in opened:
            await subscriber.close()
    assert code == 0, second.log()
    # A clean stop removes the replica's keep-alive at once (kopf writes it as dead).
    assert "op-b" not in (api.objects[PEERINGS, NS, "eventcast-operator"].raw.get("status") or {})
