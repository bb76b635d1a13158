"""`eventcast bench --peers`: eventcast against other fan-out servers, side by side, in one run.

Each server (one `eventcast serve` worker, then each peer: Debian's nginx with nchan, one worker, and
socket.io 4 with its Redis adapter in one Node process, both from app/bench/peers/) is started fresh and
driven by the SAME load-generator processes and the SAME publisher, one after the other, in one run; the run is repeated (`--runs`, order alternating so neither
server always goes first) and, with `--pinning both`, done once with the servers on core 0 and the load on
the other cores (as `taskset` would) and once unpinned. Per server and run it measures:

- memory per idle connection: (RSS with N clients - RSS of the fresh server) / N;
- N clients connected and welcomed: seconds from the first connect to the last client's upgrade (and, for
  eventcast, its welcome frame), `connect_concurrency` at a time;
- 1,000 clients connecting at once: p99 of TCP connect to connected;
- a single broadcast to N clients: time until the first and until the last client has it, the median of
  `--events` broadcasts published one at a time, with the server's CPU per broadcast split into user
  (its own code) and system (the kernel sending for it), and the load generator's CPU to receive it;
- sustained deliveries/s: the highest rate at which every event reaches every client and p99 <= 150 ms
  (app/bench/ratesearch.py).

Latency is measured from the publisher's clock (the time the request was written, carried in the event)
for every server alike, since the peers stamp nothing. The summary (median and min-max over the runs) goes into
docs/benchmarks.md between markers this command rewrites.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.bench import fastcount
from app.bench import server as server_mod
from app.bench.measure import CpuMeter, PhaseOptions
from app.bench.scenarios import BenchConfig, ScenarioRunner
from app.bench.server import ServerUnderTest
from app.bench.workers import CLIENTS_PER_PROCESS, CloseAll, WorkerPool, raise_file_limit

PEERS = ("nchan", "socketio")
LABELS = {"eventcast": "eventcast", "nchan": "nginx+nchan", "socketio": "socket.io"}
PINNING = ("pinned", "unpinned")
SECTION_START = "<!-- peers-table -->"
SECTION_END = "<!-- /peers-table -->"

Advance = Callable[[str], None]


@dataclass(frozen=True)
class PeerOptions:
    clients: int = 10_000
    storm_clients: int = 1_000
    events: int = 10  # single broadcasts per run
    runs: int = 3
    pinning: tuple[str, ...] = PINNING
    peers: tuple[str, ...] = PEERS
    step_s: float = 3.0  # seconds of publishing per rate-search step
    search_steps: int = 10
    processes: int | None = None
    client: str = "raw"
    event_bytes: int = 200


@dataclass
class PeerRun:
    """One server's figures in one run (None where the figure could not be measured)."""

    label: str
    pinning: str
    run: int
    server_cpus: list[int] | None
    load_cpus: list[int] | None
    memory_per_idle_kb: float | None = None
    connect_all_s: float | None = None
    connected: int = 0
    connect_failed: int = 0
    storm_p99_ms: float | None = None
    storm_failed: int = 0
    time_to_last_ms: float | None = None  # median over the single broadcasts
    time_to_first_ms: float | None = None
    broadcast_delivery: float | None = None  # delivered / expected over the single broadcasts
    broadcast_cut: dict[str, int] = field(default_factory=dict)  # clients cut during them, by close code
    server_user_ms_per_broadcast: float | None = None
    server_sys_ms_per_broadcast: float | None = None
    load_cpu_ms_per_broadcast: float | None = None
    sustained_deliveries_per_s: float | None = None
    sustained_p99_ms: float | None = None
    sustained_note: str | None = None  # why no rate passed, or that the publisher set the limit
    busy: dict[str, bool] = field(default_factory=dict)  # figure -> the load generator was busy measuring it
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # the raw phases (JSON only)


@dataclass(frozen=True)
class Row:
    """One figure of the side-by-side table: which field, its label and unit, and which way is better."""

    field: str
    label: str
    unit: str
    digits: int
    lower_is_better: bool = True


ROWS = (
    Row("memory_per_idle_kb", "memory per idle connection", "KB", 2),
    Row(
        "time_to_last_ms",
        "single broadcast to {n} clients, time until the last has it (median of {e})",
        "ms",
        1,
    ),
    Row("time_to_first_ms", "single broadcast to {n} clients, time until the first has it (median)", "ms", 2),
    Row("connect_all_s", "{n} clients connected and welcomed", "s", 2),
    Row("storm_p99_ms", "{storm} clients connecting at once, p99", "ms", 1),
    Row(
        "sustained_deliveries_per_s",
        "sustained deliveries/s, every event delivered, p99 <= 150 ms",
        "/s",
        0,
        False,
    ),
    Row("server_user_ms_per_broadcast", "server CPU per single broadcast, user", "ms", 1),
    Row("server_sys_ms_per_broadcast", "server CPU per single broadcast, system (kernel)", "ms", 1),
    Row("load_cpu_ms_per_broadcast", "load-generator CPU to receive one broadcast", "ms", 1),
)


def plan_cpus(pinning: str) -> tuple[list[int] | None, list[int] | None]:
    """Server core(s) and load cores: core 0 for the server and the rest for the load when pinned."""
    if pinning == "unpinned":
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        raise RuntimeError("pinning needs at least 2 cores: run with --pinning unpinned")
    return available[:1], available[1:]


def spawner(name: str, cpus: list[int] | None) -> Callable[[], ServerUnderTest]:
    if name == "eventcast":
        return lambda: server_mod.spawn_gateway(1, None, cpus)
    if name == "nchan":
        return lambda: server_mod.spawn_nchan(cpus)
    if name == "socketio":
        return lambda: server_mod.spawn_socketio(cpus)
    raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")


@contextlib.contextmanager
def parent_affinity(cpus: Sequence[int] | None) -> Iterator[None]:
    """Pin this process (the publisher) to the load cores while pinned, and restore it afterwards."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _config(options: PeerOptions) -> BenchConfig:
    return BenchConfig(
        scenarios=(),
        max_clients=options.clients,
        storm_clients=options.storm_clients,
        events_per_step=options.events,
        client=options.client,
        phase=PhaseOptions(
            event_bytes=options.event_bytes, event_timeout_s=2.0, drain_timeout_s=5.0, publisher_clock=True
        ),
    )


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


async def measure_server(
    make: Callable[[], ServerUnderTest],
    pool: WorkerPool,
    options: PeerOptions,
    entry: PeerRun,
    advance: Advance,
) -> None:
    """Every figure of one server in one run, into `entry` (a failure is recorded, not raised)."""
    config = _config(options)
    label = entry.label
    stage = "start"
    server: ServerUnderTest | None = None
    try:
        server = make()
        await server.wait_ready()
        runner = ScenarioRunner(server, pool, config, advance)
        runner.memory.start()
        try:
            await asyncio.sleep(0.5)
            runner.idle_rss = await runner.memory.sample()
            stage = "storm"
            advance(
                f"{label} ({entry.pinning}, run {entry.run + 1}): {options.storm_clients:,} clients at once"
            )
            meter = CpuMeter(pool.pids, server, pool.cpus)
            meter.start()
            storm = await runner.connect(options.storm_clients, concurrency=options.storm_clients)
            storm["cpu"] = meter.stop()
            entry.storm_p99_ms, entry.storm_failed = storm["p99_ms"], storm["failed"]
            entry.busy["storm_p99_ms"] = bool(storm["cpu"]["load_limited"])
            await runner.close_all()
            stage = "connect"
            advance(f"{label} ({entry.pinning}, run {entry.run + 1}): {options.clients:,} clients")
            meter.start()
            connect = await runner.connect(options.clients)
            connect["cpu"] = meter.stop()
            entry.connect_all_s, entry.connect_failed = connect["seconds"], connect["failed"]
            entry.busy["connect_all_s"] = bool(connect["cpu"]["load_limited"])
            entry.connected = runner.clients
            memory = await runner.memory_step(runner.clients)
            if memory["per_client_bytes"] is not None:
                entry.memory_per_idle_kb = round(memory["per_client_bytes"] / 1024, 3)
            stage = "single broadcasts"
            advance(f"{label} ({entry.pinning}, run {entry.run + 1}): {options.events} single broadcasts")
            broadcast = await runner.phases.broadcast(options.events)
            entry.time_to_last_ms = broadcast["time_to_last"]["p50_ms"]
            entry.time_to_first_ms = broadcast["time_to_first"]["p50_ms"]
            entry.broadcast_delivery = broadcast["delivery"]["rate"]
            entry.broadcast_cut = dict(broadcast["delivery"].get("close_codes") or {})
            efficiency = broadcast["server_efficiency"]
            entry.server_user_ms_per_broadcast = efficiency["server_user_ms_per_event"]
            entry.server_sys_ms_per_broadcast = efficiency["server_sys_ms_per_event"]
            entry.load_cpu_ms_per_broadcast = efficiency["load_cpu_ms_per_event"]
            entry.busy["time_to_last_ms"] = bool(broadcast["cpu"]["load_limited"])
            stage = "rate search"
            advance(f"{label} ({entry.pinning}, run {entry.run + 1}): sustained rate search")
            search = await runner.search_rate(options.clients, options.step_s, options.search_steps)
            entry.sustained_deliveries_per_s = search["deliveries_per_s"]
            entry.sustained_p99_ms = search["p99_ms"]
            failed = search["failed"]
            if failed is not None and (
                search["best"] is None or failed["failure"].startswith("the publisher")
            ):
                entry.sustained_note = f"{failed['rate']:g} events/s failed: {failed['failure']}"
            entry.busy["sustained_deliveries_per_s"] = bool(search["load_limited"])
            entry.detail = {"storm": storm, "connect": connect, "memory": memory, "broadcast": broadcast}
            entry.detail["sustained"] = search
            await runner.close_all()
        finally:
            await runner.memory.stop()
    except Exception as error:  # a server that fails is a figure of the report, not the end of the run
        entry.error = f"{stage}: {type(error).__name__}: {error or 'no detail'}"
        with contextlib.suppress(Exception):
            await pool.broadcast(CloseAll(), timeout=60.0)
    finally:
        if server is not None:
            await server.stop()


async def execute(options: PeerOptions, advance: Advance | None = None) -> dict[str, Any]:
    """Every pinning mode x run x server; returns the report (JSON-ready)."""
    advance = advance or (lambda _description: None)
    raise_file_limit()
    checks = {"nchan": server_mod.nchan_missing, "socketio": server_mod.socketio_missing}
    for name in options.peers:
        missing = checks[name]()
        if missing:
            raise RuntimeError(missing)
    if "socketio" in options.peers:
        server_mod.socketio_modules()  # npm install once, before anything is measured
    started = time.time()
    runs: list[PeerRun] = []
    names = ("eventcast", *options.peers)
    for pinning in options.pinning:
        server_cpus, load_cpus = plan_cpus(pinning)
        processes = options.processes or max(
            len(load_cpus) if load_cpus else 1,
            -(-max(options.clients, options.storm_clients) // CLIENTS_PER_PROCESS),
        )
        pool = WorkerPool(processes, load_cpus)
        try:
            with parent_affinity(load_cpus):
                for run in range(options.runs):
                    order = names if run % 2 == 0 else tuple(reversed(names))
                    for name in order:
                        entry = PeerRun(_label(name), pinning, run, server_cpus, load_cpus)
                        await measure_server(spawner(name, server_cpus), pool, options, entry, advance)
                        runs.append(entry)
        finally:
            await pool.stop()
    finished = time.time()
    return {
        "tool": "eventcast bench --peers",
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(),
        "duration_s": round(finished - started, 1),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "options": {**asdict(options), "pinning": list(options.pinning), "peers": list(options.peers)},
        "frame_counter": fastcount.available() or "c",
        "servers": [_label(name) for name in names],
        "runs": [asdict(run) for run in runs],
        "summary": summarize(runs, options),
    }


def _label(name: str) -> str:
    return LABELS[name]


def summarize(runs: Sequence[PeerRun], options: PeerOptions) -> dict[str, Any]:
    """Per pinning mode, per server, per figure: median, min, max over the runs and in how many runs the load
    generator was busy."""
    out: dict[str, Any] = {}
    for pinning in options.pinning:
        mode: dict[str, Any] = {}
        for label in sorted({run.label for run in runs}, key=lambda name: (name != "eventcast", name)):
            mine = [run for run in runs if run.pinning == pinning and run.label == label]
            figures: dict[str, Any] = {}
            for row in ROWS:
                values = [getattr(run, row.field) for run in mine if getattr(run, row.field) is not None]
                figures[row.field] = {
                    "median": _median(values),
                    "min": min(values) if values else None,
                    "max": max(values) if values else None,
                    "runs": len(values),
                    "busy_runs": sum(1 for run in mine if run.busy.get(row.field)),
                }
            mode[label] = {
                "figures": figures,
                "errors": [run.error for run in mine if run.error],
                "sustained_notes": [run.sustained_note for run in mine if run.sustained_note],
                "incomplete_runs": [
                    _incomplete(run)
                    for run in mine
                    if run.connect_failed
                    or (run.broadcast_delivery is not None and run.broadcast_delivery < 1.0)
                ],
            }
        out[pinning] = mode
    return out


def _incomplete(run: PeerRun) -> str:
    """What went wrong in a run that lost a connect or an event."""
    parts = [f"run {run.run + 1}"]
    if run.connect_failed:
        parts.append(f"{run.connect_failed:,} connects failed")
    if run.broadcast_delivery is not None and run.broadcast_delivery < 1.0:
        parts.append(f"single broadcasts {run.broadcast_delivery * 100:.2f}% delivered")
    if run.broadcast_cut:
        cut = ", ".join(
            f"{count:,} with close code {code}" for code, count in sorted(run.broadcast_cut.items())
        )
        parts.append(f"clients cut meanwhile: {cut}")
    return "; ".join(parts)


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if digits == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _cell(figure: dict[str, Any], row: Row) -> str:
    if figure["median"] is None:
        return "-"
    text = f"{_number(figure['median'], row.digits)} {row.unit}"
    if figure["runs"] > 1:
        text += f" ({_number(figure['min'], row.digits)}-{_number(figure['max'], row.digits)})"
    if figure["busy_runs"]:
        text += f" [load busy in {figure['busy_runs']}]"
    return text


def markdown(report: dict[str, Any]) -> str:
    """The side-by-side tables (one per pinning mode) with their header: what ran, where, how often."""
    options = report["options"]
    servers: list[str] = report["servers"]
    n, storm, events = options["clients"], options["storm_clients"], options["events"]
    lines = [
        f"Generated by `{report['command']}` on {report['started_at'][:16].replace('T', ' ')} UTC "
        f"({report['duration_s']:.0f} s): {options['runs']} run(s) per pinning mode, each server fresh per run "
        f"with the same load-generator processes and publisher; {n:,} clients, {events} single broadcasts of "
        f"~{options['event_bytes']} bytes, one worker per server. Cells: median (min-max) over the runs; "
        '"load busy in k": in k runs a load-generator process or its cores were above 90% while measuring '
        "it, so the figure may be the load generator's. Ratio: eventcast / peer, medians (below 1 is better, "
        "except for deliveries/s).",
        "",
    ]
    for pinning, mode in report["summary"].items():
        peers = [label for label in servers if label != "eventcast" and label in mode]
        where = (
            "servers pinned to core 0, load generator and publisher to the other core(s)"
            if pinning == "pinned"
            else "nothing pinned"
        )
        lines += [f"**{pinning}** ({where})", ""]
        head = ["figure", *[label for label in servers if label in mode]]
        head += [f"eventcast / {peer}" for peer in peers]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in ROWS:
            label = row.label.format(n=f"{n:,}", storm=f"{storm:,}", e=events)
            cells = [_cell(mode[server]["figures"][row.field], row) for server in servers if server in mode]
            ratios = []
            ours = mode.get("eventcast", {}).get("figures", {}).get(row.field, {}).get("median")
            for peer in peers:
                theirs = mode[peer]["figures"][row.field]["median"]
                ratios.append("-" if ours is None or not theirs else f"{ours / theirs:.2f}x")
            lines.append("| " + " | ".join([label, *cells, *ratios]) + " |")
        problems = [f"{server}: {error}" for server in mode for error in mode[server]["errors"]]
        problems += [f"{server}: {problem}" for server in mode for problem in mode[server]["incomplete_runs"]]
        problems += [
            f"{server}, sustained: {note}" for server in mode for note in mode[server]["sustained_notes"]
        ]
        if problems:
            lines += ["", *[f"- {problem}" for problem in problems]]
        lines.append("")
    return "\n".join(lines)


def rewrite_section(document: str, section: str) -> str:
    """`document` with the text between the peers markers replaced by `section`. A marker counts only alone
    on its line (prose may name it); without markers the section is appended under its own heading."""
    lines = document.split("\n")
    starts = [i for i, line in enumerate(lines) if line.strip() == SECTION_START]
    ends = [i for i, line in enumerate(lines) if line.strip() == SECTION_END]
    block = [SECTION_START, *section.rstrip("\n").split("\n"), SECTION_END]
    if len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0]:
        return "\n".join(lines[: starts[0]] + block + lines[ends[0] + 1 :])
    if starts or ends:
        raise ValueError(f"expected one {SECTION_START} line before one {SECTION_END} line")
    heading = ["", "## Side by side with other servers (`make bench-peers`)", ""]
    return document.rstrip("\n") + "\n" + "\n".join([*heading, *block]) + "\n"


def write_doc(path: Path, report: dict[str, Any]) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(rewrite_section(text, markdown(report)))
