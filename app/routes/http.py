"""HTTP endpoints: publish, health, readiness, admin (drain, shed) and metrics."""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app import metrics
from app.broker.base import BrokerUnavailable
from app.hub import Hub
from app.protocol import PublishError, parse_publish_body
from app.security import Security
from app.settings import Settings

router = APIRouter()


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) past ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PublishError(413, "body_too_large", f"the body may be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PublishError(413, "body_too_large", f"the body may be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/events", status_code=202)
async def publish(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    settings: Settings = request.app.state.settings
    if request.headers.get("content-type", "").startswith("multipart/"):
        return error(415, "unsupported_media_type", "send the events as a JSON body")
    security: Security = request.app.state.security
    try:
        publisher = security.admit_publisher(request.headers, request.client.host if request.client else "")
        events = parse_publish_body(
            await read_body(request, settings.max_publish_bytes), settings.max_batch_events
        )
        security.check_publish(publisher, events)
        ids = await hub.publish(events)
    except PublishError as exc:
        return error(exc.status, exc.code, exc.message, getattr(exc, "headers", None))
    except BrokerUnavailable:
        return error(
            503, "broker_unavailable", "the broker is unavailable; nothing was accepted", {"Retry-After": "1"}
        )
    return JSONResponse({"ids": ids}, status_code=202)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    hub: Hub = request.app.state.hub
    broker_up = await hub.broker.ping()
    ready = broker_up and not hub.draining
    body = {"ready": ready, "broker": "up" if broker_up else "down", "draining": hub.draining}
    return JSONResponse(body, status_code=200 if ready else 503)


def admin_denied(request: Request) -> JSONResponse | None:
    token = request.app.state.settings.admin_token
    if not token:
        return None
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
    value = body.get("seconds", default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 3600:
        raise PublishError(422, "invalid_seconds", "seconds must be a number from 0 to 3600")
    return float(value)


@router.post("/admin/drain", status_code=202)
async def admin_drain(request: Request) -> JSONResponse:
    if (denied := admin_denied(request)) is not None:
        return denied
    hub: Hub = request.app.state.hub
    try:
        seconds = seconds_field(await json_object(request), request.app.state.settings.drain_seconds)
    except PublishError as exc:
        return error(exc.status, exc.code, exc.message)
    connections = len(hub.connections)
    hub.start_drain(seconds)
    return JSONResponse({"draining": True, "connections": connections, "seconds": seconds}, status_code=202)


@router.post("/admin/shed", status_code=202)
async def admin_shed(request: Request) -> JSONResponse:
    if (denied := admin_denied(request)) is not None:
        return denied
    hub: Hub = request.app.state.hub
    try:
        body = await json_object(request)
        fraction = body.get("fraction")
        if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0 < fraction <= 1:
            raise PublishError(422, "invalid_fraction", "fraction must be a number in (0, 1]")
        seconds = seconds_field(body, 0.0)
    except PublishError as exc:
        return error(exc.status, exc.code, exc.message)
    shed = await hub.shed(float(fraction), seconds)
    return JSONResponse({"shed": shed, "connections": len(hub.connections)}, status_code=202)


@router.get("/metrics")
async def metrics_endpoint(request: Request) -> Response:
    return Response(metrics.render(request.app.state.hub), media_type=metrics.CONTENT_TYPE)
