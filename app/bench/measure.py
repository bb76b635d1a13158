"""Measurement phases: publish in a given pattern to the connected clients, then gather what they saw.

A phase is: tell every worker a new phase id, publish (paced single events, a sustained stream, or a
publish flood), wait until every live client has caught up (or a timeout), collect the workers' counts and
histograms, and fold them into one plain dict (the JSON schema of a step). Memory and CPU are sampled
around it so each step says what the server cost and whether the load generator was saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from app.bench import stats
from app.bench.publisher import HttpPublisher, padding_for
from app.bench.server import ServerUnderTest
from app.bench.workers import Collect, PhaseResult, StartPhase, WorkerPool

POLL_S = 0.002
IN_FLIGHT = 150_000  # sustained, flow-controlled: deliveries outstanding over all clients at most
MIN_WINDOW = 8  # ... but at least this many events per client
SATURATED_PCT = 90.0
STREAMS = 16  # publishing connections at a fixed rate for a server that takes one event per request  # a load process above this share of a core may have limited the measurement

_phase_ids = itertools.count(int(time.time()) % 100000 * 1000)


@dataclass
class PhaseOptions:
    event_bytes: int = 200
    event_timeout_s: float = 2.0  # paced mode: longest wait for every client to get one event
    drain_timeout_s: float = 5.0  # after publishing: longest wait for every client to catch up
    channel: str = "bench"
    # Latency from the publisher's clock (the time the request was written, carried in the event) instead
    # of the server's "ts" (the publish-accepted time): the same yardstick for servers that stamp nothing.
    publisher_clock: bool = False


class MemorySampler:
    """Samples the server's resident memory in the background and keeps the peak since the last reset."""

    def __init__(self, server: ServerUnderTest) -> None:
        self.server = server
        self.peak: int | None = None
        self.source = "process" if server.spawned else "metrics"
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> int | None:
        value, self.source = await self.server.rss()
        if value is not None and (self.peak is None or value > self.peak):
            self.peak = value
        return value

    async def _run(self) -> None:
        interval = 0.1 if self.server.spawned else 0.5
        while True:
            with contextlib.suppress(Exception):
                await self.sample()
            await asyncio.sleep(interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    def reset(self) -> None:
        self.peak = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _busy_cpu_seconds(cpus: Sequence[int]) -> list[tuple[float, float]]:
    """(busy, total) CPU seconds so far of each listed core, softirq and system time included."""
    try:
        per_cpu = psutil.cpu_times(percpu=True)
    except (psutil.Error, OSError):  # pragma: no cover - no /proc/stat
        return []
    out = []
    for index in cpus:
        if index < len(per_cpu):
            times = per_cpu[index]
            total = float(sum(times))
            idle = float(times.idle + getattr(times, "iowait", 0.0))
            out.append((total - idle, total))
    return out


@dataclass
class CpuMeter:
    """CPU used by the load generator (each worker and the publishing parent) and the spawned server, and how
    busy the load generator's cores were (kernel loopback and softirq work included, which no process's own
    CPU time shows)."""

    pool_pids: Sequence[int]
    server: ServerUnderTest
    load_cpus: Sequence[int] | None = None
    _start: dict[int, float] = field(default_factory=dict)
    _server_start: tuple[float, float] | None = None
    _cores_start: list[tuple[float, float]] = field(default_factory=list)
    _wall: float = 0.0

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def start(self) -> None:
        self._wall = time.monotonic()
        self._start = {pid: self._cpu(pid) for pid in [os.getpid(), *self.pool_pids]}
        self._server_start = self.server.process_cpu_times()
        self._cores_start = _busy_cpu_seconds(self.load_cpus or [])

    def _cores_busy_pct(self) -> float | None:
        now = _busy_cpu_seconds(self.load_cpus or [])
        if not now or len(now) != len(self._cores_start):
            return None
        busy = sum(b - b0 for (b, _), (b0, _) in zip(now, self._cores_start, strict=True))
        total = sum(t - t0 for (_, t), (_, t0) in zip(now, self._cores_start, strict=True))
        return round(busy / total * 100.0, 1) if total > 0 else None

    def stop(self) -> dict[str, Any]:
        wall = max(1e-6, time.monotonic() - self._wall)
        used = {pid: self._cpu(pid) - start for pid, start in self._start.items()}
        load = {pid: seconds / wall * 100.0 for pid, seconds in used.items()}
        parent = load.pop(os.getpid(), 0.0)
        workers = list(load.values())
        cores_busy = self._cores_busy_pct()
        server_now = self.server.process_cpu_times()
        server_pct = server_cpu_s = server_user_s = server_sys_s = None
        if server_now is not None and self._server_start is not None:
            server_user_s = max(0.0, server_now[0] - self._server_start[0])
            server_sys_s = max(0.0, server_now[1] - self._server_start[1])
            server_cpu_s = server_user_s + server_sys_s
            server_pct = round(server_cpu_s / wall * 100.0, 1)
        busiest = max([parent, *workers])
        return {
            "load_workers_pct": [round(p, 1) for p in workers],
            "publisher_pct": round(parent, 1),
            "load_max_pct": round(busiest, 1),
            "load_limited": busiest >= SATURATED_PCT or (cores_busy or 0.0) >= SATURATED_PCT,
            "load_cores_busy_pct": cores_busy,
            "load_cpu_s": round(sum(used.values()), 4),
            "server_pct": server_pct,
            "server_cpu_s": None if server_cpu_s is None else round(server_cpu_s, 4),
            # user: the server's own code; system: the kernel working for it (socket writes, loopback TCP)
            "server_user_s": None if server_user_s is None else round(server_user_s, 4),
            "server_sys_s": None if server_sys_s is None else round(server_sys_s, 4),
            "wall_s": round(wall, 4),
        }


def server_efficiency(figures: dict[str, Any]) -> dict[str, Any]:
    """Server CPU per delivery over a phase, and the deliveries/s one fully busy server core would give.

    `server_cpu_us_per_delivery` = server CPU seconds during the phase (every process of a spawned server,
    publish handling included) / deliveries. `projected_deliveries_per_s_per_core` = 1e6 / that: a
    projection from measured CPU, not a measurement, that assumes the cost per delivery stays the same up to
    a full core. It matters when `load_limited` is true: then the load generator, not the server, set the
    measured deliveries/s, and the server had CPU to spare.
    """
    cpu = figures["cpu"]
    cpu_s = cpu.get("server_cpu_s")
    load_s = cpu.get("load_cpu_s")
    delivered = figures["delivery"]["delivered"]
    events = figures["delivery"]["events"]
    requests = figures.get("requests")
    per_delivery = cpu_s * 1e6 / delivered if cpu_s and delivered else None
    per_request = cpu_s * 1e6 / requests if cpu_s and requests else None
    return {
        "server_cpu_s": cpu_s,
        "deliveries": delivered,
        "server_cpu_us_per_delivery": None if per_delivery is None else round(per_delivery, 3),
        "projected_deliveries_per_s_per_core": None if per_delivery is None else round(1e6 / per_delivery),
        "measured_deliveries_per_s": figures["throughput"]["deliveries_per_s"],
        # per published event (a paced broadcast: what one fan-out to every client cost each side)
        "server_cpu_ms_per_event": round(cpu_s * 1e3 / events, 3) if cpu_s and events else None,
        "server_user_ms_per_event": _per_event(cpu.get("server_user_s"), events),
        "server_sys_ms_per_event": _per_event(cpu.get("server_sys_s"), events),
        "load_cpu_ms_per_event": round(load_s * 1e3 / events, 3) if load_s and events else None,
        # per HTTP request (the publish flood)
        "server_cpu_us_per_request": None if per_request is None else round(per_request, 1),
        "projected_requests_per_s_per_core": None if per_request is None else round(1e6 / per_request),
        "server_pct": cpu.get("server_pct"),
        "load_max_pct": cpu.get("load_max_pct"),
        "load_cores_busy_pct": cpu.get("load_cores_busy_pct"),
        "load_limited": cpu.get("load_limited"),
        "basis": "projection from measured server CPU (1e6 / server CPU us per delivery or request), "
        "not a measurement",
    }


def achieved(events: int, seconds: float, last_post_s: float) -> float:
    """Events/s the publisher kept: over the window, or up to its last request when it ran late."""
    return round(events / max(seconds, last_post_s, 1e-6), 1)


def _per_event(seconds: float | None, events: int) -> float | None:
    return round(seconds * 1e3 / events, 3) if seconds is not None and events else None


def aggregate(results: Sequence[PhaseResult], expected: int, started_ms: float) -> dict[str, Any]:
    """Fold the workers' phase results into the step figures (delivery, latency, time to last, throughput)."""
    clients = sum(r.clients for r in results)
    total_expected = expected * clients
    unique = sum(r.unique for r in results)
    histogram = stats.merge_counts(r.histogram for r in results)
    latency_sum = sum(r.latency_sum_ms for r in results)
    latency_max = max((r.latency_max_ms for r in results), default=0.0)
    latency = stats.summarize_histogram(histogram, latency_max if unique else None, latency_sum)
    time_to_last: list[float] = []
    time_to_first: list[float] = []
    last_arrival = 0.0
    for seq in range(expected):
        arrivals = sum(r.arrivals[seq] for r in results if seq < len(r.arrivals))
        ts = max((r.event_ts[seq] for r in results if seq < len(r.event_ts)), default=0.0)
        last = max((r.last_arrival[seq] for r in results if seq < len(r.last_arrival)), default=0.0)
        firsts = [r.first_arrival[seq] for r in results if seq < len(r.first_arrival) and r.arrivals[seq]]
        last_arrival = max(last_arrival, last)
        if firsts and ts > 0:
            time_to_first.append(min(firsts) - ts)
        if clients and arrivals == clients and ts > 0:
            time_to_last.append(last - ts)
    window_s = max(1e-6, (last_arrival - started_ms) / 1000.0) if last_arrival else None
    return {
        "clients": clients,
        "delivery": {
            "events": expected,
            "expected": total_expected,
            "delivered": unique,
            "lost": sum(r.lost for r in results),
            "duplicated": sum(r.duplicated for r in results),
            "out_of_order": sum(r.out_of_order for r in results),
            "stray": sum(r.stray for r in results),
            "disconnected_clients": sum(r.disconnected for r in results),
            "close_codes": dict(sum((Counter(r.close_codes) for r in results), Counter())),
            "rate": round(unique / total_expected, 6) if total_expected else None,
        },
        "latency": latency.as_dict(),
        "latency_histogram": stats.compress_counts(histogram),
        "time_to_last": {
            **stats.summarize_samples(time_to_last).as_dict(),
            "complete_events": len(time_to_last),
        },
        # the first client's arrival: what the server's fan-out costs before its first write reaches anyone
        "time_to_first": stats.summarize_samples(time_to_first).as_dict(),
        "throughput": {
            "seconds": round(window_s, 4) if window_s else None,
            "deliveries_per_s": round(unique / window_s, 1) if window_s else None,
            "events_per_s": round(expected / window_s, 1) if window_s else None,
        },
    }


class PhaseRunner:
    """Runs measurement phases against one server with one worker pool."""

    def __init__(
        self,
        server: ServerUnderTest,
        pool: WorkerPool,
        options: PhaseOptions,
        memory: MemorySampler,
    ) -> None:
        self.server = server
        self.pool = pool
        self.options = options
        self.memory = memory
        self.pad = padding_for(options.event_bytes)

    def _publisher(self) -> HttpPublisher:
        return HttpPublisher(
            self.server.publish_url, self.server.token, accepted=self.server.dialect.accepted
        )

    def _body(self, phase_id: int, seqs: Sequence[int]) -> bytes:
        dialect = self.server.dialect
        stamp = self.options.publisher_clock or not dialect.stamps
        sent_ms = time.time() * 1000.0 if stamp else None
        return dialect.body(self.options.channel, phase_id, seqs, self.pad, sent_ms)

    async def _wait(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True

    def _reached(self, seq: int) -> Callable[[], bool]:
        """True once every live client has `seq` (or something later)."""
        return lambda: self.pool.read_progress().min_max_seq >= seq

    async def _drain(self, expected: int) -> None:
        """Wait until every live client has every event, or nothing moves for a while, or the timeout."""
        deadline = time.monotonic() + self.options.drain_timeout_s
        last_seen = (-2, -2)
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            progress = self.pool.read_progress()
            if progress.live == 0 or progress.min_unique >= expected:
                return
            state = (progress.min_max_seq, progress.min_unique)
            if state != last_seen:
                last_seen, still_since = state, time.monotonic()
            elif progress.min_max_seq >= expected - 1 and time.monotonic() - still_since > 0.5:
                return  # everybody saw the end; what is missing now is lost
            await asyncio.sleep(POLL_S * 5)

    async def _phase(self, streams: int, publish: Callable[[int], Any]) -> dict[str, Any]:
        phase_id = next(_phase_ids)
        await self.pool.broadcast(StartPhase(phase_id, streams))
        await asyncio.sleep(0.05)  # let the workers' progress reflect the new phase
        meter = CpuMeter(self.pool.pids, self.server, self.pool.cpus)
        self.memory.reset()
        meter.start()
        started_ms = time.time() * 1000.0
        extra: dict[str, Any] = await publish(phase_id)
        expected = int(extra.pop("events"))
        await self._drain(expected)
        cpu = meter.stop()
        results: list[PhaseResult] = await self.pool.broadcast(Collect(expected))
        figures = aggregate(results, expected, started_ms)
        figures["cpu"] = cpu
        figures["memory_peak_bytes"] = self.memory.peak
        figures.update(extra)
        figures["server_efficiency"] = server_efficiency(figures)
        return figures

    async def broadcast(self, events: int) -> dict[str, Any]:
        """Single events one at a time, each after every client got the previous one: pure fan-out latency."""

        async def publish(phase_id: int) -> dict[str, Any]:
            publisher = self._publisher()
            publish_ms: list[float] = []
            errors: dict[str, int] = {}
            published = 0
            try:
                for seq in range(events):
                    try:
                        publish_ms.append(await publisher.publish(self._body(phase_id, [seq])))
                    except Exception as error:  # the server did not answer (in time): the phase ends here,
                        errors[type(error).__name__] = 1  # and counts the events it had accepted
                        break
                    published += 1
                    await self._wait(self._reached(seq), self.options.event_timeout_s)
            finally:
                await publisher.close()
            return {
                "events": published,
                "mode": "paced",
                "publish_errors": errors,
                "publish_retries": publisher.retries,
                "publish_latency": stats.summarize_samples(publish_ms).as_dict(),
            }

        return await self._phase(1, publish)

    async def sustained(self, seconds: float, rate: float | None, batch: int = 100) -> dict[str, Any]:
        """Publish for `seconds`: at `rate` events/s, or (rate None) as fast as the slowest client keeps up."""

        if not self.server.dialect.batches:
            batch = 1  # one event per request: the server takes no lists
            if rate is not None:
                return await self._phase(
                    STREAMS, lambda phase_id: self._paced_streams(phase_id, seconds, rate)
                )

        async def publish(phase_id: int) -> dict[str, Any]:
            publisher = self._publisher()
            clients = max(1, self.pool.read_progress().live)
            # Events a client may lag behind, published in halves so the next batch is already queued while
            # the previous one is delivered. At most IN_FLIGHT deliveries are outstanding over all clients
            # (150 ms at the 1M/s target, the sustained latency bound): a bigger backlog would sit in the
            # subscribers' socket buffers whenever the load generator is the slower side and show up as
            # latency the gateway did not add; a smaller one would publish in batches too small to coalesce.
            window = max(MIN_WINDOW, min(2000, IN_FLIGHT // clients))
            step = max(1, min(batch, window // 2))
            sent = 0
            posts: list[float] = []
            errors: dict[str, int] = {}
            started = time.monotonic()
            last_post = started
            end = started + seconds
            try:
                while time.monotonic() < end:
                    if rate is not None:
                        due = int((time.monotonic() - started) * rate) + 1
                        allowed = min(due - sent, batch)
                    else:
                        progress = self.pool.read_progress()
                        if progress.live == 0:
                            break
                        allowed = min(progress.min_max_seq + 1 + window - sent, step)
                        if allowed < step and sent:
                            allowed = 0  # wait for room for a whole batch rather than trickle single events
                    if allowed <= 0:
                        await asyncio.sleep(POLL_S)
                        continue
                    last_post = time.monotonic()
                    try:
                        posts.append(
                            await publisher.publish(self._body(phase_id, range(sent, sent + allowed)))
                        )
                    except Exception as error:  # the step failed; what was published so far is measured
                        errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                        break
                    sent += allowed
                # at a fixed rate, what fell due while the last requests were answered goes out too: a slow
                # answer must show as latency and a lower kept rate, not as events never offered
                due_total = int(seconds * rate) if rate is not None else 0
                while not errors and sent < due_total:
                    allowed = min(due_total - sent, batch)
                    last_post = time.monotonic()
                    try:
                        posts.append(
                            await publisher.publish(self._body(phase_id, range(sent, sent + allowed)))
                        )
                    except Exception as error:
                        errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                        break
                    sent += allowed
            finally:
                await publisher.close()
            return {
                "events": sent,
                "mode": "rate" if rate is not None else "flow-controlled",
                "target_rate": rate,
                "achieved_rate": achieved(sent, seconds, last_post - started),
                "batch": batch if rate is not None else step,
                "window": None if rate is not None else window,
                "publish_errors": errors,
                "publish_retries": publisher.retries,
                "publish_latency": stats.summarize_samples(posts).as_dict(),
            }

        return await self._phase(1, publish)

    async def _paced_streams(self, phase_id: int, seconds: float, rate: float) -> dict[str, Any]:
        """`rate` events/s for `seconds` over STREAMS keep-alive connections, for a server that takes one event
        per request and answers only once it has fanned the event out (nchan): event n goes at n / rate on
        connection n % STREAMS, so each connection's events stay one ordered stream (and are counted so)."""
        total = max(1, int(seconds * rate))
        publishers = [self._publisher() for _ in range(STREAMS)]
        published = [0] * STREAMS
        posts: list[float] = []
        errors: dict[str, int] = {}
        started = time.monotonic()
        last_post = [started]
        deadline = started + 3 * seconds + self.options.drain_timeout_s  # a publisher that lags gives up

        async def stream(index: int) -> None:
            for seq in range(index, total, STREAMS):
                due = started + seq / rate
                now = time.monotonic()
                if now >= deadline:
                    return
                if due > now:
                    await asyncio.sleep(due - now)
                last_post[0] = max(last_post[0], time.monotonic())
                try:
                    posts.append(await publishers[index].publish(self._body(phase_id, [seq])))
                except Exception as error:  # a step the server could not take: a figure, not a crash
                    errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                    return
                published[index] += 1

        try:
            await asyncio.gather(*(stream(index) for index in range(STREAMS)))
        finally:
            await asyncio.gather(*(publisher.close() for publisher in publishers))
        # the events counted: the longest run 0..n-1 every stream published in full
        events = min(min(total, count * STREAMS + index) for index, count in enumerate(published))
        return {
            "events": events,
            "mode": "rate",
            "target_rate": rate,
            "achieved_rate": achieved(events, seconds, last_post[0] - started),
            "batch": 1,
            "window": None,
            "publishers": STREAMS,
            "publish_errors": errors,
            "publish_retries": sum(publisher.retries for publisher in publishers),
            "publish_latency": stats.summarize_samples(posts).as_dict(),
        }

    async def flood(self, seconds: float, concurrency: int, batch: int) -> dict[str, Any]:
        """HTTP publish throughput: `concurrency` connections posting batches of `batch` as fast as answered."""

        async def publish(phase_id: int) -> dict[str, Any]:
            latencies: list[list[float]] = [[] for _ in range(concurrency)]
            counts = [0] * concurrency
            errors: dict[str, int] = {}
            end = time.monotonic() + seconds

            rounds = [0] * concurrency
            publishers = [self._publisher() for _ in range(concurrency)]

            async def post(stream: int, record: bool) -> None:
                # seq = stream + concurrency * n keeps each publisher's events one ordered stream
                first = rounds[stream] * batch
                seqs = [stream + concurrency * (first + k) for k in range(batch)]
                status, _, latency = await publishers[stream].post(self._body(phase_id, seqs))
                if status not in self.server.dialect.accepted:
                    errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
                    return
                rounds[stream] += 1
                if record:
                    latencies[stream].append(latency)
                    counts[stream] += batch

            async def flood_one(stream: int) -> None:
                while time.monotonic() < end:
                    await post(stream, True)

            async def top_up(stream: int, target: int, deadline: float) -> None:
                while rounds[stream] < target and time.monotonic() < deadline:
                    await post(stream, False)

            async def guarded(job: Any) -> None:
                try:
                    await job
                except Exception as error:  # a failing publisher is a figure, not a crash
                    errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1

            started = time.monotonic()
            try:
                await asyncio.gather(*(guarded(flood_one(i)) for i in range(concurrency)))
                elapsed = max(1e-6, time.monotonic() - started)
                # Every stream publishes the same number of batches, so the phase's seqs are exactly 0..n-1.
                target = max(rounds)
                deadline = time.monotonic() + self.options.drain_timeout_s
                await asyncio.gather(*(guarded(top_up(i, target, deadline)) for i in range(concurrency)))
            finally:
                await asyncio.gather(*(p.close() for p in publishers))
            requests = sum(len(x) for x in latencies)
            return {
                "events": min(rounds) * batch * concurrency,
                "events_sent": sum(counts),
                "mode": "flood",
                "concurrency": concurrency,
                "batch": batch,
                "requests": requests,
                "requests_per_s": round(requests / elapsed, 1),
                "published_events_per_s": round(sum(counts) / elapsed, 1),
                "errors": errors,
                "request_latency": stats.summarize_samples([x for lst in latencies for x in lst]).as_dict(),
            }

        return await self._phase(concurrency, publish)
