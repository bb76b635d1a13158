"""``eventcast bench --deflate``: what permessage-deflate costs, against the same gateway without it, in one run.

Two gateways are spawned in turn, the same in all but ``EVENTCAST_WS_PER_MESSAGE_DEFLATE``; the same number of
clients connect to each (offering permessage-deflate to the second) and stay idle, then the same events are
broadcast one at a time. Measured for each, median (and range) of ``runs``:

- memory per idle connection: the gateway's RSS above its idle baseline, divided by the clients;
- server CPU per single broadcast (user + system of the gateway process, over all the broadcasts of a run
  divided by their number: the kernel counts CPU in 10 ms ticks), and the time until the last client had it.

The clients count whole frames without inflating them (the server's cost is what is measured); one checker
client per gateway inflates every frame it gets and compares it with what was published. The section between
the markers ``<!-- deflate-table -->`` and ``<!-- /deflate-table -->`` of a Markdown file is rewritten.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

from app.bench import server as server_mod

SECTION_START = "<!-- deflate-table -->"
SECTION_END = "<!-- /deflate-table -->"
CHANNEL = "deflate"
EXTENSION = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def sample_event(n: int) -> dict[str, Any]:
    """A code-graph change of about 600 bytes of JSON: the repetitive kind compression is for."""
    return {
        "channel": CHANNEL,
        "type": "node.updated",
        "data": {
            "n": n,
            "repo": "github.com/example/service",
            "path": "src/service/handlers/orders.py",
            "node": {"kind": "function", "name": f"handle_order_{n}", "line": 120 + n, "calls": 7},
            "edges": [
                {"from": f"handle_order_{n}", "to": f"validate_{k}", "kind": "calls"} for k in range(5)
            ],
        },
    }


class CountingClient(asyncio.Protocol):
    """A subscriber that completes the upgrade and counts whole frames (no inflating unless ``checker``)."""

    def __init__(self, host: str, port: int, deflate: bool, checker: bool = False) -> None:
        self.request = (
            (
                f"GET /ws/events?channels={CHANNEL} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
            ).encode()
            + (EXTENSION if deflate else b"")
            + b"\r\n"
        )
        self.deflate = deflate
        self.checker = checker
        self.buffer = bytearray()
        self.upgraded = False
        self.negotiated = False
        self.frames = 0  # the welcome is frame 1
        self.payloads: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before the welcome: {exc}"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            if not head.startswith(b"http/1.1 101"):
                self.ready.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                return
            self.negotiated = b"permessage-deflate" in head
            del buffer[: end + 4]
            self.upgraded = True
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            length, header = buffer[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            if size - pos < header + length:
                break
            first = buffer[pos]
            if first & 0x0F in (0x1, 0x2):
                self.frames += 1
                if self.checker:
                    payload = bytes(buffer[pos + header : pos + header + length])
                    if first & 0x40:  # RSV1: a compressed message on its own (no context takeover)
                        payload = zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff")
                    self.payloads.append(payload)
                if self.frames == 1 and not self.ready.done():
                    self.ready.set_result(None)
            pos += header + length
        del buffer[:pos]


@dataclass
class ModeRun:
    memory_per_connection: float | None = None
    cpu_ms: list[float] = field(default_factory=list)
    to_last_ms: list[float] = field(default_factory=list)
    negotiated: int = 0
    errors: list[str] = field(default_factory=list)


async def measure(deflate: bool, clients: int, broadcasts: int, cpus: Sequence[int] | None) -> ModeRun:
    env = {"EVENTCAST_WS_PER_MESSAGE_DEFLATE": "true"} if deflate else {}
    server = server_mod.spawn_gateway(cpus=cpus, env=env)
    run = ModeRun()
    loop = asyncio.get_running_loop()
    conns: list[CountingClient] = []
    try:
        await server.wait_ready()
        await asyncio.sleep(1.0)
        baseline = server.process_rss()
        port = int(server.ws_url.rsplit(":", 1)[1].split("/", 1)[0])
        for index in range(clients):
            client = CountingClient("127.0.0.1", port, deflate, checker=index == 0)
            await loop.create_connection(lambda c=client: c, "127.0.0.1", port)  # type: ignore[misc]
            conns.append(client)
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in conns)), 120)
        await asyncio.sleep(2.0)  # settle: the RSS of idle connections
        after = server.process_rss()
        if baseline is not None and after is not None:
            run.memory_per_connection = (after - baseline) / clients
        run.negotiated = sum(c.negotiated for c in conns)
        async with httpx.AsyncClient(timeout=30) as http:
            # CPU is read in clock ticks (10 ms): the broadcasts are timed together, and divided.
            first_cpu = server.process_cpu_seconds()
            for n in range(broadcasts):
                started = time.perf_counter()
                event = sample_event(n)
                response = await http.post(server.publish_url, json=event)
                if response.status_code != 202:
                    run.errors.append(f"publish answered {response.status_code}")
                    break
                deadline = time.monotonic() + 30
                while any(c.frames < n + 2 for c in conns):
                    if time.monotonic() > deadline:
                        run.errors.append(f"broadcast {n} did not reach every client in 30 s")
                        return run
                    await asyncio.sleep(0.001)
                run.to_last_ms.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.3)  # the gateway is idle again
            last_cpu = server.process_cpu_seconds()
            if first_cpu is not None and last_cpu is not None and run.to_last_ms:
                run.cpu_ms.append((last_cpu - first_cpu) * 1000 / len(run.to_last_ms))
        checker = conns[0]
        got = [json.loads(p) for p in checker.payloads[1:]]
        if [g.get("data") for g in got] != [sample_event(n)["data"] for n in range(len(got))]:
            run.errors.append("the checker client did not get the events as published")
    finally:
        for client in conns:
            if client.transport is not None:
                client.transport.abort()
        await server.stop()
    return run


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


async def execute(runs: int, clients: int, broadcasts: int, cpus: Sequence[int] | None) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {"plain": [], "deflate": []}
    for _ in range(runs):
        for mode in ("plain", "deflate"):
            run = await measure(mode == "deflate", clients, broadcasts, cpus)
            results[mode].append(
                {
                    "memory_per_connection": run.memory_per_connection,
                    "cpu_ms": _median(run.cpu_ms),
                    "to_last_ms": _median(run.to_last_ms),
                    "negotiated": run.negotiated,
                    "errors": run.errors,
                }
            )
    return {"clients": clients, "broadcasts": broadcasts, "runs": runs, "results": results}


def _spread(values: list[float | None], digits: int, scale: float = 1.0) -> str:
    found = [v * scale for v in values if v is not None]
    if not found:
        return "-"
    median = statistics.median(found)
    return f"{median:,.{digits}f} ({min(found):,.{digits}f}-{max(found):,.{digits}f})"


def markdown(report: dict[str, Any]) -> str:
    plain, deflate = report["results"]["plain"], report["results"]["deflate"]
    lines = [
        f"{report['clients']:,} idle clients, then {report['broadcasts']} single broadcasts of a ~600-byte "
        f"JSON event; median (min-max) of {report['runs']} runs, each mode a fresh gateway.",
        "",
        "| figure | without compression | with permessage-deflate | ratio (medians) |",
        "|---|---|---|---|",
    ]
    for key, label, digits, scale in (
        ("memory_per_connection", "memory per idle connection (KB)", 2, 1 / 1024),
        ("cpu_ms", "server CPU per single broadcast (ms)", 1, 1.0),
        ("to_last_ms", "time until the last client has it (ms)", 1, 1.0),
    ):
        a = [r[key] for r in plain]
        b = [r[key] for r in deflate]
        ma = statistics.median([v for v in a if v is not None]) if any(v is not None for v in a) else None
        mb = statistics.median([v for v in b if v is not None]) if any(v is not None for v in b) else None
        ratio = f"{mb / ma:.2f}x" if ma and mb else "-"
        lines.append(f"| {label} | {_spread(a, digits, scale)} | {_spread(b, digits, scale)} | {ratio} |")
    negotiated = [r["negotiated"] for r in deflate]
    lines += [
        "",
        f"Clients that negotiated permessage-deflate: {negotiated} of {report['clients']:,} per run.",
    ]
    problems = [e for r in plain + deflate for e in r["errors"]]
    if problems:
        lines += ["", *[f"- {p}" for p in problems]]
    return "\n".join(lines) + "\n"


def rewrite_section(document: str, section: str) -> str:
    lines = document.split("\n")
    starts = [i for i, line in enumerate(lines) if line.strip() == SECTION_START]
    ends = [i for i, line in enumerate(lines) if line.strip() == SECTION_END]
    block = [SECTION_START, *section.rstrip("\n").split("\n"), SECTION_END]
    if len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0]:
        return "\n".join(lines[: starts[0]] + block + lines[ends[0] + 1 :])
    heading = ["", "## permessage-deflate, compressed once per event (`make bench-deflate`)", ""]
    return document.rstrip("\n") + "\n" + "\n".join([*heading, *block]) + "\n"


def write_doc(path: Path, report: dict[str, Any]) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(rewrite_section(text, markdown(report)))
