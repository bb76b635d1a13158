"""The operator end to end: kmock is the Kubernetes API, real `eventcast serve` processes are the pods."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import kopf
import pytest

from app.operator.constants import GROUP, KIND, PLURAL, VERSION
from app.operator.kube import KubeApi
from app.operator.main import build_registry, configure
from app.operator.metrics import parse_connections
from tests.servers import Gateway, free_port

NS = "ns1"
CAS = f"{GROUP}/{VERSION}/{PLURAL}"
DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
SECRETS = "v1/secrets"
EVENTS = "v1/events"
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
    """Real gateways on 127.0.0.2, .3, ... sharing one internal (metrics/admin) port, with the admin token set."""

    def __init__(self, count: int) -> None:
        self.hosts = [f"127.0.0.{n}" for n in range(2, 2 + count)]
        self.metrics_port = shared_internal_port(self.hosts)
        env = {"EVENTCAST_INTERNAL_PORT": str(self.metrics_port), "EVENTCAST_ADMIN_TOKEN": ADMIN_TOKEN}
        self.gateways = [Gateway(host=host, env=env) for host in self.hosts]

    def start(self) -> None:
        for gateway in self.gateways:
            gateway.start()

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()

    def connections(self, index: int) -> int:
        url = f"http://{self.hosts[index]}:{self.metrics_port}/metrics"
        return parse_connections(httpx.get(url, timeout=5).text)


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
    kmock.objects["v1/namespaces", None, NS] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS, "uid": "uid-ns", "resourceVersion": "1"},
    }
    return kmock


@pytest.fixture
async def operator(api: Any) -> AsyncIterator[Callable[[], Any]]:
    """Start the real operator against kmock: call the returned function once the objects are in.

    kopf cancels every task of its event loop that it did not find there at its start (the test's own, the
    WebSocket clients'), so it runs in a thread with a loop of its own, as kopf's docs advise for embedding;
    it reaches kmock over real HTTP like any client.
    """
    stop = threading.Event()
    threads: list[threading.Thread] = []
    failures: list[BaseException] = []

    async def start() -> Any:
        server = str(api.url).rstrip("/")
        kube = KubeApi(login=lambda **_: kopf.ConnectionInfo(server=server, insecure=True))
        settings = kopf.OperatorSettings()
        configure(settings)
        ready = threading.Event()

        def run() -> None:
            try:
                asyncio.run(
                    kopf.operator(
                        registry=build_registry(kube, INTERVAL),
                        settings=settings,
                        standalone=True,
                        namespaces=[NS],
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
