"""How many frames per second one load-generator process takes in, per core of its CPU, for each subscriber
implementation, on the same traffic: `python -m app.bench.framerate [--clients 100] [--frames 20000]`.

A frame source (a bare uvloop server in its own process, on core 0 when there are two) upgrades every
connection, sends a welcome, and on a signal writes the same pre-built run of gateway-shaped event frames
(phase, seq 0..frames-1, ts, ~200 bytes) to every connection at once: it writes bytes it built beforehand,
so it is never the limit. One load-generator process (the bench's own worker, on the other core) holds the
clients; the figure is frames counted by the bench's per-client bookkeeping divided by that process's CPU
seconds (user + system) from the signal until every client had every frame, and the counts must be exact
(every frame once, in order, none lost). Nothing here touches the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from app.bench.client import WS_GUID
from app.bench.server import free_port
from app.bench.workers import (
    CloseAll,
    Collect,
    Connect,
    PhaseResult,
    StartPhase,
    WorkerPool,
    raise_file_limit,
)

CLIENTS = ("raw", "picows")
COUNTING = ("auto", "python")


def text_frame(payload: bytes) -> bytes:
    """An unmasked server text frame."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + length.to_bytes(8, "big") + payload


def event_frames(phase_id: int, frames: int, event_bytes: int = 200) -> bytes:
    """`frames` gateway-shaped event frames, seq 0..frames-1, concatenated."""
    pad = "x" * max(0, event_bytes - 150)
    now = time.time() * 1000.0
    parts = []
    for seq in range(frames):
        envelope = {
            "id": str(seq + 1),
            "channel": "bench",
            "type": "bench.tick",
            "data": {"bench": phase_id, "seq": seq, "pad": pad},
            "ts": now,
        }
        parts.append(text_frame(json.dumps(envelope, separators=(",", ":")).encode()))
    return b"".join(parts)


class _Source(asyncio.Protocol):
    def __init__(self, connections: list[_Source]) -> None:
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.upgraded or self.transport is None:
            return  # the client's close frame, if any
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        key = b""
        for line in bytes(self.head).split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + text_frame(b'{"type":"eventcast.welcome"}')
        )
        self.upgraded = True
        self.connections.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(ValueError):
            self.connections.remove(self)


def _source_main(conn: multiprocessing.connection.Connection, port: int, cpus: Sequence[int] | None) -> None:
    """The frame source: serve upgrades; on ("send", phase, frames) write the frames to every connection."""
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    raise_file_limit()
    import uvloop

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        connections: list[_Source] = []
        server = await loop.create_server(lambda: _Source(connections), "127.0.0.1", port, backlog=4096)
        conn.send("ready")
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command[0] == "stop":
                break
            _, phase_id, frames = command
            blob = event_frames(phase_id, frames)
            conn.send(len(connections))
            for source in list(connections):
                if source.transport is not None:
                    source.transport.write(blob)
        server.close()

    uvloop.run(serve())


@dataclass
class FrameRate:
    """One client implementation on the source's traffic."""

    client: str
    counting: str  # auto: the C bookkeeping (fastcount); python: the Tracker
    clients: int
    frames_per_client: int
    frames: int  # counted by the bench's bookkeeping
    lost: int
    duplicated: int
    out_of_order: int
    wall_s: float
    load_cpu_s: float
    load_user_s: float  # the process's own work: Python, the WebSocket layer, the bookkeeping
    load_sys_s: float  # the kernel's for it: receiving from the socket
    frames_per_s: float  # wall clock
    frames_per_cpu_s: float  # per core of the load process's CPU


async def measure(
    client: str,
    clients: int,
    frames: int,
    source_cpus: Sequence[int] | None,
    load_cpus: Sequence[int] | None,
    counting: str = "auto",
) -> FrameRate:
    """Connect `clients` of one implementation to a fresh source, send, and count."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    port = free_port()
    source = context.Process(target=_source_main, args=(child, port, source_cpus), daemon=True)
    source.start()
    pool = WorkerPool(1, load_cpus)
    loop = asyncio.get_running_loop()
    try:
        if not await loop.run_in_executor(None, parent.poll, 30.0):
            raise RuntimeError("frame source did not start")
        parent.recv()
        url = f"ws://127.0.0.1:{port}/"
        [connected] = await pool.connect(
            clients, Connect(clients, url, None, 10.0, 200, (), client, True, counting)
        )
        if connected.live != clients:
            raise RuntimeError(f"{clients - connected.live} clients failed: {connected.failures}")
        phase_id = int(time.time()) % 100000
        await pool.broadcast(StartPhase(phase_id, 1))
        worker = psutil.Process(pool.pids[0])
        before = worker.cpu_times()
        started = time.monotonic()
        parent.send(("send", phase_id, frames))
        deadline = started + 120.0
        while time.monotonic() < deadline:
            progress = pool.read_progress()
            if progress.live == clients and progress.min_unique >= frames:
                break
            await asyncio.sleep(0.005)
        wall = time.monotonic() - started
        after = worker.cpu_times()
        user, system = after.user - before.user, after.system - before.system
        cpu = user + system
        [result] = await pool.broadcast(Collect(frames))
        assert isinstance(result, PhaseResult)
        await pool.broadcast(CloseAll(), timeout=60.0)
        parent.send(("stop",))
    finally:
        await pool.stop()
        source.join(timeout=5.0)
        if source.is_alive():
            source.kill()
    counted = result.unique
    return FrameRate(
        client=client,
        counting=counting,
        clients=clients,
        frames_per_client=frames,
        frames=counted,
        lost=result.lost,
        duplicated=result.duplicated,
        out_of_order=result.out_of_order,
        wall_s=round(wall, 3),
        load_cpu_s=round(cpu, 3),
        load_user_s=round(user, 3),
        load_sys_s=round(system, 3),
        frames_per_s=round(counted / wall) if wall else 0.0,
        frames_per_cpu_s=round(counted / cpu) if cpu else 0.0,
    )


def plan_cpus() -> tuple[list[int] | None, list[int] | None]:
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[:1], available[1:2]


async def measure_all(
    clients: int, frames: int, kinds: Sequence[str] = CLIENTS, countings: Sequence[str] = ("auto",)
) -> list[FrameRate]:
    source_cpus, load_cpus = plan_cpus()
    return [
        await measure(kind, clients, frames, source_cpus, load_cpus, counting)
        for counting in countings
        for kind in kinds
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--frames", type=int, default=20_000, help="frames per client")
    parser.add_argument("--client", action="append", choices=CLIENTS, help="default: every implementation")
    parser.add_argument(
        "--counting",
        action="append",
        choices=COUNTING,
        help="bookkeeping in C (auto) or Python; default: auto",
    )
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    raise_file_limit()
    rows: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        countings = args.counting or ["auto"]
        for rate in asyncio.run(measure_all(args.clients, args.frames, args.client or CLIENTS, countings)):
            rows.append(asdict(rate))
            print(
                f"{rate.client:>7} ({rate.counting} counting): {rate.frames:,} frames to {rate.clients} clients in {rate.wall_s:.2f} s, "
                f"load process CPU {rate.load_cpu_s:.2f} s (user {rate.load_user_s:.2f}, system "
                f"{rate.load_sys_s:.2f}): {rate.frames_per_cpu_s:,.0f} frames per CPU second "
                f"({rate.frames_per_s:,.0f}/s wall); lost {rate.lost}, duplicated {rate.duplicated}, "
                f"out of order {rate.out_of_order}",
                flush=True,
            )


if __name__ == "__main__":
    main()
