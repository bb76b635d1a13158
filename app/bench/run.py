"""One bench run from start to end: choose CPUs, start the servers and the load generator, run the scenarios
against eventcast (and the baseline), and assemble the report dict written as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import psutil

from app.bench import fastcount
from app.bench import server as server_mod
from app.bench.checks import first_targets, performance_targets
from app.bench.figures import comparison, key_figures, limits_notes
from app.bench.scenarios import WORKER_COUNTS, BenchConfig, ScenarioRunner, redis_publish_planned
from app.bench.workers import CLIENTS_PER_PROCESS, WorkerPool, raise_file_limit

SCHEMA_VERSION = 1


@dataclass
class RunOptions:
    """Where to run (the CLI fills it; tests build it)."""

    config: BenchConfig = field(default_factory=BenchConfig)
    url: str | None = None
    publish_url: str | None = None
    token: str | None = None
    spawn: bool = False
    workers: int = 1
    broker: str | None = None
    baseline: bool = False
    pin: bool = True
    processes: int | None = None


def plan_cpus(options: RunOptions) -> tuple[list[int] | None, list[int] | None]:
    """Server CPUs and load-generator CPUs: on a multi-core machine a spawned server gets its own cores."""
    try:
        available = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return None, None
    if not options.pin or not (options.spawn or options.baseline) or len(available) < 2:
        return None, None
    server_count = min(max(1, options.workers), len(available) - 1)
    return available[:server_count], available[server_count:]


def load_processes(options: RunOptions, load_cpus: list[int] | None) -> int:
    config = options.config
    needed = math.ceil(max(config.max_clients, config.storm_clients) / CLIENTS_PER_PROCESS)
    if options.processes:
        return max(options.processes, needed)
    cores = len(load_cpus) if load_cpus else max(1, (os.cpu_count() or 2) // 2)
    return max(cores, needed)


def machine_info() -> dict[str, Any]:
    versions = {}
    for package in (
        "eventcast",
        "fastapi",
        "starlette",
        "uvicorn",
        "websockets",
        "uvloop",
        "httptools",
        "redis",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    cpu_model = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_bytes": psutil.virtual_memory().total,
        "open_files_limit": raise_file_limit(),
        # the raw and picows clients count frames in C (fastcount) unless it could not be built here
        "frame_counter": fastcount.available() or "c",
        "versions": versions,
    }


async def _run_server(
    make: Callable[[], server_mod.ServerUnderTest],
    options: RunOptions,
    load_cpus: list[int] | None,
    advance: Callable[[str], None],
) -> dict[str, Any]:
    """All scenarios against one kind of server. A spawned server is started afresh for each scenario,
    so its memory per client is not flattered or spoiled by the heap an earlier scenario left behind."""
    pool = WorkerPool(load_processes(options, load_cpus), load_cpus)
    server: server_mod.ServerUnderTest | None = None
    scenarios: dict[str, Any] = {}
    described: dict[str, Any] | None = None
    try:
        for name in options.config.scenarios:
            if server is None:
                server = make()
                await server.wait_ready()
            runner = ScenarioRunner(server, pool, options.config, advance)
            scenarios[name] = await runner.run(name)
            described = described or describe(server)
            if server.spawned:
                await server.stop()
                server = None
    finally:
        await pool.stop()
        if server is not None:
            await server.stop()
    first: dict[str, Any] = next(iter(scenarios.values()), {})
    entry: dict[str, Any] = {
        **(described or {}),
        "load_cpus": load_cpus,
        "load_processes": pool.size,
        "idle_rss_bytes": first.get("idle_rss_bytes"),
        "scenarios": scenarios,
    }
    targets = scenarios.get("targets")
    entry["checks"] = [c.first_target_dict() for c in first_targets(targets)] if targets else None
    return entry


def describe(server: server_mod.ServerUnderTest) -> dict[str, Any]:
    return {
        "label": server.label,
        "url": server.ws_url,
        "publish_url": server.publish_url,
        "spawned": server.spawned,
        "workers": server.workers,
        "broker": server.broker if server.label == "eventcast" else None,
        "server_cpus": list(server.cpus) if server.cpus else None,
    }


def planned_steps(options: RunOptions) -> int:
    steps = options.config.planned_steps() * (2 if options.baseline else 1)
    spawned = options.spawn or not options.url
    if "workers" in options.config.scenarios:
        # only a spawned eventcast gateway runs it: the baseline and a --url target skip it
        steps -= len(WORKER_COUNTS) * ((1 if options.baseline else 0) + (0 if spawned else 1))
    if redis_publish_planned(options.config, spawned, "eventcast", options.broker):
        steps += 4  # the publish runs again on the Redis engine
    return steps


async def execute(options: RunOptions, advance: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run everything; returns the report (schema_version 1)."""
    advance = advance or (lambda _description: None)
    raise_file_limit()
    server_cpus, load_cpus = plan_cpus(options)
    started = time.time()
    servers: list[dict[str, Any]] = []
    targets: list[Callable[[], server_mod.ServerUnderTest]] = []
    if options.spawn or not options.url:
        targets.append(lambda: server_mod.spawn_gateway(options.workers, options.broker, server_cpus))
    else:
        url = options.url
        targets.append(lambda: server_mod.remote(url, options.publish_url, options.token))
    if options.baseline:
        targets.append(lambda: server_mod.spawn_baseline(server_cpus))
    for make in targets:
        servers.append(await _run_server(make, options, load_cpus, advance))
    finished = time.time()
    compared = [row.as_dict() for row in comparison(servers[0], servers[1])] if len(servers) > 1 else None
    notes = [note for server in servers for note in limits_notes(server)]
    config = asdict(options.config)
    config["scenarios"] = list(options.config.scenarios)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": "eventcast bench",
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(),
        "finished_at": dt.datetime.fromtimestamp(finished, dt.UTC).isoformat(),
        "duration_s": round(finished - started, 2),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "machine": machine_info(),
        "config": {
            **config,
            "url": options.url,
            "publish_url": options.publish_url,
            "spawn": options.spawn or not options.url,
            "workers": options.workers,
            "broker": options.broker,
            "baseline": options.baseline,
            "token_set": bool(options.token),
        },
        "servers": servers,
        "comparison": compared,
        "notes": notes,
    }
    report["performance_targets"] = [check.as_dict() for check in performance_targets(report)]
    report["key_figures"] = [row.as_dict() for row in key_figures(report)]
    return report


def run_sync(options: RunOptions, advance: Callable[[str], None] | None = None) -> dict[str, Any]:
    return asyncio.run(execute(options, advance))


def to_json(value: Any, indent: int = 1, _level: int = 0) -> str:
    """JSON with one key per line, except that a list or object holding only scalars (samples, histograms,
    per-process CPU) stays on one line: diffable, and a fraction of the size of `json.dumps(indent=...)`."""

    def scalar(item: Any) -> bool:
        return not isinstance(item, dict | list)

    if isinstance(value, dict) and value and not all(scalar(v) for v in value.values()):
        pad, inner = " " * indent * _level, " " * indent * (_level + 1)
        items = [f"{inner}{json.dumps(str(k))}: {to_json(v, indent, _level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and not all(scalar(v) for v in value):
        pad, inner = " " * indent * _level, " " * indent * (_level + 1)
        items = [f"{inner}{to_json(v, indent, _level + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, separators=(",", ":"))
