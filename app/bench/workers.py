"""Load-generator worker processes and the pool that drives them.

Each worker is a separate process (so subscribers use every core given to the load generator) running one
asyncio loop (uvloop when available) with thousands of `RawClient`s. The parent sends it one command at a
time over a pipe and gets one reply; while a phase runs, each worker also publishes its progress (the
lowest "highest sequence seen" and the lowest count of distinct events over its live clients) in shared
memory, which the parent reads to pace publishing without a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from app.bench import fastcount
from app.bench.client import LibraryClient, Phase, Target, Tracker, open_raw
from app.bench.fastcount import CPhase, CTracker

PROGRESS_SLOTS = 3  # per worker: min max_seq, min unique count, live clients
PROGRESS_INTERVAL_S = 0.02
COMMAND_TIMEOUT_S = 600.0
CLIENTS_PER_PROCESS = 15_000  # stays below a 20k open-file limit per load process


# Commands (parent -> worker) and replies --------------------------------------------------------------------
@dataclass(frozen=True)
class Connect:
    count: int
    url: str
    token: str | None
    timeout_s: float
    concurrency: int
    local_hosts: tuple[str, ...] = ()
    client: str = "raw"  # raw | picows | websockets
    welcome: int = 1  # frames before the events: eventcast's welcome, none (nchan), two (socket.io)
    counting: str = "auto"  # auto: in C (fastcount) when it builds, for raw and picows; python: the Tracker
    greeting: bytes = b""  # a text frame each client sends once upgraded (socket.io joins its namespace)


@dataclass
class ConnectResult:
    connect_ms: list[float]
    failures: dict[str, int]
    live: int


@dataclass(frozen=True)
class StartPhase:
    phase_id: int
    streams: int = 1


@dataclass(frozen=True)
class Collect:
    expected: int


@dataclass
class PhaseResult:
    clients: int  # clients at the start of the phase
    disconnected: int  # of those, closed before the end
    expected: int
    unique: int
    duplicated: int
    out_of_order: int
    lost: int
    stray: int
    histogram: list[int]
    close_codes: dict[str, int]  # clients lost during the phase, by the server's close code
    latency_sum_ms: float
    latency_max_ms: float
    event_ts: list[float]
    first_arrival: list[float]
    last_arrival: list[float]
    arrivals: list[int]


@dataclass(frozen=True)
class CloseAll:
    pass


@dataclass(frozen=True)
class Stop:
    pass


Command = Connect | StartPhase | Collect | CloseAll | Stop


def raise_file_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


@dataclass
class WorkerState:
    index: int
    progress: SynchronizedArray[Any]
    clients: set[Any] = field(default_factory=set)
    phase: Phase | CPhase = field(default_factory=Phase)
    phase_trackers: list[Any] = field(default_factory=list)  # Tracker, or CTracker with the C counter
    counter: int = 0
    counting: str = "python"  # "c": raw and picows clients count in C (fastcount), from the first Connect
    close_codes: Counter[str] = field(
        default_factory=Counter
    )  # clients the server cut in this phase, by code
    closing: bool = False  # the bench itself is closing its clients

    def lost_client(self, client: Any) -> None:
        if client in self.clients and not self.closing:
            code = getattr(client, "close_code", None)
            self.close_codes[str(code) if code is not None else "no close frame"] += 1
        self.clients.discard(client)

    def new_tracker(self, welcome: int) -> Tracker | CTracker:
        phase = self.phase
        if isinstance(phase, CPhase):
            return CTracker(phase, welcome)
        return Tracker(phase, welcome)

    async def connect(self, command: Connect) -> ConnectResult:
        wants_c = command.client in ("raw", "picows") and command.counting == "auto"
        if wants_c and not self.clients and fastcount.available() is None:
            self.counting = "c"
            if not isinstance(self.phase, CPhase):
                self.phase = CPhase(self.phase.phase_id, self.phase.streams)
        target = Target.from_url(command.url, command.token, command.welcome, command.greeting)
        subscribe_url = command.url
        semaphore = asyncio.Semaphore(max(1, command.concurrency))
        failures: Counter[str] = Counter()
        durations: list[float] = []

        async def one() -> None:
            async with semaphore:
                self.counter += 1
                local = (
                    command.local_hosts[self.counter % len(command.local_hosts)]
                    if command.local_hosts
                    else None
                )
                tracker = self.new_tracker(command.welcome)
                started = time.perf_counter()
                try:
                    if command.client == "websockets":
                        assert isinstance(tracker, Tracker)
                        library = LibraryClient(tracker, self.lost_client)
                        await asyncio.wait_for(
                            library.open(
                                command.url,
                                command.token,
                                command.timeout_s,
                                local,
                                command.welcome,
                                command.greeting,
                            ),
                            command.timeout_s,
                        )
                        client: Any = library
                    elif command.client == "picows":
                        from app.bench.picows_client import open_picows

                        client = await open_picows(
                            subscribe_url, target, tracker, self.lost_client, command.timeout_s, local
                        )
                    else:
                        client = await open_raw(target, tracker, self.lost_client, command.timeout_s, local)
                except TimeoutError:
                    failures["timeout"] += 1
                    return
                except Exception as error:  # the reason is reported, not raised: failures are a figure
                    failures[_reason(error)] += 1
                    return
                durations.append((time.perf_counter() - started) * 1000.0)
                if not tracker.closed:
                    self.clients.add(client)

        await asyncio.gather(*(one() for _ in range(command.count)))
        return ConnectResult(durations, dict(failures), len(self.clients))

    def start_phase(self, command: StartPhase) -> None:
        self.close_codes = Counter()
        streams = max(1, command.streams)
        if self.counting == "c":
            self.phase = CPhase(command.phase_id, streams)
        else:
            self.phase = Phase(phase_id=command.phase_id, streams=streams)
        self.phase_trackers = [client.tracker for client in self.clients]
        for tracker in self.phase_trackers:
            tracker.reset(self.phase)
        self.publish_progress()

    def publish_progress(self) -> None:
        base = self.index * PROGRESS_SLOTS
        if isinstance(self.phase, CPhase):
            lowest_seq, lowest_unique, live_count = fastcount.progress(self.phase_trackers)
        else:
            live = [t for t in self.phase_trackers if not t.closed]
            lowest_seq = min((t.max_seq for t in live), default=1 << 62)
            lowest_unique = min((t.unique for t in live), default=1 << 62)
            live_count = len(live)
        self.progress[base] = lowest_seq
        self.progress[base + 1] = lowest_unique
        self.progress[base + 2] = live_count

    def collect(self, command: Collect) -> PhaseResult:
        phase, trackers = self.phase, self.phase_trackers
        expected = command.expected
        if isinstance(phase, CPhase):
            event_ts, first, last, arrivals, histogram, latency_sum, latency_max, stray = phase.export(
                expected
            )
            lost = [t.lost(expected) for t in trackers]
            return PhaseResult(
                clients=len(trackers),
                disconnected=sum(1 for t in trackers if t.closed),
                expected=expected,
                unique=sum(expected - n for n in lost),
                duplicated=sum(t.dups for t in trackers),
                out_of_order=sum(t.ooo for t in trackers),
                lost=sum(lost),
                stray=stray,
                histogram=histogram,
                close_codes=dict(self.close_codes),
                latency_sum_ms=latency_sum,
                latency_max_ms=latency_max,
                event_ts=event_ts,
                first_arrival=first,
                last_arrival=last,
                arrivals=arrivals,
            )
        phase.grow(expected)
        return PhaseResult(
            clients=len(trackers),
            disconnected=sum(1 for t in trackers if t.closed),
            expected=expected,
            unique=sum(expected - t.lost(expected) for t in trackers),  # only events 0..expected-1 count
            duplicated=sum(t.dups for t in trackers),
            out_of_order=sum(t.ooo for t in trackers),
            lost=sum(t.lost(expected) for t in trackers),
            stray=phase.stray,
            histogram=phase.histogram,
            close_codes=dict(self.close_codes),
            latency_sum_ms=phase.latency_sum_ms,
            latency_max_ms=phase.latency_max_ms,
            event_ts=phase.event_ts[:expected],
            first_arrival=phase.first_arrival[:expected],
            last_arrival=phase.last_arrival[:expected],
            arrivals=phase.arrivals[:expected],
        )

    async def close_all(self) -> int:
        self.closing = True
        clients = list(self.clients)
        for client in clients:
            client.close()
        deadline = time.monotonic() + 5.0
        while self.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for client in list(self.clients):  # whoever did not close in time is cut
            transport = getattr(client, "transport", None)
            if transport is not None:
                cut = getattr(transport, "abort", None) or transport.disconnect  # asyncio's or picows's
                cut()
        self.clients.clear()
        self.closing = False
        return len(clients)


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:120]


async def _serve(conn: multiprocessing.connection.Connection, state: WorkerState) -> None:
    loop = asyncio.get_running_loop()
    ticker: asyncio.Task[None] | None = None

    async def tick() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            state.publish_progress()

    try:
        while True:
            command: Command = await loop.run_in_executor(None, conn.recv)
            reply: object = None
            if isinstance(command, Connect):
                reply = await state.connect(command)
            elif isinstance(command, StartPhase):
                state.start_phase(command)
                if ticker is None:
                    ticker = asyncio.create_task(tick())
            elif isinstance(command, Collect):
                reply = state.collect(command)
            elif isinstance(command, CloseAll):
                reply = await state.close_all()
            elif isinstance(command, Stop):
                conn.send(None)
                return
            conn.send(reply)
    finally:
        if ticker is not None:
            ticker.cancel()
        await state.close_all()


def worker_main(
    conn: multiprocessing.connection.Connection,
    index: int,
    progress: SynchronizedArray[Any],
    cpus: Sequence[int] | None,
) -> None:
    """Entry point of a load-generator process."""
    if cpus:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, set(cpus))
    raise_file_limit()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt, EOFError, BrokenPipeError):
        runner(_serve(conn, WorkerState(index, progress)))


@dataclass(frozen=True)
class Progress:
    min_max_seq: int
    min_unique: int
    live: int


class WorkerPool:
    """Starts N worker processes and sends each command to all of them (or a share of a count to each)."""

    def __init__(self, processes: int, cpus: Sequence[int] | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self.size = max(1, processes)
        self.cpus: list[int] | None = list(cpus) if cpus else None
        self.progress: SynchronizedArray[Any] = context.Array("q", self.size * PROGRESS_SLOTS, lock=False)
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.processes: list[Any] = []
        for index in range(self.size):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(child_end, index, self.progress, list(cpus) if cpus else None),
                name=f"eventcast-bench-{index}",
                daemon=True,
            )
            process.start()
            child_end.close()
            self.pipes.append(parent_end)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    async def _ask(
        self, pipe: multiprocessing.connection.Connection, command: Command, timeout: float
    ) -> Any:
        loop = asyncio.get_running_loop()
        pipe.send(command)

        def wait() -> Any:
            if not pipe.poll(timeout):
                raise TimeoutError(
                    f"load-generator worker did not answer {type(command).__name__} in {timeout}s"
                )
            return pipe.recv()

        return await loop.run_in_executor(None, wait)

    async def broadcast(self, command: Command, timeout: float = COMMAND_TIMEOUT_S) -> list[Any]:
        return list(await asyncio.gather(*(self._ask(pipe, command, timeout) for pipe in self.pipes)))

    async def connect(
        self, total: int, template: Connect, timeout: float = COMMAND_TIMEOUT_S
    ) -> list[ConnectResult]:
        """Spread `total` new clients over the workers (the first ones take the remainder)."""
        share, extra = divmod(total, self.size)
        asks = []
        for index, pipe in enumerate(self.pipes):
            count = share + (1 if index < extra else 0)
            if count:
                command = Connect(
                    count,
                    template.url,
                    template.token,
                    template.timeout_s,
                    max(1, template.concurrency // self.size),
                    template.local_hosts,
                    template.client,
                    template.welcome,
                    template.counting,
                    template.greeting,
                )
                asks.append(self._ask(pipe, command, timeout))
        return list(await asyncio.gather(*asks))

    def read_progress(self) -> Progress:
        values = [int(self.progress[i]) for i in range(self.size * PROGRESS_SLOTS)]
        slots = [values[i * PROGRESS_SLOTS : (i + 1) * PROGRESS_SLOTS] for i in range(self.size)]
        live = sum(s[2] for s in slots)
        active = [s for s in slots if s[2] > 0]
        if not active:
            return Progress(-1, 0, 0)
        return Progress(min(s[0] for s in active), min(s[1] for s in active), live)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.broadcast(Stop(), timeout=15.0)
        for process in self.processes:
            process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
                process.join(timeout=2.0)
