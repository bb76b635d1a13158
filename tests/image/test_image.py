"""The Dockerfile's image, built with podman and run for real: as the README runs it, and as the chart runs it."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.helm.chart import container, env, gateway, of_kind, render
from tests.image.podman import PODMAN, build_image, exec_in, inspect, podman, running, stop
from tests.servers import RedisServer, free_port

# Slow: the first run builds the base and the image (about 2 minutes), later runs reuse them.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


def test_image_config(image: str) -> None:
    details = inspect(image, "image")
    config = details["Config"]
    assert config["Entrypoint"] == ["eventcast"]  # exec form: the gateway is PID 1 and gets SIGTERM itself
    assert config["Cmd"] == ["serve"]
    assert "EVENTCAST_HOST=0.0.0.0" in config["Env"]
    user = config["User"].split(":")[0]
    assert user and user not in ("0", "root")
    assert details["Healthcheck"]["Test"][:2] == ["CMD", "python3"]  # no curl needed


def test_serves_websocket_events_as_non_root_and_drains_on_sigterm(image: str) -> None:
    port = free_port()
    args = ["--env", f"EVENTCAST_PORT={port}", "--env", "EVENTCAST_DRAIN_SECONDS=1", image]
    with running(image, args, port=port) as name:
        status = dict(line.split(":", 1) for line in exec_in(name, "cat", "/proc/1/status").splitlines())
        assert status["Uid"].split()[0] not in ("", "0")  # real, effective: not root
        assert "serve" in exec_in(name, "cat", "/proc/1/cmdline").split("\0")
        # uvicorn[standard]: the event loop, HTTP parser and WebSocket library it brings.
        exec_in(name, "python3", "-c", "import uvloop, httptools, websockets, watchfiles")
        assert podman("healthcheck", "run", name, check=False).returncode == 0

        close_code = asyncio.run(_subscribe_publish_and_stop(port, name))
        assert close_code == 1012  # drain: "service restart, reconnect elsewhere"
        assert inspect(name)["State"]["ExitCode"] == 0


async def _subscribe_publish_and_stop(port: int, name: str) -> int:
    """Subscribe, publish over HTTP, receive it; then `podman stop` and return the close code the drain sent."""
    url = f"ws://127.0.0.1:{port}/ws/events?channels=image-test"
    async with websockets.connect(url) as socket, httpx.AsyncClient() as client:
        welcome = json.loads(await asyncio.wait_for(socket.recv(), 10))
        assert welcome["type"] == "eventcast.welcome"
        event = {"channel": "image-test", "type": "image.built", "data": {"ok": True}}
        answer = await client.post(f"http://127.0.0.1:{port}/events", json=event, timeout=10)
        assert answer.status_code == 202, answer.text
        received = json.loads(await asyncio.wait_for(socket.recv(), 10))
        assert received["id"] == answer.json()["ids"][0]
        assert {key: received[key] for key in event} == event
        stopping = await asyncio.create_subprocess_exec(*PODMAN, "stop", "--time", "30", name)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 30)
        assert await asyncio.wait_for(stopping.wait(), 60) == 0
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code


def _resolve(entry: dict[str, Any], secrets: dict[str, dict[str, str]], pod_name: str) -> str:
    """An env entry's value, as the kubelet would give it (from the chart's own Secret, or the pod name)."""
    if "value" in entry:
        return str(entry["value"])
    source = entry["valueFrom"]
    if "fieldRef" in source:
        assert source["fieldRef"]["fieldPath"] == "metadata.name"
        return pod_name
    ref = source["secretKeyRef"]
    return secrets[ref["name"]][ref["key"]]


def test_runs_the_pod_the_chart_renders(image: str, redis_server: RedisServer) -> None:
    """The chart's env, user, read-only root, dropped capabilities and emptyDirs, with two workers on Redis."""
    port, internal = free_port(), free_port()
    values = {
        "workers": 2,
        "containerPort": port,
        "internalPort": {"enabled": True, "port": internal},
        "redis": {"url": redis_server.url},
        "auth": {"adminToken": {"value": "admin-secret"}},
        "drainSeconds": 2,
    }
    objects = render(values)
    deployment = gateway(objects)
    pod = deployment["spec"]["template"]["spec"]
    box = container(deployment)
    secrets = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in of_kind(objects, "Secret")
    }
    pod_name = "eventcast-7d9f-abcde"
    args = [f"--env={name}={_resolve(entry, secrets, pod_name)}" for name, entry in env(deployment).items()]
    security = pod["securityContext"] | box["securityContext"]
    args += [f"--user={security['runAsUser']}:{security['runAsGroup']}"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    args += ["--read-only", "--read-only-tmpfs=false", "--cap-drop=all", "--security-opt=no-new-privileges"]
    emptydirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    args += [f"--tmpfs={m['mountPath']}:rw,mode=1777" for m in box["volumeMounts"] if m["name"] in emptydirs]
    grace = pod["terminationGracePeriodSeconds"]

    with running(image, [*args, image, *box["args"]], port=port, ready_path="/readyz") as name:
        with pytest.raises(RuntimeError):  # the root filesystem is read-only
            exec_in(name, "touch", "/opt/eventcast/written")
        public, private = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal}"
        assert httpx.get(f"{public}/metrics").status_code == 404  # only on the internal port
        event = {"channel": "chart", "type": "pod.ok", "data": {}}
        assert httpx.post(f"{public}/events", json=event).status_code == 202
        metrics = httpx.get(f"{private}/metrics")
        assert metrics.status_code == 200 and "eventcast_connections" in metrics.text
        assert "eventcast_events_published_total" in metrics.text  # merged from the workers' files
        assert httpx.post(f"{private}/admin/shed", json={"fraction": 0.1}).status_code in (401, 403)
        shed = httpx.post(
            f"{private}/admin/shed", json={"fraction": 0.1}, headers={"authorization": "Bearer admin-secret"}
        )
        assert shed.status_code == 202 and "shed" in shed.json(), shed.text
        welcome = asyncio.run(_welcome(f"ws://127.0.0.1:{port}/ws/events"))
        assert welcome["replica"] == pod_name
        exit_code, seconds = stop(name, grace)
        assert exit_code == 0 and seconds < grace


async def _welcome(url: str) -> dict[str, Any]:
    async with websockets.connect(url) as socket:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 10))
        return frame
