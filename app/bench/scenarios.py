"""The scenarios (`targets`, `storm`, `ramp`, `sustained`, `publish`, `workers`) run against one server.

Each scenario is a short, bounded sequence of steps; a step connects clients (timing every connection),
measures the server's idle memory, then runs one or more measurement phases (see `measure`). Results are
plain dicts, the JSON schema documented in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from app.bench import server as server_mod
from app.bench import stats
from app.bench.measure import MemorySampler, PhaseOptions, PhaseRunner
from app.bench.ratesearch import RateStep, SearchOptions, search_rate, step_from_phase
from app.bench.server import ServerUnderTest, is_loopback
from app.bench.workers import CloseAll, Connect, ConnectResult, WorkerPool

SCENARIOS = ("targets", "storm", "ramp", "sustained", "publish", "workers")
DEFAULT_SCENARIOS = ("targets", "storm", "ramp", "sustained")
WORKER_COUNTS = (1, 2)  # the `workers` scenario: "2 workers on 2 cores vs 1 worker"
TARGET_STEPS = (1, 10, 20, 50, 100)
RAMP_STEPS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
CLIENTS_PER_SOURCE_ADDRESS = 25000  # below the 28k ephemeral ports one source address has towards one port
SETTLE_S = 0.5
SAMPLES_KEPT = 500  # raw connect times kept per step in the JSON
START_DELIVERIES_PER_S = 100_000.0  # the rate search's first step, as deliveries/s over all clients


@dataclass
class BenchConfig:
    """Every knob of a run (the CLI fills it; tests build it directly)."""

    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    max_clients: int = 1000
    duration_s: float = 10.0
    rate: float | None = None
    processes: int = 1
    events_per_step: int = 20
    ramp_sustain_s: float = 2.0
    storm_clients: int = 1000
    publish_seconds: float = 3.0
    publish_concurrency: int = 16
    publish_subscribers: int = 100
    publish_redis: bool = True  # spawned memory:// gateway: also run `publish` on a spawned redis-server
    connect_timeout_s: float = 10.0
    connect_concurrency: int = 200
    client: str = "raw"
    search_steps: int = (
        10  # `sustained`: steps of the search over rates after the fixed-window phase (0: none)
    )
    search_step_s: float = 3.0  # seconds of publishing per step of that search
    phase: PhaseOptions = field(default_factory=PhaseOptions)
    quick: bool = False

    def ramp_steps(self) -> list[int]:
        steps = [n for n in RAMP_STEPS if n < self.max_clients]
        return [*steps, self.max_clients]

    def source_addresses(self, ws_url: str) -> tuple[str, ...]:
        """Extra loopback source addresses once the clients would exhaust one address's ephemeral ports."""
        largest = max(self.max_clients, self.storm_clients)
        if not is_loopback(ws_url) or largest <= CLIENTS_PER_SOURCE_ADDRESS:
            return ()
        count = math.ceil(largest / CLIENTS_PER_SOURCE_ADDRESS)
        return tuple(f"127.0.0.{i + 1}" for i in range(count))

    def planned_steps(self) -> int:
        """How many progress-bar steps the scenarios take against one server."""
        counts = {
            "targets": len(TARGET_STEPS),
            "storm": 1,
            "ramp": len(self.ramp_steps()),
            "sustained": 1,
            "publish": 4,
            "workers": len(WORKER_COUNTS),
        }
        return sum(counts[name] for name in self.scenarios)


Advance = Callable[[str], None]


def summarize_connects(results: list[ConnectResult], attempted: int, seconds: float) -> dict[str, Any]:
    durations = [d for r in results for d in r.connect_ms]
    failures: Counter[str] = Counter()
    for r in results:
        failures.update(r.failures)
    return {
        "attempted": attempted,
        "succeeded": len(durations),
        "failed": attempted - len(durations),
        "success_rate": round(len(durations) / attempted, 6) if attempted else None,
        "errors": dict(failures),
        "seconds": round(seconds, 4),
        "per_s": round(len(durations) / seconds, 1) if seconds > 0 else None,
        **stats.summarize_samples(durations).as_dict(),
        # At most SAMPLES_KEPT evenly spaced order statistics (min and max included): the histogram chart's
        # shape without 10,000s of numbers in the JSON; the figures above are computed from every sample.
        "samples_ms": [round(d, 3) for d in stats.thin_samples(durations, SAMPLES_KEPT)],
    }


class ScenarioRunner:
    """Runs the configured scenarios against one server; owns the client population."""

    def __init__(
        self, server: ServerUnderTest, pool: WorkerPool, config: BenchConfig, advance: Advance
    ) -> None:
        self.server = server
        self.pool = pool
        self.config = config
        self.advance = advance
        self.memory = MemorySampler(server)
        self.phases = PhaseRunner(server, pool, config.phase, self.memory)
        self.url = server.dialect.subscribe_url(server.ws_url, config.phase.channel)
        self.sources = config.source_addresses(server.ws_url)
        self.clients = 0
        self.idle_rss: int | None = None

    async def connect(self, total: int, concurrency: int | None = None) -> dict[str, Any]:
        """Grow the population to `total` clients; returns the connection figures of the new ones."""
        wanted = max(0, total - self.clients)
        template = Connect(
            wanted,
            self.url,
            self.server.token,
            self.config.connect_timeout_s,
            concurrency or self.config.connect_concurrency,
            self.sources,
            self.config.client,
            self.server.dialect.welcome,
            greeting=self.server.dialect.greeting,
        )
        started = time.monotonic()
        results = await self.pool.connect(
            wanted, template, timeout=self.config.connect_timeout_s * 4 + wanted / 100
        )
        figures = summarize_connects(results, wanted, time.monotonic() - started)
        self.clients = self.pool_live(results)
        return figures

    @staticmethod
    def pool_live(results: list[ConnectResult]) -> int:
        return sum(r.live for r in results)

    async def close_all(self) -> None:
        await self.pool.broadcast(CloseAll(), timeout=60.0)
        self.clients = 0
        await asyncio.sleep(SETTLE_S)

    async def memory_step(self, clients: int, before: int | None = None, added: int = 0) -> dict[str, Any]:
        """RSS now; per client against the scenario's idle RSS, or (ramp) against `before` the `added` clients,
        so history the gateway kept from earlier steps' events is not counted as connection memory."""
        await asyncio.sleep(SETTLE_S)
        rss = await self.memory.sample()
        reference, count = (before, added) if before is not None else (self.idle_rss, clients)
        per_client = None
        if rss is not None and reference is not None and count:
            per_client = round((rss - reference) / count, 1)
        server_connections = await self.server.server_connections()
        return {
            "idle_rss_bytes": self.idle_rss,
            "rss_bytes": rss,
            "per_client_bytes": per_client,
            "source": self.memory.source,
            "server_connections": server_connections,
        }

    async def step(self, clients: int, fresh: bool, sustain_s: float | None) -> dict[str, Any]:
        before = None
        if fresh:
            await self.close_all()
        else:
            before = await self.memory.sample()
        already = self.clients
        connect = await self.connect(clients)
        memory = await self.memory_step(self.clients, before, self.clients - already)
        broadcast = await self.phases.broadcast(self.config.events_per_step)
        memory["peak_rss_bytes"] = broadcast.pop("memory_peak_bytes")
        step: dict[str, Any] = {
            "clients": clients,
            "connected": self.clients,
            "connect": connect,
            "memory": memory,
            "broadcast": broadcast,
            "sustained": None,
        }
        if sustain_s:
            sustained = await self.phases.sustained(sustain_s, self.config.rate)
            peak = sustained.pop("memory_peak_bytes")
            if peak is not None and (memory["peak_rss_bytes"] or 0) < peak:
                memory["peak_rss_bytes"] = peak
            step["sustained"] = sustained
        return step

    async def run(self, name: str) -> dict[str, Any]:
        """Run one scenario; memory per client is measured against the server's RSS just before it."""
        self.memory.start()
        try:
            await asyncio.sleep(SETTLE_S)
            self.idle_rss = await self.memory.sample()
            result: dict[str, Any] = await getattr(self, f"scenario_{name}")()
            result["idle_rss_bytes"] = self.idle_rss
            await self.close_all()
            return result
        finally:
            await self.memory.stop()

    # scenarios ------------------------------------------------------------------------------------------------
    async def scenario_targets(self) -> dict[str, Any]:
        steps = []
        for clients in TARGET_STEPS:
            self.advance(f"{self.server.label}: targets, {clients} clients")
            steps.append(await self.step(clients, fresh=True, sustain_s=None))
        return {"steps": steps}

    async def scenario_storm(self) -> dict[str, Any]:
        clients = self.config.storm_clients
        self.advance(f"{self.server.label}: storm, {clients} clients at once")
        await self.close_all()
        connect = await self.connect(clients, concurrency=clients)
        memory = await self.memory_step(self.clients)
        broadcast = await self.phases.broadcast(min(5, self.config.events_per_step))
        memory["peak_rss_bytes"] = broadcast.pop("memory_peak_bytes")
        return {
            "clients": clients,
            "connected": self.clients,
            "connect": connect,
            "memory": memory,
            "broadcast": broadcast,
        }

    async def scenario_ramp(self) -> dict[str, Any]:
        await self.close_all()
        steps = []
        for clients in self.config.ramp_steps():
            self.advance(f"{self.server.label}: ramp, {clients} clients")
            steps.append(await self.step(clients, fresh=False, sustain_s=self.config.ramp_sustain_s))
        return {"steps": steps}

    async def scenario_sustained(self) -> dict[str, Any]:
        clients = self.config.max_clients
        self.advance(f"{self.server.label}: sustained, {clients} clients for {self.config.duration_s:g}s")
        connect = await self.connect(clients)
        memory = await self.memory_step(self.clients)
        sustained = await self.phases.sustained(self.config.duration_s, self.config.rate)
        memory["peak_rss_bytes"] = sustained.pop("memory_peak_bytes")
        result: dict[str, Any] = {
            "clients": clients,
            "connected": self.clients,
            "connect": connect,
            "memory": memory,
            "sustained": sustained,
        }
        if self.config.search_steps:
            result["search"] = await self.search_rate(
                clients, self.config.search_step_s, self.config.search_steps
            )
        return result

    async def search_rate(self, clients: int, step_s: float, steps: int) -> dict[str, Any]:
        """Sustained throughput as a search over rates (app/bench/ratesearch.py): the highest rate at which every
        event reaches every client and p99 <= 150 ms. Clients a failed step cost (a slow consumer is cut) are
        reconnected before the next step."""

        async def measure(rate: float) -> RateStep:
            live = self.pool.read_progress().live
            if live < clients:
                self.clients = live
                await self.connect(clients)
            phase = await self.phases.sustained(step_s, rate)
            phase.pop("memory_peak_bytes", None)
            return step_from_phase(rate, phase)

        options = SearchOptions(start_rate=START_DELIVERIES_PER_S / max(1, clients), max_steps=steps)
        return (await search_rate(measure, options)).as_dict(options.p99_bound_ms)

    async def publish_runs(self, engine: str = "") -> list[dict[str, Any]]:
        runs = []
        subscribers = min(self.config.publish_subscribers, self.config.max_clients)
        tag = f" ({engine})" if engine else ""
        for with_subscribers in (0, subscribers):
            await self.close_all()
            if with_subscribers:
                await self.connect(with_subscribers)
            for batch in (1, 100):
                self.advance(
                    f"{self.server.label}{tag}: publish, batch {batch}, {with_subscribers} subscribers"
                )
                figures = await self.phases.flood(
                    self.config.publish_seconds, self.config.publish_concurrency, batch
                )
                figures["subscribers"] = with_subscribers
                figures["memory_peak_bytes"] = figures.pop("memory_peak_bytes")
                runs.append(figures)
        await self.close_all()
        return runs

    def wants_redis_publish(self) -> bool:
        return redis_publish_planned(self.config, self.server.spawned, self.server.label, self.server.broker)

    async def publish_on_redis(self) -> dict[str, Any]:
        """The publish runs again on a gateway (same workers and CPUs) backed by a throwaway redis-server."""
        entry: dict[str, Any] = {"engine": "redis", "broker": None, "runs": [], "error": None}
        try:
            async with throwaway_redis() as redis:
                entry["broker"] = redis.url
                async with spawned_gateway(self.server.workers, redis.url, self.server.cpus) as gateway:
                    runner = ScenarioRunner(gateway, self.pool, self.config, self.advance)
                    runner.memory.start()
                    try:
                        entry["runs"] = await runner.publish_runs("redis")
                    finally:
                        await runner.memory.stop()
        except Exception as error:  # no redis-server, or it failed: a figure of the report, not a crash
            entry["error"] = f"{type(error).__name__}: {error}"
        return entry

    async def settled_connections(self, seen: int | None, timeout_s: float = 3.0) -> int | None:
        """The gateway's eventcast_connections once it counts every connected client (bounded): with several
        workers /metrics sums files each worker rewrites only every metrics_refresh_seconds (1 s)."""
        deadline = time.monotonic() + timeout_s
        while seen != self.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            seen = await self.server.server_connections()
        return seen

    async def workers_run(
        self, redis: server_mod.RedisProcess, load_cpus: Sequence[int] | None
    ) -> dict[str, Any]:
        """One gateway of the `workers` scenario (this runner's server, on Redis): connect --max-clients,
        sustain for --duration, with the server's, each worker's and redis-server's CPU."""
        clients = self.config.max_clients
        self.memory.start()
        try:
            await asyncio.sleep(SETTLE_S)
            self.idle_rss = await self.memory.sample()
            connect = await self.connect(clients)
            memory = await self.memory_step(self.clients)
            memory["server_connections"] = await self.settled_connections(memory["server_connections"])
            per_worker = self.server.clients_per_worker(self.pool.pids)
            workers = self.server.worker_processes()
            workers_before = _cpu_seconds(workers)
            redis_before = redis.cpu_seconds()
            started = time.monotonic()
            sustained = await self.phases.sustained(self.config.duration_s, self.config.rate)
            wall = max(1e-6, time.monotonic() - started)
            redis_after = redis.cpu_seconds()
            worker_cpu = [max(0.0, b - a) for a, b in zip(workers_before, _cpu_seconds(workers), strict=True)]
            memory["peak_rss_bytes"] = sustained.pop("memory_peak_bytes")
            connected = self.clients
            await self.close_all()
        finally:
            await self.memory.stop()
        cpu = sustained["cpu"]
        efficiency = sustained["server_efficiency"]
        delivered = sustained["delivery"]["delivered"]
        redis_cpu = (
            None if redis_before is None or redis_after is None else max(0.0, redis_after - redis_before)
        )
        cpus = list(self.server.cpus) if self.server.cpus else None
        return {
            "workers": self.server.workers,
            "server_cpus": cpus,
            "load_cpus": list(load_cpus) if load_cpus else None,
            # None: nothing was pinned, so whether they shared a core is the scheduler's choice
            "load_shares_core": None if not cpus or not load_cpus else bool(set(cpus) & set(load_cpus)),
            "clients": clients,
            "connected": connected,
            "connect": connect,
            "memory": memory,
            "server_connections": memory["server_connections"],
            "clients_per_worker": per_worker,
            "worker_cpu_s": [round(seconds, 4) for seconds in worker_cpu],
            "deliveries_per_s": sustained["throughput"]["deliveries_per_s"],
            "delivered": delivered,
            "delivery_rate": sustained["delivery"]["rate"],
            "p99_ms": sustained["latency"]["p99_ms"],
            "server_pct": cpu["server_pct"],
            "server_cpu_us_per_delivery": efficiency["server_cpu_us_per_delivery"],
            "projected_deliveries_per_s_per_core": efficiency["projected_deliveries_per_s_per_core"],
            "load_limited": cpu["load_limited"],
            "load_max_pct": cpu["load_max_pct"],
            "load_cores_busy_pct": cpu["load_cores_busy_pct"],
            "redis": {
                "cpu_s": None if redis_cpu is None else round(redis_cpu, 4),
                "pct": None if redis_cpu is None else round(redis_cpu / wall * 100.0, 1),
                "cpu_us_per_delivery": round(redis_cpu * 1e6 / delivered, 3)
                if redis_cpu and delivered
                else None,
            },
            "sustained": sustained,
        }

    async def scenario_workers(self) -> dict[str, Any]:
        """1 worker, then 2, each a fresh gateway on one throwaway redis-server (so both see the same engine
        and the workers share events), with --max-clients clients sustained for --duration."""
        load_cpus = list(self.pool.cpus) if self.pool.cpus else None
        result: dict[str, Any] = {
            "skipped": workers_skip_reason(self.server),
            "error": None,
            "broker": None,
            "clients": self.config.max_clients,
            "duration_s": self.config.duration_s,
            "load_cpus": load_cpus,
            "runs": [],
        }
        if result["skipped"]:
            result.update(scaling_ratios(None, None))
            return result
        try:
            async with throwaway_redis() as redis:
                result["broker"] = redis.url
                for workers in WORKER_COUNTS:
                    cpus = worker_cpus(self.server.cpus, workers)
                    self.advance(
                        f"{self.server.label}: workers, {workers} on CPUs {cpus or 'any'}, "
                        f"{self.config.max_clients} clients for {self.config.duration_s:g}s"
                    )
                    async with spawned_gateway(workers, redis.url, cpus) as gateway:
                        runner = ScenarioRunner(gateway, self.pool, self.config, self.advance)
                        result["runs"].append(await runner.workers_run(redis, load_cpus))
        except (
            Exception
        ) as error:  # no redis-server, or a gateway failed: a figure of the report, not a crash
            result["error"] = f"{type(error).__name__}: {error}"
        by_workers = {run["workers"]: run for run in result["runs"]}
        result.update(scaling_ratios(by_workers.get(1), by_workers.get(2)))
        return result

    async def scenario_publish(self) -> dict[str, Any]:
        result: dict[str, Any] = {"runs": await self.publish_runs(), "engine": self.server.broker}
        if self.wants_redis_publish():
            result["other_engines"] = [await self.publish_on_redis()]
        return result


@contextlib.asynccontextmanager
async def throwaway_redis() -> AsyncIterator[server_mod.RedisProcess]:
    """A redis-server of the bench's own on a free port, stopped on the way out."""
    redis = server_mod.spawn_redis()
    try:
        await redis.wait_ready()
        yield redis
    finally:
        await redis.stop()


@contextlib.asynccontextmanager
async def spawned_gateway(
    workers: int, broker: str | None, cpus: Sequence[int] | None
) -> AsyncIterator[ServerUnderTest]:
    """An `eventcast serve` of the bench's own, ready, stopped on the way out."""
    gateway = server_mod.spawn_gateway(workers, broker, cpus)
    try:
        await gateway.wait_ready()
        yield gateway
    finally:
        await gateway.stop()


def workers_skip_reason(server: ServerUnderTest) -> str | None:
    """Why the `workers` scenario cannot run against this server (None: it can)."""
    if server.label != "eventcast":
        return f"the {server.label} server has no workers to compare; only a spawned eventcast gateway is measured"
    if not server.spawned:
        return "a --url target: the bench can only vary the workers of a gateway it spawned itself (--spawn)"
    return None


def worker_cpus(server_cpus: Sequence[int] | None, workers: int) -> list[int] | None:
    """CPUs for a gateway of `workers` workers: the run's server CPUs first, then the machine's next cores
    (with 2 cores that is the load generator's core: the caller records that they share it)."""
    if not server_cpus:
        return None
    try:
        available = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(server_cpus)
    ordered = [*server_cpus, *(cpu for cpu in available if cpu not in server_cpus)]
    return ordered[:workers]


def _cpu_seconds(processes: Sequence[psutil.Process]) -> list[float]:
    out = []
    for proc in processes:
        seconds = 0.0
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            seconds = float(times.user + times.system)
        out.append(seconds)
    return out


def scaling_ratios(one: dict[str, Any] | None, two: dict[str, Any] | None) -> dict[str, Any]:
    """The 2-workers-vs-1 figures from the two runs of the `workers` scenario.

    `ratio_measured` = deliveries/s with 2 workers / with 1. `ratio_projected` = 2 x (server CPU us per
    delivery, 1 worker) / (server CPU us per delivery, 2 workers): what 2 workers with a core each would give
    against 1 worker on one core, if each ran its core full at the cost per delivery measured here. The
    2-worker cost counts everything the second worker duplicates (each reads and parses every event from
    Redis, each runs its own loop) and uvicorn's supervisor; redis-server is not counted (a shared
    dependency, reported apart). `ratio_projected_busiest_worker` drops the assumption that the two workers
    share the work evenly: the busier worker's CPU per delivery of the whole gateway sets the 2-worker
    capacity.
    """
    measured = projected = busiest = None
    if one and two:
        rate1, rate2 = one.get("deliveries_per_s"), two.get("deliveries_per_s")
        if rate1 and rate2:
            measured = round(rate2 / rate1, 3)
        us1, us2 = one.get("server_cpu_us_per_delivery"), two.get("server_cpu_us_per_delivery")
        if us1 and us2:
            projected = round(2 * us1 / us2, 3)
        worker_cpu = two.get("worker_cpu_s") or []
        delivered = two.get("delivered")
        if us1 and worker_cpu and max(worker_cpu) > 0 and delivered:
            busiest = round(us1 * delivered / (max(worker_cpu) * 1e6), 3)
    runs = [run for run in (one, two) if run]
    return {
        "ratio_measured": measured,
        "ratio_projected": projected,
        "ratio_projected_busiest_worker": busiest,
        "load_shared_core": bool(two and two.get("load_shares_core")),
        "load_limited": any(bool(run.get("load_limited")) for run in runs),
        "basis": "ratio_projected = 2 x server CPU us per delivery (1 worker) / (2 workers): a projection "
        "from measured server CPU for 2 workers with a core each, not a measurement; redis-server excluded",
    }


def redis_publish_planned(config: BenchConfig, spawned: bool, label: str, broker: str | None) -> bool:
    """`publish` also measures the Redis engine when the bench spawned a memory:// gateway itself."""
    return (
        "publish" in config.scenarios
        and config.publish_redis
        and spawned
        and label == "eventcast"
        and (broker or "memory://").startswith("memory")
    )
