"""Fixtures of the bench tests: servers started as real processes on 127.0.0.1 and free ports."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.bench import server as server_mod

# A test double of the SERVER: the gateway's protocol, but every 10th event of each connection is dropped.
DROPPING_SERVER = textwrap.dedent(
    """
    import json, sys, time, uvicorn
    from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect

    app = FastAPI()
    clients = []
    sequence = [0]

    @app.get("/readyz")
    async def readyz():
        return {"ready": True}

    @app.websocket("/ws/events")
    async def events(ws: WebSocket):
        await ws.accept()
        await ws.send_text(json.dumps({"type": "eventcast.welcome", "connection": "c", "replica": "drop",
                                       "recovered": False, "position": "0"}))
        entry = {"ws": ws, "events": 0}
        clients.append(entry)
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            clients.remove(entry)

    @app.post("/events", status_code=202)
    async def publish(request: Request):
        body = await request.json()
        ids = []
        for item in body if isinstance(body, list) else [body]:
            sequence[0] += 1
            frame = json.dumps({"id": str(sequence[0]), "channel": item["channel"], "type": item["type"],
                                "data": item["data"], "ts": time.time() * 1000.0})
            ids.append(str(sequence[0]))
            for entry in list(clients):
                entry["events"] += 1
                if entry["events"] % 10 == 0:
                    continue  # the fault under test: every 10th event of a connection is lost
                try:
                    await entry["ws"].send_text(frame)
                except Exception:
                    pass
        return {"ids": ids}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def _wait_ready(server: server_mod.ServerUnderTest) -> None:
    async def wait() -> None:
        try:
            await server.wait_ready(30.0)
        finally:
            client, server._client = server._client, None
            if client is not None:
                await client.aclose()

    asyncio.run(wait())


@pytest.fixture(scope="module")
def dropping_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ws:// URL of a server that loses every 10th event of each connection."""
    script = Path(tmp_path_factory.mktemp("double")) / "dropping_server.py"
    script.write_text(DROPPING_SERVER)
    port = server_mod.free_port()
    process = subprocess.Popen([sys.executable, str(script), str(port)])
    url = f"ws://127.0.0.1:{port}/ws/events"
    try:
        _wait_ready(server_mod.remote(url, None, None))
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def baseline_url() -> Iterator[str]:
    """ws:// URL of the naive baseline app, started as its own process."""
    server = server_mod.spawn_baseline()
    try:
        _wait_ready(server)
        yield server.ws_url
    finally:
        asyncio.run(server.stop())
