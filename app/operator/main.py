"""Registration and start-up only: kopf (login, peering keep-alives, liveness), the autoscaling loop beside it,
and the operator's /metrics. The work is in loop.py and handlers.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import start_http_server

from app.metrics import OperatorMetrics
from app.operator import constants
from app.operator.kube import KubeApi, LoginFn, default_login
from app.operator.loop import Autoscaling
from app.operator.peering import Peering, default_identity, default_priority

logger = logging.getLogger("eventcast.operator")


@dataclass(frozen=True, slots=True)
class Options:
    """What `eventcast operator` takes (app/cli.py); the defaults are the documented ones."""

    namespaces: Collection[str] = ()  # none: the whole cluster
    interval: float = constants.DEFAULT_INTERVAL_SECONDS
    liveness: str | None = None  # kopf's liveness endpoint, e.g. http://0.0.0.0:8080/healthz
    peering: str | None = None  # name of kopf's peering object; None runs standalone (always acts)
    identity: str = field(default_factory=default_identity)
    priority: int = field(default_factory=default_priority)
    peering_lifetime: int = constants.DEFAULT_PEERING_LIFETIME_SECONDS
    metrics_address: str = "0.0.0.0"
    metrics_port: int | None = None  # the operator's own /metrics; None serves none


def configure(settings: kopf.OperatorSettings, options: Options) -> None:
    """No scanning (no cluster-wide RBAC), quiet keep-alives, and the peering the options ask for."""
    settings.scanning.disabled = True  # the resources are known: no CRD or namespace discovery
    settings.peering.standalone = options.peering is None
    settings.peering.lifetime = options.peering_lifetime
    settings.peering.stealth = True  # no log line per keep-alive
    if options.peering is not None:
        settings.peering.name = options.peering
        settings.peering.mandatory = True
        settings.peering.priority = options.priority


def build_registry(kube: KubeApi, autoscaling: Autoscaling) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)  # type: ignore[misc]
    def login(**kwargs: Any) -> kopf.ConnectionInfo:
        return kube.login(**kwargs)

    @kopf.on.probe(id="autoscaling", registry=registry)  # type: ignore[misc]
    def probe(**_: Any) -> dict[str, Any]:
        """Liveness: fails (HTTP 500) when the loop has not finished a round for too long."""
        stuck = autoscaling.stuck_for()
        if stuck is not None:
            raise kopf.PermanentError(f"no autoscaling round for {stuck:.0f}s")
        return {
            "rounds": autoscaling.rounds,
            "leading": sorted(str(s) for s, on in autoscaling.leading.items() if on),
        }

    return registry


async def serve(
    options: Options,
    *,
    login: LoginFn = default_login,
    stop_flag: Any = None,
    ready_flag: Any = None,
    on_ready: Callable[[Autoscaling], None] | None = None,
) -> None:
    """Run kopf and the autoscaling loop until kopf stops (SIGINT/SIGTERM in the main thread, or ``stop_flag``)."""
    kube = KubeApi(login)
    metrics = OperatorMetrics()
    peering = Peering(kube, options.peering, options.identity) if options.peering else None
    autoscaling = Autoscaling(kube, options.namespaces, options.interval, metrics, peering)
    settings = kopf.OperatorSettings()
    configure(settings, options)
    server = None
    if options.metrics_port is not None:
        server, _ = start_http_server(
            options.metrics_port, options.metrics_address, registry=metrics.registry
        )
    stop = asyncio.Event()
    # Created before kopf starts, so kopf leaves it alone (it cancels the tasks it finds it did not start).
    loop_task = asyncio.create_task(autoscaling.run(stop), name="eventcast autoscaling loop")
    if on_ready is not None:
        on_ready(autoscaling)
    try:
        await kopf.operator(
            registry=build_registry(kube, autoscaling),
            settings=settings,
            identity=options.identity,  # type: ignore[arg-type]  # kopf's NewType of str
            namespaces=list(options.namespaces),
            clusterwide=not options.namespaces,
            liveness_endpoint=options.liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        stop.set()
        await loop_task
        await kube.close()
        if server is not None:
            server.shutdown()
            server.server_close()


def run(options: Options) -> None:
    """The ``eventcast operator`` command."""
    asyncio.run(serve(options))
