"""Every comparable figure of a bench result, read from the result JSON into typed rows: `Figure` (one value of
one server), `Comparison` (eventcast beside the baseline, with the ratio) and `KeyFigure` (the headline rows).
Also the formatting of a value with its unit, shared by the console and the Markdown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

MB = 1024 * 1024


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def percent(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 100, 4)


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return round(value / base, 3)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if unit != "%" else f"{value:.2f}"
    return f"{text} {unit}".strip()


def num(value: float | None, unit: str) -> str:
    return fmt(value, unit) if value is not None else "-"


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def pooled_percentile(connects: Iterable[dict[str, Any]], p: float) -> float | None:
    """Nearest-rank percentile over several steps' connect samples; a step whose JSON keeps a thinned subset
    of its samples (see `stats.thin_samples`) weighs each kept sample by count / kept."""
    weighted: list[tuple[float, float]] = []
    for connect in connects:
        samples = connect["samples_ms"]
        if samples:
            weight = max(1.0, connect.get("count", len(samples)) / len(samples))
            weighted += [(value, weight) for value in samples]
    if not weighted:
        return None
    weighted.sort()
    total = sum(weight for _, weight in weighted)
    wanted = p / 100.0 * total
    seen = 0.0
    for value, weight in weighted:
        seen += weight
        if seen >= wanted - 1e-9:
            return value
    return weighted[-1][0]


@dataclass(frozen=True)
class Figure:
    key: str  # stable id, e.g. "ramp.1000.broadcast_p99_ms"
    section: str
    label: str
    value: float | None
    unit: str
    higher_is_better: bool


def _step_figures(prefix: str, section: str, step: dict[str, Any]) -> Iterable[Figure]:
    connect = step.get("connect")
    if connect and connect.get("attempted"):
        yield Figure(f"{prefix}.connect_p50_ms", section, "connect p50", connect["p50_ms"], "ms", False)
        yield Figure(f"{prefix}.connect_p99_ms", section, "connect p99", connect["p99_ms"], "ms", False)
        yield Figure(
            f"{prefix}.connect_success",
            section,
            "connect success",
            percent(connect["success_rate"]),
            "%",
            True,
        )
    broadcast = step.get("broadcast")
    if broadcast:
        yield Figure(
            f"{prefix}.latency_p50_ms",
            section,
            "broadcast latency p50",
            broadcast["latency"]["p50_ms"],
            "ms",
            False,
        )
        yield Figure(
            f"{prefix}.latency_p99_ms",
            section,
            "broadcast latency p99",
            broadcast["latency"]["p99_ms"],
            "ms",
            False,
        )
        yield Figure(
            f"{prefix}.latency_max_ms",
            section,
            "broadcast latency max",
            broadcast["latency"]["max_ms"],
            "ms",
            False,
        )
        last = broadcast["time_to_last"]
        yield Figure(
            f"{prefix}.time_to_last_p50_ms", section, "time to last client p50", last["p50_ms"], "ms", False
        )
        yield Figure(
            f"{prefix}.time_to_last_max_ms", section, "time to last client max", last["max_ms"], "ms", False
        )
        yield Figure(
            f"{prefix}.delivery", section, "delivery", percent(broadcast["delivery"]["rate"]), "%", True
        )
        paced = broadcast.get("server_efficiency") or {}
        yield Figure(
            f"{prefix}.server_cpu_ms_per_broadcast",
            section,
            "server CPU per broadcast event",
            paced.get("server_cpu_ms_per_event"),
            "ms",
            False,
        )
        yield Figure(
            f"{prefix}.load_cpu_ms_per_broadcast",
            section,
            "load-generator CPU per broadcast event",
            paced.get("load_cpu_ms_per_event"),
            "ms",
            False,
        )
        # where a broadcast's time goes (results of older versions of the bench have none of these)
        if "server_user_ms_per_event" in paced:
            for part, label in (("user", "its own code"), ("sys", "the kernel for it")):
                yield Figure(
                    f"{prefix}.server_{part}_ms_per_broadcast",
                    section,
                    f"server CPU per broadcast event, {label}",
                    paced.get(f"server_{part}_ms_per_event"),
                    "ms",
                    False,
                )
        if "time_to_first" in broadcast:
            yield Figure(
                f"{prefix}.time_to_first_p50_ms",
                section,
                "time to first client p50",
                broadcast["time_to_first"]["p50_ms"],
                "ms",
                False,
            )
    sustained = step.get("sustained")
    if sustained:
        throughput = sustained["throughput"]["deliveries_per_s"]
        yield Figure(f"{prefix}.deliveries_per_s", section, "sustained deliveries/s", throughput, "/s", True)
        yield Figure(
            f"{prefix}.sustained_p99_ms",
            section,
            "sustained latency p99",
            sustained["latency"]["p99_ms"],
            "ms",
            False,
        )
        yield Figure(
            f"{prefix}.sustained_delivery",
            section,
            "sustained delivery",
            percent(sustained["delivery"]["rate"]),
            "%",
            True,
        )
        yield Figure(
            f"{prefix}.load_cpu_pct",
            section,
            "load generator CPU max",
            sustained["cpu"]["load_max_pct"],
            "%",
            False,
        )
        yield Figure(
            f"{prefix}.server_cpu_pct", section, "server CPU", sustained["cpu"]["server_pct"], "%", False
        )
        efficiency = sustained.get("server_efficiency") or {}
        yield Figure(
            f"{prefix}.server_cpu_us_per_delivery",
            section,
            "server CPU per delivery",
            efficiency.get("server_cpu_us_per_delivery"),
            "us",
            False,
        )
        yield Figure(
            f"{prefix}.projected_deliveries_per_s_per_core",
            section,
            "projected deliveries/s per server core (from CPU)",
            efficiency.get("projected_deliveries_per_s_per_core"),
            "/s",
            True,
        )
    memory = step.get("memory")
    if memory:
        per_client = memory.get("per_client_bytes")
        yield Figure(
            f"{prefix}.memory_per_client_kb",
            section,
            "memory per client",
            None if per_client is None else round(per_client / 1024, 2),
            "KB",
            False,
        )
        peak = memory.get("peak_rss_bytes")
        yield Figure(
            f"{prefix}.peak_rss_mb",
            section,
            "peak RSS",
            None if peak is None else round(peak / MB, 1),
            "MB",
            False,
        )


def figures(result: dict[str, Any]) -> list[Figure]:
    """Every comparable figure of one server's result, in display order."""
    out: list[Figure] = []
    scenarios = result.get("scenarios", {})
    for step in scenarios.get("targets", {}).get("steps", []):
        out += _step_figures(f"targets.{step['clients']}", f"targets, {step['clients']} clients", step)
    if "storm" in scenarios:
        storm = scenarios["storm"]
        out += _step_figures("storm", f"storm, {storm['clients']} at once", storm)
    for step in scenarios.get("ramp", {}).get("steps", []):
        out += _step_figures(f"ramp.{step['clients']}", f"ramp, {step['clients']} clients", step)
    if "sustained" in scenarios:
        sustained = scenarios["sustained"]
        section = f"sustained, {sustained['clients']} clients"
        out += _step_figures("sustained", section, sustained)
        search = sustained.get("search")
        if search is not None:
            out += [
                Figure(
                    "sustained.search_deliveries_per_s",
                    section,
                    "sustained deliveries/s, all delivered, p99 <= 150 ms (rate search)",
                    search["deliveries_per_s"],
                    "/s",
                    True,
                ),
                Figure(
                    "sustained.search_p99_ms",
                    section,
                    "latency p99 at that rate",
                    search["p99_ms"],
                    "ms",
                    False,
                ),
            ]
    publish = scenarios.get("publish", {})
    engines = [("", publish.get("runs", []))]
    engines += [(e["engine"], e.get("runs") or []) for e in publish.get("other_engines") or []]
    for engine, runs in engines:
        out += _publish_figures(engine, runs)
    out += _workers_figures(scenarios.get("workers"))
    return out


def _workers_figures(workers: dict[str, Any] | None) -> list[Figure]:
    """The `workers` scenario: each run's figures, and the 2-vs-1 ratios (measured and projected)."""
    if not workers or not workers.get("runs"):
        return []
    out: list[Figure] = []
    for run in workers["runs"]:
        n = run["workers"]
        prefix, section = f"workers.w{n}", f"workers, {n} on redis, {run['clients']} clients"
        redis = run.get("redis") or {}
        out += [
            Figure(
                f"{prefix}.deliveries_per_s",
                section,
                "sustained deliveries/s",
                run["deliveries_per_s"],
                "/s",
                True,
            ),
            Figure(
                f"{prefix}.sustained_delivery",
                section,
                "sustained delivery",
                percent(run["delivery_rate"]),
                "%",
                True,
            ),
            Figure(
                f"{prefix}.sustained_p99_ms", section, "sustained latency p99", run["p99_ms"], "ms", False
            ),
            Figure(
                f"{prefix}.server_cpu_pct", section, "server CPU (all workers)", run["server_pct"], "%", False
            ),
            Figure(
                f"{prefix}.server_cpu_us_per_delivery",
                section,
                "server CPU per delivery",
                run["server_cpu_us_per_delivery"],
                "us",
                False,
            ),
            Figure(
                f"{prefix}.redis_cpu_us_per_delivery",
                section,
                "redis-server CPU per delivery",
                redis.get("cpu_us_per_delivery"),
                "us",
                False,
            ),
            Figure(
                f"{prefix}.load_max_pct", section, "load generator CPU max", run["load_max_pct"], "%", False
            ),
        ]
    section = "workers, 2 vs 1"
    out += [
        Figure(
            "workers.ratio_measured",
            section,
            "deliveries/s ratio (measured)",
            workers["ratio_measured"],
            "x",
            True,
        ),
        Figure(
            "workers.ratio_projected",
            section,
            "deliveries/s ratio projected from server CPU",
            workers["ratio_projected"],
            "x",
            True,
        ),
    ]
    return out


def _publish_figures(engine: str, runs: list[dict[str, Any]]) -> list[Figure]:
    out: list[Figure] = []
    for run in runs:
        prefix = f"publish.{engine + '.' if engine else ''}b{run['batch']}.s{run['subscribers']}"
        section = f"publish{f' ({engine})' if engine else ''}, batch {run['batch']}, {run['subscribers']} subscribers"
        latency = run["request_latency"]
        out += [
            Figure(f"{prefix}.requests_per_s", section, "requests/s", run["requests_per_s"], "/s", True),
            Figure(f"{prefix}.events_per_s", section, "events/s", run["published_events_per_s"], "/s", True),
            Figure(f"{prefix}.request_p50_ms", section, "request p50", latency["p50_ms"], "ms", False),
            Figure(f"{prefix}.request_p95_ms", section, "request p95", latency["p95_ms"], "ms", False),
            Figure(f"{prefix}.request_p99_ms", section, "request p99", latency["p99_ms"], "ms", False),
        ]
        efficiency = run.get("server_efficiency") or {}
        out += [
            Figure(f"{prefix}.server_pct", section, "server CPU", run["cpu"]["server_pct"], "%", False),
            Figure(
                f"{prefix}.server_cpu_us_per_request",
                section,
                "server CPU per request",
                efficiency.get("server_cpu_us_per_request"),
                "us",
                False,
            ),
            Figure(
                f"{prefix}.projected_requests_per_s_per_core",
                section,
                "projected requests/s per server core (from CPU)",
                efficiency.get("projected_requests_per_s_per_core"),
                "/s",
                True,
            ),
        ]
        if run["subscribers"]:
            out.append(
                Figure(f"{prefix}.delivery", section, "delivery", percent(run["delivery"]["rate"]), "%", True)
            )
    return out


@dataclass(frozen=True)
class Comparison:
    """One figure both servers have: eventcast, the baseline and eventcast / baseline."""

    key: str
    section: str
    figure: str
    unit: str
    eventcast: float | None
    baseline: float | None
    ratio: float | None
    better: str  # "higher" or "lower": which way the ratio should go

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def comparison(result: dict[str, Any], baseline: dict[str, Any]) -> list[Comparison]:
    """eventcast/baseline for every figure both have; `better` says which way the ratio should go."""
    base = {f.key: f for f in figures(baseline)}
    rows = []
    for figure in figures(result):
        other = base.get(figure.key)
        if other is None:
            continue
        rows.append(
            Comparison(
                figure.key,
                figure.section,
                figure.label,
                figure.unit,
                figure.value,
                other.value,
                ratio(figure.value, other.value),
                "higher" if figure.higher_is_better else "lower",
            )
        )
    return rows


def servers_of(report: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    by_label = {server["label"]: server for server in report.get("servers", [])}
    return by_label.get("eventcast"), by_label.get("baseline")


def scenario(server: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if server is None:
        return None
    found: dict[str, Any] | None = server.get("scenarios", {}).get(name)
    return found


def step_of(server: dict[str, Any] | None, name: str, clients: int) -> dict[str, Any] | None:
    for step in (scenario(server, name) or {}).get("steps", []):
        if step["clients"] == clients:
            found: dict[str, Any] = step
            return found
    return None


def sustained_of(server: dict[str, Any] | None, clients: int) -> dict[str, Any] | None:
    """The sustained scenario at `clients`, else the ramp step at `clients` (its short sustained burst)."""
    sustained = scenario(server, "sustained")
    if sustained and sustained["clients"] == clients:
        return sustained
    step = step_of(server, "ramp", clients)
    return step if step and step.get("sustained") else None


def publish_run(
    server: dict[str, Any] | None, engine: str, batch: int, subscribers: int = 0
) -> dict[str, Any] | None:
    """The publish flood run on `engine` ("memory" or "redis") with that batch size and subscriber count."""
    publish = scenario(server, "publish")
    if not publish:
        return None
    candidates: list[list[dict[str, Any]]] = []
    if str(publish.get("engine") or "memory://").startswith(engine):
        candidates.append(publish.get("runs") or [])
    for other in publish.get("other_engines") or []:
        if other["engine"] == engine:
            candidates.append(other.get("runs") or [])
    for runs in candidates:
        for run in runs:
            if run["batch"] == batch and run["subscribers"] == subscribers:
                return run
    return None


def limits_notes(server: dict[str, Any]) -> list[str]:
    """Say where the load generator, not the server, may have set a figure."""
    notes = []
    by_key = {figure.key: figure for figure in figures(server)}
    for figure in by_key.values():
        if figure.key.endswith("load_cpu_pct") and figure.value is not None and figure.value >= 90:
            note = (
                f"{server['label']} {figure.section}: a load-generator process ran at {figure.value:.0f}% "
                "of a core; the figure may be the load generator's limit"
            )
            prefix = figure.key.removesuffix("load_cpu_pct")
            server_cpu = by_key.get(prefix + "server_cpu_pct")
            projected = by_key.get(prefix + "projected_deliveries_per_s_per_core")
            if server_cpu and server_cpu.value is not None and projected and projected.value is not None:
                note += (
                    f" (server at {server_cpu.value:.0f}% of its core; projected from its CPU per delivery: "
                    f"{projected.value:,.0f} deliveries/s per server core)"
                )
            notes.append(note)
    return notes


KEY_FIGURES: tuple[tuple[str, str], ...] = (
    ("sustained.memory_per_client_kb", "memory per idle connection, {n} clients"),
    ("storm.connect_p99_ms", "connect p99, {storm} clients at once"),
    ("targets.20.latency_p99_ms", "broadcast latency p99, 20 clients"),
    ("ramp.{n}.time_to_last_p50_ms", "single broadcast to {n} clients, time to last p50"),
    ("ramp.{n}.time_to_last_max_ms", "single broadcast to {n} clients, time to last max"),
    ("ramp.{n}.latency_p99_ms", "single broadcast to {n} clients, latency p99"),
    (
        "sustained.search_deliveries_per_s",
        "sustained deliveries/s, {n} clients, all delivered, p99 <= 150 ms",
    ),
    ("sustained.deliveries_per_s", "sustained deliveries/s, {n} clients (measured)"),
    ("sustained.sustained_p99_ms", "sustained latency p99, {n} clients"),
    ("sustained.sustained_delivery", "sustained delivery, {n} clients"),
    ("sustained.server_cpu_pct", "server CPU while sustained (share of its core)"),
    ("sustained.load_cpu_pct", "busiest load-generator process while sustained"),
    ("sustained.server_cpu_us_per_delivery", "server CPU per delivery, {n} clients"),
    (
        "sustained.projected_deliveries_per_s_per_core",
        "projected deliveries/s per server core (from CPU, a projection)",
    ),
    ("ramp.{n}.server_cpu_ms_per_broadcast", "server CPU per single broadcast to {n} clients"),
    ("ramp.{n}.server_user_ms_per_broadcast", "  of which user (the server's own code)"),
    ("ramp.{n}.server_sys_ms_per_broadcast", "  of which system (the kernel sending for it)"),
    ("ramp.{n}.time_to_first_p50_ms", "single broadcast to {n} clients, time to first p50"),
    ("ramp.{n}.load_cpu_ms_per_broadcast", "load-generator CPU to receive one broadcast, {n} clients"),
    ("sustained.peak_rss_mb", "peak RSS, {n} clients sustained"),
    ("publish.b1.s0.requests_per_s", "HTTP publish, single events, req/s"),
    ("publish.b1.s0.request_p95_ms", "HTTP publish, single events, p95"),
    ("publish.b1.s0.server_cpu_us_per_request", "HTTP publish, single events, server CPU per request"),
    ("publish.b100.s0.events_per_s", "HTTP publish, batches of 100, events/s"),
    ("publish.redis.b1.s0.requests_per_s", "HTTP publish (redis engine), single events, req/s"),
    ("publish.redis.b1.s0.request_p95_ms", "HTTP publish (redis engine), single events, p95"),
    ("publish.redis.b100.s0.events_per_s", "HTTP publish (redis engine), batches of 100, events/s"),
    ("workers.ratio_measured", "2 workers vs 1 (redis engine), deliveries/s ratio (measured)"),
    ("workers.ratio_projected", "2 workers vs 1 (redis engine), ratio projected from server CPU"),
)


@dataclass(frozen=True)
class KeyFigure:
    """One headline row: eventcast, the baseline and eventcast / baseline (None where a side has no figure)."""

    key: str
    figure: str
    unit: str
    eventcast: float | None
    baseline: float | None
    ratio: float | None
    better: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def key_figures(report: dict[str, Any]) -> list[KeyFigure]:
    """The headline figures: eventcast, baseline and eventcast/baseline (None where a side has no figure)."""
    ours, theirs = servers_of(report)
    if ours is None:
        return []
    sustained = scenario(ours, "sustained") or {}
    storm = scenario(ours, "storm") or {}
    ramp_steps = (scenario(ours, "ramp") or {}).get("steps", [])
    n = sustained.get("clients") or max((step["clients"] for step in ramp_steps), default=0)
    mine = {f.key: f for f in figures(ours)}
    base = {f.key: f for f in figures(theirs)} if theirs else {}
    rows = []
    for key_template, label in KEY_FIGURES:
        key = key_template.format(n=n)
        figure = mine.get(key)
        if figure is None:
            continue
        other = base.get(key)
        rows.append(
            KeyFigure(
                key,
                label.format(n=f"{n:,}", storm=f"{storm.get('clients', 0):,}"),
                figure.unit,
                figure.value,
                other.value if other else None,
                ratio(figure.value, other.value) if other else None,
                "higher" if figure.higher_is_better else "lower",
            )
        )
    return rows
