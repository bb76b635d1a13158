"""The targets a run is judged on, in one system: each `Check` reads one figure of eventcast (with the
baseline's beside it), compares it with its target and says PASS, FAIL, MIN (above the minimum, below the
target), "(projected)" when judged on a projection from server CPU rather than a measurement, or why it could
not be judged. Two groups use it: the first targets (`first_targets`, judged on the `targets` scenario for each
server; a FAIL there fails the command) and the per-core targets (`performance_targets`, informational).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.bench.figures import (
    MB,
    fmt,
    num,
    pooled_percentile,
    publish_run,
    ratio,
    rounded,
    scenario,
    servers_of,
    step_of,
    sustained_of,
)

PASS, FAIL, MIN, UNJUDGED = "PASS", "FAIL", "MIN", "N/A"


@dataclass(frozen=True)
class Check:
    """One target judged on one figure."""

    key: str
    figure: str
    target: str
    status: str  # PASS | FAIL | MIN | PASS (projected) | FAIL (projected) | N/A | NA | NOT_RUN
    value: float | None = None
    unit: str = ""
    eventcast: str = "-"  # the figure as shown (with its unit, brackets for a second figure)
    baseline: str = "-"
    load_limited: bool = False
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.status.startswith(PASS) or self.status == MIN

    def as_dict(self) -> dict[str, Any]:
        """The JSON of a per-core target (`performance_targets` in the report)."""
        return {
            "key": self.key,
            "figure": self.figure,
            "target": self.target,
            "eventcast": self.eventcast,
            "baseline": self.baseline,
            "value": self.value,
            "status": self.status,
            "load_limited": self.load_limited,
            "note": self.note,
        }

    def first_target_dict(self) -> dict[str, Any]:
        """The JSON of a first target (`servers[].checks` in the report)."""
        return {
            "key": self.key,
            "metric": self.figure,
            "target": self.target,
            "value": self.value,
            "unit": self.unit,
            "status": self.status,
            "passed": self.passed,
        }


def _first(key: str, metric: str, target: str, value: float | None, unit: str, status: str) -> Check:
    return Check(key, metric, target, status, value, unit, eventcast=fmt(value, unit))


def _row(
    key: str,
    figure: str,
    target: str,
    eventcast: str,
    baseline: str,
    status: str,
    value: float | None = None,
    load_limited: bool = False,
    note: str = "",
) -> Check:
    return Check(key, figure, target, status, value, "", eventcast, baseline, load_limited, note)


TEN_K = 10_000


STORM_TARGET = 1_000


NA = "n/a on this machine"


NOT_RUN = "not measured"


def _status(ok: bool | None) -> str:
    return "N/A" if ok is None else ("PASS" if ok else "FAIL")


def first_targets(targets: dict[str, Any]) -> list[Check]:
    """The first targets, judged on the `targets` scenario's steps."""
    steps = {step["clients"]: step for step in targets.get("steps", [])}
    connect_p99 = pooled_percentile([step["connect"] for step in steps.values()], 99.0)
    attempted = sum(step["connect"]["attempted"] for step in steps.values())
    all_connected = attempted > 0 and all(step["connect"]["failed"] == 0 for step in steps.values())
    twenty = steps.get(20)
    latency = twenty["broadcast"]["latency"]["p99_ms"] if twenty else None
    rates = [step["broadcast"]["delivery"]["rate"] for step in steps.values()]
    delivery = min((r for r in rates if r is not None), default=None)
    concurrent = max(
        (
            step["connected"]
            for step in steps.values()
            if step["connect"]["failed"] == 0 and (step["broadcast"]["delivery"]["rate"] or 0) >= 0.99
        ),
        default=0,
    )
    hundred = steps.get(100)
    per_client = hundred["memory"]["per_client_bytes"] if hundred else None
    peak = hundred["memory"]["peak_rss_bytes"] if hundred else None
    concurrent_status = "PASS" if concurrent >= 100 else ("MIN" if concurrent >= 50 else "FAIL")
    return [
        _first(
            "connect_time",
            "connection establishment (p99, per client)",
            "< 100 ms",
            rounded(connect_p99),
            "ms",
            _status(None if connect_p99 is None else connect_p99 < 100 and all_connected),
        ),
        _first(
            "broadcast_latency_20",
            "broadcast latency, 20 clients (p99)",
            "< 50 ms",
            rounded(latency),
            "ms",
            _status(None if latency is None else latency < 50),
        ),
        _first(
            "delivery",
            "message delivery (worst step)",
            "> 99 %",
            None if delivery is None else round(delivery * 100, 4),
            "%",
            _status(None if delivery is None else delivery > 0.99),
        ),
        _first(
            "concurrent_clients",
            "concurrent clients",
            "100+ (min 50)",
            concurrent,
            "clients",
            concurrent_status,
        ),
        _first(
            "memory_per_client",
            "memory per client (100 clients)",
            "< 1 MB",
            rounded(per_client / 1024 if per_client is not None else None, 1),
            "KB",
            _status(None if per_client is None else per_client < MB),
        ),
        _first(
            "peak_memory_100",
            "peak memory with 100 clients",
            "< 200 MB",
            rounded(peak / MB if peak is not None else None, 1),
            "MB",
            _status(None if peak is None else peak < 200 * MB),
        ),
    ]


def _judge(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _limited(phase: dict[str, Any] | None) -> tuple[bool, str]:
    cpu = (phase or {}).get("cpu") or {}
    if not cpu.get("load_limited"):
        return False, ""
    server = cpu.get("server_pct")
    return True, (
        f"load-generator-limited: a load process at {cpu.get('load_max_pct'):.0f}% of a core"
        + (f", server at {server:.0f}%" if server is not None else "")
    )


def _memory_row(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> Check:
    def per_client(server: dict[str, Any] | None) -> tuple[float | None, int | None]:
        for name in ("sustained", "storm"):
            found = scenario(server, name)
            if found and found["memory"].get("per_client_bytes") is not None:
                return found["memory"]["per_client_bytes"] / 1024, found["connected"]
        return None, None

    value, clients = per_client(ours)
    base, _ = per_client(theirs)
    figure = "memory per idle connection (RSS delta / connections)"
    if clients:
        figure += f", {clients:,} clients"
    return _row(
        "memory_per_idle_connection",
        figure,
        "<= 20 KB",
        num(rounded(value, 2), "KB"),
        num(rounded(base, 2), "KB"),
        NOT_RUN if value is None else _judge(value <= 20),
        rounded(value, 2),
    )


def _time_to_last_row(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> Check:
    def figures_of(server: dict[str, Any] | None) -> tuple[float | None, float | None, dict[str, Any] | None]:
        step = step_of(server, "ramp", TEN_K)
        if not step:
            return None, None, None
        last = step["broadcast"]["time_to_last"]
        return last["p50_ms"], last["max_ms"], step["broadcast"]

    p50, worst, phase = figures_of(ours)
    base_p50, base_max, _ = figures_of(theirs)
    limited, note = _limited(phase)
    efficiency = (phase or {}).get("server_efficiency") or {}
    server_ms, load_ms = efficiency.get("server_cpu_ms_per_event"), efficiency.get("load_cpu_ms_per_event")
    if server_ms is not None and load_ms is not None:
        note = f"{note}; " if note else ""
        note += f"CPU per broadcast: server {server_ms:.0f} ms, load generator {load_ms:.0f} ms"
        if p50 is not None and load_ms >= 0.5 * p50:
            limited = True
    return _row(
        "broadcast_time_to_last_10k",
        "single broadcast to 10,000 clients, time until the last client has it (p50 of the ramp step's "
        "paced broadcasts; max in brackets)",
        "<= 100 ms",
        "-" if p50 is None else f"{num(p50, 'ms')} ({num(worst, 'ms')})",
        "-" if base_p50 is None else f"{num(base_p50, 'ms')} ({num(base_max, 'ms')})",
        NOT_RUN if p50 is None else _judge(p50 <= 100),
        p50,
        limited,
        note,
    )


def _sustained_rows(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> list[Check]:
    mine, base = sustained_of(ours, TEN_K), sustained_of(theirs, TEN_K)

    def measured(entry: dict[str, Any] | None) -> tuple[float | None, float | None, float | None]:
        if not entry:
            return None, None, None
        phase = entry["sustained"]
        return (
            phase["throughput"]["deliveries_per_s"],
            phase["latency"]["p99_ms"],
            phase["delivery"]["rate"],
        )

    def projected(entry: dict[str, Any] | None) -> tuple[float | None, float | None]:
        efficiency = (entry or {}).get("sustained", {}).get("server_efficiency") or {}
        return (
            efficiency.get("projected_deliveries_per_s_per_core"),
            efficiency.get("server_cpu_us_per_delivery"),
        )

    rate, p99, delivered = measured(mine)
    base_rate, base_p99, _ = measured(base)
    limited, note = _limited(mine["sustained"] if mine else None)
    if delivered is not None and delivered < 1.0:
        note = f"{note}; " if note else ""
        note += f"delivery {delivered * 100:.3f}%"
    how = "measured"
    search = (mine or {}).get("search")
    if search is not None:  # the highest rate with every event delivered and p99 <= 150 ms: the figure itself
        how = "the highest rate a search over rates found"
        rate, p99, delivered = search["deliveries_per_s"], search["p99_ms"], 1.0
        base_search = (base or {}).get("search") or {}
        base_rate, base_p99 = base_search.get("deliveries_per_s"), base_search.get("p99_ms")
        limited = bool(search["load_limited"])
        failed = search.get("failed") or {}
        note = f"the next rate failed: {failed['failure']}" if failed.get("failure") else search["stopped"]
        if limited:
            note = f"load generator busy at the best or the failing step; {note}"
    rows = [
        _row(
            "sustained_10k_measured",
            "sustained deliveries/s at 10,000 clients, every event delivered, p99 <= 150 ms "
            f"({how}; p99 in brackets)",
            ">= 1,000,000 /s",
            "-" if rate is None else f"{num(rate, '/s')} ({num(p99, 'ms')})",
            "-" if base_rate is None else f"{num(base_rate, '/s')} ({num(base_p99, 'ms')})",
            NOT_RUN if rate is None else _judge(rate >= 1e6 and (p99 or 0) <= 150 and delivered == 1.0),
            rate,
            limited,
            note,
        )
    ]
    per_core, per_delivery = projected(mine)
    base_core, base_per_delivery = projected(base)
    rows.append(
        _row(
            "sustained_10k_projected",
            "same, projected per server core from measured server CPU (1e6 / server CPU us per delivery; "
            "a projection, not a measurement; us per delivery in brackets)",
            ">= 1,000,000 /s",
            "-" if per_core is None else f"{num(per_core, '/s')} ({num(per_delivery, 'us')})",
            "-" if base_core is None else f"{num(base_core, '/s')} ({num(base_per_delivery, 'us')})",
            NOT_RUN if per_core is None else f"{_judge(per_core >= 1e6)} (projected)",
            per_core,
            limited,
            "latency at a fully busy core is not measured" if per_core is not None else "",
        )
    )
    measured_ratio = ratio(rate, base_rate)
    rows.append(
        _row(
            "deliveries_ratio_10k",
            "sustained deliveries/s vs baseline at 10,000 clients (measured)",
            ">= 5x",
            "-" if measured_ratio is None else f"{measured_ratio:.2f}x",
            "1x",
            NOT_RUN if measured_ratio is None else _judge(measured_ratio >= 5),
            measured_ratio,
            limited,
            "eventcast side load-generator-limited: the measured ratio is a lower bound" if limited else "",
        )
    )
    projected_ratio = ratio(per_core, base_core)
    rows.append(
        _row(
            "deliveries_ratio_10k_projected",
            "same, from server CPU per delivery (baseline us / eventcast us; a projection)",
            ">= 5x",
            "-" if projected_ratio is None else f"{projected_ratio:.2f}x",
            "1x",
            NOT_RUN if projected_ratio is None else f"{_judge(projected_ratio >= 5)} (projected)",
            projected_ratio,
        )
    )
    return rows


def _at_most_row(
    key: str,
    figure: str,
    bound: float,
    unit: str,
    get: Callable[[dict[str, Any] | None], float | None],
    ours: dict[str, Any] | None,
    theirs: dict[str, Any] | None,
) -> Check:
    """A row whose target is an upper bound on one figure, read the same way from both servers."""
    value = get(ours)
    return _row(
        key,
        figure,
        f"<= {bound:g} {unit}",
        num(value, unit),
        num(get(theirs), unit),
        NOT_RUN if value is None else _judge(value <= bound),
        value,
    )


def _storm_row(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> Check:
    def p99(server: dict[str, Any] | None) -> float | None:
        storm = scenario(server, "storm")
        if not storm or storm["clients"] != STORM_TARGET:
            return None
        value: float | None = storm["connect"]["p99_ms"]
        return value

    figure = "1,000 clients connecting at once, p99 connect time"
    return _at_most_row("storm_1000_connect_p99", figure, 150, "ms", p99, ours, theirs)


def _twenty_row(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> Check:
    def p99(server: dict[str, Any] | None) -> float | None:
        step = step_of(server, "targets", 20)
        value: float | None = step["broadcast"]["latency"]["p99_ms"] if step else None
        return value

    figure = "20 clients, broadcast latency p99"
    return _at_most_row("broadcast_20_p99", figure, 2, "ms", p99, ours, theirs)


def _publish_note(run: dict[str, Any] | None, note: str) -> str:
    if not run:
        return note
    efficiency = run.get("server_efficiency") or {}
    server = run["cpu"].get("server_pct")
    projected = efficiency.get("projected_requests_per_s_per_core")
    parts = [note] if note else []
    if server is not None:
        parts.append(f"server at {server:.0f}% of its core, publisher at {run['cpu']['publisher_pct']:.0f}%")
    if projected is not None:
        per_request = efficiency["server_cpu_us_per_request"]
        parts.append(
            f"server CPU {per_request:,.0f} us per request: projected {projected:,.0f} req/s per core"
        )
    return "; ".join(parts)


def _publish_rows(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> list[Check]:
    rows = []
    publish = scenario(ours, "publish")
    redis_error = next(
        (e.get("error") for e in (publish or {}).get("other_engines") or [] if e.get("error")), None
    )
    for engine in ("redis", "memory"):
        single = publish_run(ours, engine, 1)
        base_single = publish_run(theirs, "memory", 1) if engine == "memory" else None
        limited, note = _limited(single)
        if single is None and engine == "redis" and redis_error:
            note = f"redis run failed: {redis_error}"
        requests = single["requests_per_s"] if single else None
        p95 = single["request_latency"]["p95_ms"] if single else None
        note = _publish_note(single, note)
        rows.append(
            _row(
                f"publish_single_{engine}",
                f"HTTP publish, single events, {engine} engine, no subscribers (p95 in brackets)",
                ">= 5,000 req/s, p95 <= 10 ms",
                "-" if requests is None else f"{num(requests, '/s')} ({num(p95, 'ms')})",
                "-"
                if base_single is None
                else f"{num(base_single['requests_per_s'], '/s')} "
                f"({num(base_single['request_latency']['p95_ms'], 'ms')})",
                NOT_RUN if requests is None else _judge(requests >= 5000 and (p95 or 0) <= 10),
                requests,
                limited,
                note,
            )
        )
    for engine in ("redis", "memory"):
        batch = publish_run(ours, engine, 100)
        base_batch = publish_run(theirs, "memory", 100) if engine == "memory" else None
        limited, note = _limited(batch)
        note = _publish_note(batch, note)
        events = batch["published_events_per_s"] if batch else None
        rows.append(
            _row(
                f"publish_batch100_{engine}",
                f"HTTP publish, batches of 100, {engine} engine, no subscribers",
                ">= 100,000 events/s",
                num(events, "/s"),
                "-" if base_batch is None else num(base_batch["published_events_per_s"], "/s"),
                NOT_RUN if events is None else _judge(events >= 100_000),
                events,
                limited,
                note,
            )
        )
    return rows


TWO_WORKERS_FIGURE = "2 workers on 2 cores vs 1 worker, deliveries/s"


def _workers_row(ours: dict[str, Any] | None, cpus: int, workers: int) -> Check:
    """The 2-workers scaling row from the `workers` scenario: judged on the measured ratio, or on the ratio
    projected from server CPU when the load generator shared a core with a worker or was the limit."""
    found = scenario(ours, "workers") or {}
    measured, projected = found.get("ratio_measured"), found.get("ratio_projected")
    if measured is None or projected is None:
        note = (
            f"{cpus} cores: the load generator needs a core of its own, so 2 server cores leave it none"
            if cpus <= 2
            else f"this run used {workers} worker(s); run --workers 2 and compare"
        )
        if found.get("error"):
            note = f"workers scenario failed: {found['error']}"
        elif found.get("skipped"):
            note = f"workers scenario skipped: {found['skipped']}"
        return _row("two_workers_scaling", TWO_WORKERS_FIGURE, ">= 1.6x", "-", "-", NA, note=note)
    runs = {run["workers"]: run for run in found.get("runs", [])}
    shared = bool(found.get("load_shared_core"))
    limited = bool(found.get("load_limited"))
    on_projection = shared or limited
    value = projected if on_projection else measured
    if shared:
        note = "projected from CPU: the load generator shared a core with a worker"
    elif limited:
        note = "projected from CPU: the load generator was the limit of a run"
    else:
        note = "measured: the load generator had its own core(s) and was not the limit"
    parts = [note]
    one, two = runs.get(1) or {}, runs.get(2) or {}
    if one.get("server_cpu_us_per_delivery") and two.get("server_cpu_us_per_delivery"):
        parts.append(
            f"server CPU per delivery {one['server_cpu_us_per_delivery']:.3g} us (1 worker), "
            f"{two['server_cpu_us_per_delivery']:.3g} us (2 workers)"
        )
    busiest = found.get("ratio_projected_busiest_worker")
    if busiest is not None:
        parts.append(f"{busiest:.2f}x if the busier worker sets the pace")
    split = two.get("clients_per_worker")
    if split:
        parts.append(f"clients per worker {'/'.join(f'{n:,}' for n in split)}")
    undelivered = [n for n, run in sorted(runs.items()) if (run.get("delivery_rate") or 0) < 1.0]
    if undelivered:
        parts.append("not every event delivered with " + ", ".join(f"{n} worker(s)" for n in undelivered))
    return _row(
        "two_workers_scaling",
        TWO_WORKERS_FIGURE + " (measured, and projected from server CPU; redis-server on the same machine)",
        ">= 1.6x",
        f"{measured:.2f}x measured, {projected:.2f}x projected",
        "-",
        f"{_judge(value >= 1.6)} (projected)" if on_projection else _judge(value >= 1.6),
        value,
        on_projection,
        "; ".join(parts),
    )


def performance_targets(report: dict[str, Any]) -> list[Check]:
    """The per-core targets judged on one report (eventcast, with the baseline's figures beside them)."""
    ours, theirs = servers_of(report)
    workers = (ours or {}).get("workers") or 1
    cpus = (report.get("machine") or {}).get("cpus") or 0
    return [
        _memory_row(ours, theirs),
        _time_to_last_row(ours, theirs),
        *_sustained_rows(ours, theirs),
        _storm_row(ours, theirs),
        _twenty_row(ours, theirs),
        *_publish_rows(ours, theirs),
        _workers_row(ours, cpus, workers),
        _row(
            "connections_per_process",
            "connections per process (~19,000, open-file limit 20,000) with all of the above holding",
            "~19,000",
            "-",
            "-",
            NOT_RUN,
            note="the standard run stops at --max-clients 10000",
        ),
    ]


PER_CORE_TITLE = "Per-core targets (one worker process on one core)"


def server_checks(server: dict[str, Any]) -> list[Check]:
    """The first targets of one server of a report (none when its `targets` scenario did not run)."""
    targets = scenario(server, "targets")
    return first_targets(targets) if targets else []
