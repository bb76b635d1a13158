"""The browser side, served from the package (no Node at run time): ``/client.js`` and the ``/console`` page.

``/client.js`` is the TypeScript client built into one ES module (``clients/js``, committed as
``app/static/client.js``); any origin may load it (CORS ``*``: it is public code, fetched without credentials).
``/console`` (the page, its script and style) and ``/console/stats`` (its live counts) answer 404 when
``EVENTCAST_CONSOLE=false``. docs/clients.md describes both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app import metrics
from app.hub import Hub
from app.routes.http import error
from app.security import Security
from app.settings import Settings

router = APIRouter()


@dataclass(frozen=True, slots=True)
class Asset:
    """A static file of the package, read once, with its ETag."""

    body: bytes
    media_type: str
    etag: str

    @classmethod
    def load(cls, name: str, media_type: str) -> Asset:
        body = resources.files("app").joinpath("static", name).read_bytes()
        return cls(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def response(self, request: Request, headers: dict[str, str]) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": "no-cache", **headers}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


JAVASCRIPT = "text/javascript; charset=utf-8"
CLIENT = Asset.load("client.js", JAVASCRIPT)
CONSOLE = {
    "": Asset.load("console.html", "text/html; charset=utf-8"),
    "console.js": Asset.load("console.js", JAVASCRIPT),
    "console.css": Asset.load("console.css", "text/css; charset=utf-8"),
}

#: The page loads only its own script and style, and talks only to this gateway (WebSocket included).
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def console_disabled(request: Request) -> JSONResponse | None:
    settings: Settings = request.app.state.settings
    if settings.console:
        return None
    return error(404, "not_found", "the console is turned off on this gateway (EVENTCAST_CONSOLE=false)")


@router.get("/client.js")
async def client_js(request: Request) -> Response:
    return CLIENT.response(request, {"Access-Control-Allow-Origin": "*", "X-Content-Type-Options": "nosniff"})


@router.get("/console")
async def console_page(request: Request) -> Response:
    return console_disabled(request) or CONSOLE[""].response(request, CONSOLE_HEADERS)


@router.get("/console/stats")
async def console_stats(request: Request) -> Response:
    """The console's live counts: a few bounded numbers about this pod, nothing about any client or channel."""
    if (disabled := console_disabled(request)) is not None:
        return disabled
    hub: Hub = request.app.state.hub
    security: Security = request.app.state.security
    settings: Settings = request.app.state.settings
    body = {
        "replica": settings.replica,
        **metrics.pod_counts(hub),
        "broker": "up" if await hub.broker.ping() else "down",
        "draining": hub.draining,
        "publish_auth": security.auth.publishers_need_auth,
        "subscribe_auth": security.auth.subscribers_need_auth,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/console/{name}")
async def console_asset(name: str, request: Request) -> Response:
    asset = CONSOLE.get(name) if name else None
    if asset is None:
        return error(404, "not_found", "Not Found")
    return console_disabled(request) or asset.response(request, CONSOLE_HEADERS)
