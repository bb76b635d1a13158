"""Wiring of metrics, tracing and the internal port into the app's lifespan (one call in, one call out).

The internal port (``EVENTCAST_INTERNAL_PORT``): a second uvicorn server inside each worker, on its own socket,
serving the same app but only ``/metrics``, ``/admin/*`` and the probes; the public port answers 404 for
``/metrics`` and ``/admin/*``. Every worker binds the port with SO_REUSEPORT, so with ``--workers N`` the
kernel spreads internal requests over the workers like the public ones (``/metrics`` reports the whole pod
from any of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics, telemetry
from app.causes import CloseCode
from app.hub import Hub
from app.settings import Settings

log = logging.getLogger("eventcast.observability")

#: Set in the ASGI scope of every request that came in through the internal port.
INTERNAL_SCOPE_KEY = "eventcast.internal"
PROBES = ("/healthz", "/readyz")


def internal_only(path: str) -> bool:
    return path == "/metrics" or path.startswith("/admin/")


class PortGuard:
    """With an internal port: 404 for /metrics and /admin/* on the public port, and for the rest on the internal."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if scope.get(INTERNAL_SCOPE_KEY):
                allowed = internal_only(path) or path in PROBES
            else:
                allowed = not internal_only(path)
            if not allowed:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": CloseCode.POLICY, "reason": "not found"})
                else:
                    body = {"error": {"code": "not_found", "message": "Not Found"}}
                    await JSONResponse(body, status_code=404)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _MarkInternal:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[INTERNAL_SCOPE_KEY] = True
        await self.app(scope, receive, send)


class _InternalServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the public server owns the signals (and the drain on SIGTERM wraps its handler)


def install(app: FastAPI, settings: Settings) -> None:
    """Middlewares, added in create_app: the port guard, and the trace-context reader when tracing may be on."""
    if settings.internal_port is not None:
        app.add_middleware(PortGuard)
    if telemetry.enabled(settings) or telemetry.tracer is not None:
        app.add_middleware(telemetry.TraceContextMiddleware)


@dataclass
class Running:
    """What ``start`` started, for ``stop`` to undo."""

    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    internal: _InternalServer | None = None

    async def stop(self) -> None:
        if self.internal is not None:
            self.internal.should_exit = True
        for task in self.tasks:
            if self.internal is None or task.get_name() != "eventcast-internal-port":
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)
        telemetry.shutdown()


async def start(app: FastAPI, hub: Hub, settings: Settings) -> Running:
    """Called by the lifespan once the hub is up."""
    running = Running()
    metrics.take_baseline()
    metrics.latency_sample_every = settings.latency_sample_every
    telemetry.setup(settings)
    if metrics.MULTIPROCESS:
        running.tasks.append(
            asyncio.create_task(
                metrics.keep_fresh(hub, settings.metrics_refresh_seconds), name="eventcast-metrics"
            )
        )
    if settings.internal_port is not None:
        running.internal, task = await serve_internal(
            app, settings.internal_host or settings.host, settings.internal_port
        )
        running.tasks.append(task)
    return running


async def serve_internal(app: ASGIApp, host: str, port: int) -> tuple[_InternalServer, asyncio.Task[None]]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # every worker of the pod binds it
    sock.bind((host, port))
    config = uvicorn.Config(_MarkInternal(app), interface="asgi3", lifespan="off", log_config=None)
    server = _InternalServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="eventcast-internal-port")
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # raise what stopped it
        raise RuntimeError(f"the internal port {host}:{port} did not start")
    log.info("internal port up", extra={"event": "internal.up", "host": host, "port": port})
    return server, task
