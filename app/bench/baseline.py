"""The naive FastAPI broadcast app that `eventcast bench --baseline` compares against.

It speaks the same protocol as the gateway (welcome frame, event frame shape, `POST /events` with one
event or a batch, `/healthz`, `/readyz`) but is written the way a first attempt usually is: a plain list of
connected websockets, and per event a loop doing `json.dumps` and `await ws.send_text(...)` for each client,
one after the other. No queues, no pre-encoding, no batching. Do not optimise it: it is the yardstick.

Run it with `python -m app.bench.baseline --port 8001`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

REPLICA = f"baseline-{uuid.uuid4().hex[:8]}"


def create_baseline_app() -> FastAPI:
    """One FastAPI app holding its clients in a list; every event is sent to every client in turn."""
    app = FastAPI(title="eventcast bench baseline (naive broadcast)")
    clients: list[tuple[WebSocket, frozenset[str]]] = []
    counters: dict[str, itertools.count[int]] = {}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.websocket("/ws/events")
    async def ws_events(ws: WebSocket) -> None:
        channels = frozenset((ws.query_params.get("channels") or "default").split(","))
        await ws.accept()
        welcome = {
            "type": "eventcast.welcome",
            "connection": uuid.uuid4().hex,
            "replica": REPLICA,
            "recovered": False,
            "position": "0",
            "channels": sorted(channels),
        }
        await ws.send_text(json.dumps(welcome))
        entry = (ws, channels)
        clients.append(entry)
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            clients.remove(entry)

    async def broadcast(event: dict[str, Any]) -> None:
        for ws, channels in list(clients):
            if event["channel"] in channels:
                try:
                    await ws.send_text(json.dumps(event))
                except Exception:  # a closed client must not stop the loop
                    pass

    @app.post("/events", status_code=202)
    async def publish(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": {"code": "bad_json", "message": "body is not JSON"}}, 400)
        items = body if isinstance(body, list) else [body]
        if not all(isinstance(item, dict) and isinstance(item.get("channel"), str) for item in items):
            return JSONResponse({"error": {"code": "invalid", "message": "need {channel, type, data}"}}, 422)
        ids: list[str] = []
        for item in items:
            channel = item["channel"]
            counter = counters.setdefault(channel, itertools.count(1))
            event = {
                "id": str(next(counter)),
                "channel": channel,
                "type": item.get("type", "message"),
                "data": item.get("data"),
                "ts": time.time() * 1000.0,
            }
            ids.append(event["id"])
            await broadcast(event)
        return {"ids": ids}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    uvicorn.run(create_baseline_app(), host=args.host, port=args.port, log_level="warning", backlog=4096)


if __name__ == "__main__":
    main()
