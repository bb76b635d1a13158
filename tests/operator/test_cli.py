"""`eventcast operator` as users run it: a separate process, logging in from a kubeconfig, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.clients import Subscriber
from tests.operator.conftest import CAS, DEPLOYMENTS, NS, PODS, Pods, autoscaler, deployment, eventually, pod
from tests.servers import ROOT, free_port


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
            }
        )
    )
    return path


async def test_the_operator_command_scales_and_stops_cleanly_on_sigterm(
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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "EVENTCAST_"))}
    env["KUBECONFIG"] = str(kubeconfig(tmp_path / "kubeconfig", str(api.url).rstrip("/")))
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "app.cli", "operator", "--namespace", NS, "--interval", "0.3"],
        *["--liveness", f"http://127.0.0.1:{health_port}/healthz"],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
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
            assert (await client.get(f"http://127.0.0.1:{health_port}/healthz", timeout=5)).status_code == 200
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 30)
        for subscriber in opened:
            await subscriber.close()
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]
