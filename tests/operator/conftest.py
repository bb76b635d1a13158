"""The operator end to end: kmock is the Kubernetes API, real `eventcast serve` processes are the pods."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import yaml

from app.operator.constants import (
    GROUP,
    KIND,
    PEERING_GROUP,
    PEERING_PLURAL,
    PEERING_VERSION,
    PLURAL,
    VERSION,
)
from app.operator.main import Options, serve
from app.operator.scrape import parse_connections
from tests.clients import Subscriber
from tests.servers import ROOT, Gateway, free_port

NS = "ns1"
CAS = f"{GROUP}/{VERSION}/{PLURAL}"
DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
SECRETS = "v1/secrets"
EVENTS = "v1/events"
PEERINGS = f"{PEERING_GROUP}/{PEERING_VERSION}/{PEERING_PLURAL}"
LABELS = {"app.kubernetes.io/name": "eventcast"}
ADMIN_TOKEN = "operator-test-admin-token"
INTERVAL = 0.3  # seconds between reconciliations: keeps every test within a few seconds


def shared_internal_port(hosts: list[str]) -> int:
    """One port free on every address: the CR names a single metricsPort, as in a real cluster."""
    for _ in range(50):
        port = free_port(hosts[0])
        if all(_free(host, port) for host in hosts[1:]):
            return port
    raise RuntimeError("no port free on every test address")


def _free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Pods:
    """Real gateways on 127.0.0.2, .3, ... sharing one internal (metrics/admin) port, with the admin token set.

    ``broker``, ``workers`` (one entry per gateway) and ``env`` (added to each one's) shape them further.
    """

    def __init__(
        self,
        count: int,
        *,
        broker: str = "memory://",
        workers: tuple[int, ...] = (),
        env: tuple[dict[str, str], ...] = (),
    ) -> None:
        self.hosts = [f"127.0.0.{n}" for n in range(2, 2 + count)]
        self.metrics_port = shared_internal_port(self.hosts)
        common = {"EVENTCAST_INTERNAL_PORT": str(self.metrics_port), "EVENTCAST_ADMIN_TOKEN": ADMIN_TOKEN}
        self.gateways = [
            Gateway(
                host=host,
                broker=broker,
                workers=workers[index] if index < len(workers) else 1,
                env=common | (env[index] if index < len(env) else {}),
            )
            for index, host in enumerate(self.hosts)
        ]

    def metrics_url(self, index: int) -> str:
        return f"http://{self.hosts[index]}:{self.metrics_port}/metrics"

    def start(self) -> None:
        for gateway in self.gateways:
            gateway.start()

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()

    def connections(self, index: int) -> int:
        return parse_connections(httpx.get(self.metrics_url(index), timeout=5).text)


@pytest.fixture
def pods() -> Iterator[Callable[[int], Pods]]:
    started: list[Pods] = []

    def make(count: int) -> Pods:
        made = Pods(count)
        started.append(made)
        made.start()
        return made

    yield make
    for made in started:
        made.stop()


def pod(name: str, ip: str, *, ready: bool = True, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "labels": dict(LABELS if labels is None else labels),
        },
        "spec": {"containers": [{"name": "gateway", "image": "eventcast:test"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {"metadata": {"labels": dict(LABELS)}, "spec": {"containers": []}},
        },
    }


def autoscaler(name: str, target: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"scaleTargetRef": {"name": target}, **spec},
    }


def admin_secret() -> dict[str, Any]:
    import base64

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "eventcast-admin", "namespace": NS, "uid": "uid-secret", "resourceVersion": "1"},
        "data": {"token": base64.b64encode(ADMIN_TOKEN.encode()).decode()},
    }


@pytest.fixture
def api(kmock: Any) -> Any:
    """kmock declared as a cluster with the resources the operator touches (nothing in it yet)."""
    info = kmock.ResourceInfo
    verbs = ["get", "list", "watch", "create", "patch", "update", "delete"]
    kmock.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs=verbs)
    kmock.resources[CAS] = info(
        kind=KIND, singular="connectionautoscaler", namespaced=True, verbs=verbs, subresources=["status"]
    )
    kmock.resources[DEPLOYMENTS] = info(
        kind="Deployment", namespaced=True, verbs=verbs, subresources=["scale", "status"]
    )
    kmock.resources[PODS] = info(kind="Pod", namespaced=True, verbs=verbs, subresources=["status"])
    kmock.resources[SECRETS] = info(kind="Secret", namespaced=True, verbs=verbs)
    kmock.resources[EVENTS] = info(kind="Event", namespaced=True, verbs=verbs)
    kmock.resources[PEERINGS] = info(kind="KopfPeering", namespaced=True, verbs=verbs)
    kmock.objects["v1/namespaces", None, NS] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS, "uid": "uid-ns", "resourceVersion": "1"},
    }
    return kmock


def peering_object(name: str = "eventcast-operator") -> dict[str, Any]:
    """kopf's KopfPeering object, as the chart and k8s/ create it: an empty status kopf fills."""
    return {
        "apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}",
        "kind": "KopfPeering",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"},
    }


@pytest.fixture
async def operator(api: Any) -> AsyncIterator[Callable[..., Any]]:
    """Start the real operator against kmock: call the returned function once the objects are in.

    kopf cancels every task of its event loop that it did not find there at its start (the test's own, the
    WebSocket clients'), so it runs in a thread with a loop of its own, as kopf's docs advise for embedding;
    it reaches kmock over real HTTP like any client. Keyword arguments go to ``Options``.
    """
    stop = threading.Event()
    threads: list[threading.Thread] = []
    failures: list[BaseException] = []

    async def start(**options: Any) -> Any:
        server = str(api.url).rstrip("/")
        ready = threading.Event()

        def run() -> None:
            try:
                asyncio.run(
                    serve(
                        Options(namespaces=[NS], interval=INTERVAL, **options),
                        login=lambda **_: kopf.ConnectionInfo(server=server, insecure=True),
                        stop_flag=stop,
                        ready_flag=ready,
                    )
                )
            except BaseException as exc:  # reported by the fixture's teardown
                failures.append(exc)

        thread = threading.Thread(target=run, name="kopf-operator", daemon=True)
        threads.append(thread)
        thread.start()
        await eventually(ready.is_set, 15, "the operator to be ready")
        return api

    yield start
    stop.set()
    for thread in threads:
        await asyncio.to_thread(thread.join, 15)  # the loop keeps serving kmock meanwhile
        assert not thread.is_alive(), "the operator did not stop within 15 s"
    assert not failures, failures


class Service:
    """What a Kubernetes Service and reconnecting clients do together: a client closed with 1012 (drain or
    shed) reconnects at once, and the Service sends it to the next ready pod in turn (kube-proxy's IPVS
    round robin), the pod it left included."""

    def __init__(self, pods: Pods) -> None:
        self.pods = pods
        self.clients: list[Subscriber] = []
        self.reconnects = 0
        self._next = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, index: int, count: int) -> None:
        """``count`` clients straight to one pod (how an imbalance is made)."""
        url = f"{self.pods.gateways[index].ws}/ws/events?channels=c"
        for opened in await asyncio.gather(*(Subscriber.open(url) for _ in range(count))):
            self._follow(opened)

    def _follow(self, client: Subscriber) -> None:
        self.clients.append(client)
        self._tasks.append(asyncio.create_task(self._reconnect_when_shed(client)))

    async def _reconnect_when_shed(self, client: Subscriber) -> None:
        code, _ = await client.closed(timeout=3600)
        if code != 1012:
            return
        index = self._next % len(self.pods.gateways)
        self._next += 1
        self.reconnects += 1
        url = f"{self.pods.gateways[index].ws}/ws/events?channels=c&since={client.last_id}"
        self._follow(await Subscriber.open(url))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for client in self.clients:
            try:
                await client.close()
            except Exception:  # already closed by the server
                pass


async def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy (its exceptions count as not yet)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: BaseException | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            result = check()
            if result:
                return result
        except (KeyError, TypeError, AssertionError, httpx.HTTPError, ValueError) as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


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


class OperatorProcess:
    """`eventcast operator` as users run it: a separate process, logged in from a kubeconfig."""

    def __init__(self, api: Any, tmp_path: Path, *args: str) -> None:
        self.metrics_port = free_port()
        self.args = [*args, "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "EVENTCAST_"))}
        self.env["KUBECONFIG"] = str(kubeconfig(tmp_path / "kubeconfig", str(api.url).rstrip("/")))
        self.process: asyncio.subprocess.Process | None = None
        self.output = b""

    async def start(self) -> OperatorProcess:
        self.process = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "app.cli", "operator", "--namespace", NS, *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return self

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        self.output, _ = await asyncio.wait_for(self.process.communicate(), 30)
        return int(self.process.returncode or 0)

    def log(self) -> str:
        return self.output.decode(errors="replace")[-3000:]
