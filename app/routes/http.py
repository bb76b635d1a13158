"""HTTP endpoints: publish, health, readiness, admin (drain, shed) and metrics."""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app import metrics
from app.broker.base import BrokerUnavailable
from app.hub import Hub
from app.observability import INTERNAL_SCOPE_KEY
from app.protocol import PublishError, admin_fraction, admin_seconds, parse_publish_body
from app.security import Security
from app.settings import Settings

router = APIRouter()


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    status, body, extra = error_body(status, code, message, headers)
    return JSONResponse(body, status_code=status, headers=extra)


class PublishEndpoint:
    """``POST /events`` as a plain ASGI app: FastAPI's request/response wrapping cost more than the publish.

    Answers 202 ``{"ids": [...]}`` once the broker accepted every event, or a JSON error (400, 401, 403, 413,
    415, 422, 429, 503); nothing of a refused request is accepted.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        headers = Headers(scope=scope)
        status, payload, extra = await self.handle(state, headers, scope, receive)
        body = json.dumps(payload, separators=(",", ":")).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def handle(
        state: Any, headers: Headers, scope: Scope, receive: Receive
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        settings: Settings = state.settings
        security: Security = state.security
        if headers.get("content-type", "").startswith("multipart/"):
            return error_body(415, "unsupported_media_type", "send the events as a JSON body")
        client = scope.get("client")
        try:
            publisher = security.admit_publisher(headers, client[0] if client else "")
            body = await read_body(headers, receive, settings.max_publish_bytes)
            events = parse_publish_body(body, settings.max_batch_events)
            security.check_publish(publisher, events)
            ids = await state.hub.publish(events)
        except PublishError as exc:
            return error_body(exc.status, exc.code, exc.message, getattr(exc, "headers", None))
        except BrokerUnavailable:
            return error_body(
                503,
                "broker_unavailable",
                "the broker is unavailable; nothing was accepted",
                {"Retry-After": "1"},
            )
        return 202, {"ids": ids}, {}


def error_body(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    return status, {"error": {"code": code, "message": message}}, headers or {}


async def read_body(headers: Headers, receive: Receive, limit: int) -> bytes:
    """The request body, refusing (413) past ``limit`` bytes without reading it all."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PublishError(413, "body_too_large", f"the body may be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise PublishError(400, "incomplete_body", "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PublishError(413, "body_too_large", f"the body may be at most {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


router.routes.append(Route("/events", PublishEndpoint(), methods=["POST"]))


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    hub: Hub = request.app.state.hub
    broker_up = await hub.broker.ping()
    ready = hub.ready  # ping() has just refreshed the broker's state
    body = {"ready": ready, "broker": "up" if broker_up else "down", "draining": hub.draining}
    return JSONResponse(body, status_code=200 if ready else 503)


def admin_denied(request: Request) -> JSONResponse | None:
    """None when the request may use /admin/*: it carries the admin token, or no token is set and it came
    through the internal port, or the public port was opened on purpose (EVENTCAST_ADMIN_OPEN)."""
    settings: Settings = request.app.state.settings
    token = settings.admin_token
    if not token:
        if request.scope.get(INTERNAL_SCOPE_KEY) or settings.admin_open:
            return None
        return error(
            403,
            "admin_closed",
            "admin endpoints need EVENTCAST_ADMIN_TOKEN, or the internal port (EVENTCAST_INTERNAL_PORT), "
            "or EVENTCAST_ADMIN_OPEN=true",
        )
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return error(401, "unauthorized", "admin endpoints need 'Authorization: Bearer <admin token>'")
    return None


async def json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body:
        return {}
    try:
        decoded = json.loads(body)
    except ValueError:
        raise PublishError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(decoded, dict):
        raise PublishError(422, "invalid_body", "the body must be a JSON object")
    return decoded


def seconds_field(body: dict[str, Any], default: float) -> float:
    try:
        return admin_seconds(body.get("seconds", default))
    except ValueError as exc:
        raise PublishError(422, "invalid_seconds", str(exc)) from None


@router.post("/admin/drain", status_code=202)
async def admin_drain(request: Request) -> JSONResponse:
    """Drain the pod: every worker of this ``eventcast serve`` (through the broker when there are several)."""
    if (denied := admin_denied(request)) is not None:
        return denied
    hub: Hub = request.app.state.hub
    try:
        seconds = seconds_field(await json_object(request), request.app.state.settings.drain_seconds)
        connections = metrics.pod_connections(hub)
        await hub.request_drain(seconds)
    except PublishError as exc:
        return error(exc.status, exc.code, exc.message)
    except BrokerUnavailable:
        return broker_down("no worker was asked to drain")
    return JSONResponse({"draining": True, "connections": connections, "seconds": seconds}, status_code=202)


@router.post("/admin/shed", status_code=202)
async def admin_shed(request: Request) -> JSONResponse:
    """Close a fraction of the pod's clients with 1012 (every worker's share, when there are several).

    ``shed`` is the count closed by this worker alone, or, with several workers, the pod's expected count
    (``fraction`` of its connections), since the others close theirs as the command reaches them.
    """
    if (denied := admin_denied(request)) is not None:
        return denied
    hub: Hub = request.app.state.hub
    try:
        body = await json_object(request)
        try:
            fraction = admin_fraction(body.get("fraction"))
        except ValueError as exc:
            raise PublishError(422, "invalid_fraction", str(exc)) from None
        seconds = seconds_field(body, 0.0)
        connections = metrics.pod_connections(hub)
        shed = await hub.request_shed(fraction, seconds)
    except PublishError as exc:
        return error(exc.status, exc.code, exc.message)
    except BrokerUnavailable:
        return broker_down("no worker was asked to shed")
    if shed is None:
        shed = round(connections * fraction)
    return JSONResponse({"shed": shed, "connections": connections}, status_code=202)


def broker_down(what: str) -> JSONResponse:
    return error(503, "broker_unavailable", f"the broker is unavailable: {what}", {"Retry-After": "1"})


@router.get("/metrics")
async def metrics_endpoint(request: Request) -> Response:
    return Response(metrics.render(request.app.state.hub), media_type=metrics.CONTENT_TYPE)
