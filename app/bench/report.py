"""Turn results into judgements and text: the targets table (PASS/FAIL), the figures of every step, the
eventcast/baseline ratios, and the rich tables printed at the end of a run. Pure functions over the result
dicts, so the tests can check them without running anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

MB = 1024 * 1024


@dataclass(frozen=True)
class Check:
    """One row of the first-targets table."""

    key: str
    metric: str
    target: str
    value: float | None
    unit: str
    status: str  # PASS | FAIL | MIN (above the minimum, below the target) | N/A

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "metric": self.metric,
            "target": self.target,
            "value": self.value,
            "unit": self.unit,
            "status": self.status,
            "passed": self.status in ("PASS", "MIN"),
        }


def _status(ok: bool | None) -> str:
    return "N/A" if ok is None else ("PASS" if ok else "FAIL")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


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


def target_checks(targets: dict[str, Any]) -> list[Check]:
    """The issue's table of first targets, judged on the `targets` scenario's steps."""
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
        Check(
            "connect_time",
            "connection establishment (p99, per client)",
            "< 100 ms",
            _round(connect_p99),
            "ms",
            _status(None if connect_p99 is None else connect_p99 < 100 and all_connected),
        ),
        Check(
            "broadcast_latency_20",
            "broadcast latency, 20 clients (p99)",
            "< 50 ms",
            _round(latency),
            "ms",
            _status(None if latency is None else latency < 50),
        ),
        Check(
            "delivery",
            "message delivery (worst step)",
            "> 99 %",
            None if delivery is None else round(delivery * 100, 4),
            "%",
            _status(None if delivery is None else delivery > 0.99),
        ),
        Check(
            "concurrent_clients",
            "concurrent clients",
            "100+ (min 50)",
            concurrent,
            "clients",
            concurrent_status,
        ),
        Check(
            "memory_per_client",
            "memory per client (100 clients)",
            "< 1 MB",
            _round(per_client / 1024 if per_client is not None else None, 1),
            "KB",
            _status(None if per_client is None else per_client < MB),
        ),
        Check(
            "peak_memory_100",
            "peak memory with 100 clients",
            "< 200 MB",
            _round(peak / MB if peak is not None else None, 1),
            "MB",
            _status(None if peak is None else peak < 200 * MB),
        ),
    ]


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
            f"{prefix}.connect_success", section, "connect success", _pct(connect["success_rate"]), "%", True
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
            f"{prefix}.delivery", section, "delivery", _pct(broadcast["delivery"]["rate"]), "%", True
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
            _pct(sustained["delivery"]["rate"]),
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


def _pct(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 100, 4)


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
        out += _step_figures("sustained", f"sustained, {sustained['clients']} clients", sustained)
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
                _pct(run["delivery_rate"]),
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
                Figure(f"{prefix}.delivery", section, "delivery", _pct(run["delivery"]["rate"]), "%", True)
            )
    return out


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return round(value / base, 3)


def comparison(result: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """eventcast/baseline for every figure both have; `better` says which way the ratio should go."""
    base = {f.key: f for f in figures(baseline)}
    rows = []
    for figure in figures(result):
        other = base.get(figure.key)
        if other is None:
            continue
        rows.append(
            {
                "key": figure.key,
                "section": figure.section,
                "figure": figure.label,
                "unit": figure.unit,
                "eventcast": figure.value,
                "baseline": other.value,
                "ratio": ratio(figure.value, other.value),
                "better": "higher" if figure.higher_is_better else "lower",
            }
        )
    return rows


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if unit != "%" else f"{value:.2f}"
    return f"{text} {unit}".strip()


def _ratio_text(row: dict[str, Any]) -> str:
    value = row["ratio"]
    if value is None:
        return "-"
    good = value >= 1 if row["better"] == "higher" else value <= 1
    if row["eventcast"] == row["baseline"]:
        return f"{value:.2f}x"
    colour = "green" if good else "red"
    return f"[{colour}]{value:.2f}x[/{colour}]"


def render(report: dict[str, Any], console: Console) -> None:
    """Print the targets table and the figures (with ratios when a baseline ran)."""
    for server in report["servers"]:
        checks = server.get("checks")
        if not checks:
            continue
        table = Table(title=f"First targets: {server['label']}", title_justify="left")
        for column in ("metric", "target", "measured", "result"):
            table.add_column(column)
        for check in checks:
            colour = {"PASS": "green", "FAIL": "red", "MIN": "yellow"}.get(check["status"], "white")
            table.add_row(
                check["metric"],
                check["target"],
                _fmt(check["value"], check["unit"]),
                f"[{colour}]{check['status']}[/{colour}]",
            )
        console.print(table)
    primary = report["servers"][0]
    rows = report.get("comparison") or []
    if rows:
        table = Table(
            title="eventcast vs naive baseline (ratio = eventcast / baseline)", title_justify="left"
        )
        for column in ("scenario", "figure", "eventcast", "baseline", "ratio"):
            table.add_column(
                column, justify="right" if column in ("eventcast", "baseline", "ratio") else "left"
            )
        section = None
        for row in rows:
            shown = row["section"] if row["section"] != section else ""
            section = row["section"]
            table.add_row(
                shown,
                row["figure"],
                _fmt(row["eventcast"], row["unit"]),
                _fmt(row["baseline"], row["unit"]),
                _ratio_text(row),
            )
        console.print(table)
    else:
        table = Table(title=f"Figures: {primary['label']}", title_justify="left")
        for column in ("scenario", "figure", "value"):
            table.add_column(column)
        section = None
        for figure in figures(primary):
            table.add_row(
                figure.section if figure.section != section else "",
                figure.label,
                _fmt(figure.value, figure.unit),
            )
            section = figure.section
        console.print(table)
    verdicts = performance_targets(report)
    if any(v.status != NOT_RUN for v in verdicts):
        table = Table(title="Issue 6 targets (per worker process on one core)", title_justify="left")
        for column in ("figure", "target", "eventcast", "baseline", "result", "note"):
            table.add_column(column, overflow="fold")
        for verdict in verdicts:
            colour = "green" if verdict.status.startswith("PASS") else "red"
            if not verdict.status.startswith(("PASS", "FAIL")):
                colour = "white"
            table.add_row(
                verdict.figure,
                verdict.target,
                verdict.eventcast,
                verdict.baseline,
                f"[{colour}]{verdict.status}[/{colour}]",
                verdict.note,
            )
        console.print(table)
    ours, _ = _servers(report)
    workers = _scenario(ours, "workers") or {}
    if workers.get("runs"):
        table = Table(title="Workers: 1 against 2 (redis engine)", title_justify="left")
        for column in (
            "workers",
            "clients",
            "deliveries/s",
            "delivery",
            "server CPU",
            "us/delivery",
            "redis us/delivery",
        ):
            table.add_column(column, justify="right")
        for run in workers["runs"]:
            table.add_row(
                str(run["workers"]),
                f"{run['connected']:,}",
                _num(run["deliveries_per_s"], "/s"),
                _num(_pct(run["delivery_rate"]), "%"),
                _num(run["server_pct"], "%"),
                _num(run["server_cpu_us_per_delivery"], "us"),
                _num((run.get("redis") or {}).get("cpu_us_per_delivery"), "us"),
            )
        console.print(table)
        console.print(
            f"2 workers / 1: {_ratio_plain(workers.get('ratio_measured'))} measured, "
            f"{_ratio_plain(workers.get('ratio_projected'))} projected from server CPU"
        )
    elif workers.get("skipped") or workers.get("error"):
        console.print(f"[yellow]workers:[/yellow] {workers.get('error') or workers.get('skipped')}")
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}")


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


# Issue 6: the per-core performance targets, and the key figures ---------------------------------------------
TEN_K = 10_000
STORM_TARGET = 1_000
NA = "n/a on this machine"
NOT_RUN = "not measured"


@dataclass(frozen=True)
class Verdict:
    """One row of the issue-6 targets table."""

    key: str
    figure: str
    target: str
    eventcast: str
    baseline: str
    status: str  # PASS | FAIL | PASS (projected) | FAIL (projected) | NA | NOT_RUN
    value: float | None = None
    load_limited: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
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


def _servers(report: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    by_label = {server["label"]: server for server in report.get("servers", [])}
    return by_label.get("eventcast"), by_label.get("baseline")


def _scenario(server: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if server is None:
        return None
    found: dict[str, Any] | None = server.get("scenarios", {}).get(name)
    return found


def _step(server: dict[str, Any] | None, scenario: str, clients: int) -> dict[str, Any] | None:
    for step in (_scenario(server, scenario) or {}).get("steps", []):
        if step["clients"] == clients:
            found: dict[str, Any] = step
            return found
    return None


def _sustained(server: dict[str, Any] | None, clients: int) -> dict[str, Any] | None:
    """The sustained scenario at `clients`, else the ramp step at `clients` (its short sustained burst)."""
    sustained = _scenario(server, "sustained")
    if sustained and sustained["clients"] == clients:
        return sustained
    step = _step(server, "ramp", clients)
    return step if step and step.get("sustained") else None


def publish_run(
    server: dict[str, Any] | None, engine: str, batch: int, subscribers: int = 0
) -> dict[str, Any] | None:
    """The publish flood run on `engine` ("memory" or "redis") with that batch size and subscriber count."""
    publish = _scenario(server, "publish")
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


def _num(value: float | None, unit: str) -> str:
    return _fmt(value, unit) if value is not None else "-"


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


def _memory_row(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> Verdict:
    def per_client(server: dict[str, Any] | None) -> tuple[float | None, int | None]:
        for name in ("sustained", "storm"):
            scenario = _scenario(server, name)
            if scenario and scenario["memory"].get("per_client_bytes") is not None:
                return scenario["memory"]["per_client_bytes"] / 1024, scenario["connected"]
        return None, None

    value, clients = per_client(ours)
    base, _ = per_client(theirs)
    figure = "memory per idle connection (RSS delta / connections)"
    if clients:
        figure += f", {clients:,} clients"
    return Verdict(
        "memory_per_idle_connection",
        figure,
        "<= 20 KB",
        _num(_round(value, 2), "KB"),
        _num(_round(base, 2), "KB"),
        NOT_RUN if value is None else _judge(value <= 20),
        _round(value, 2),
    )


def _time_to_last_row(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> Verdict:
    def figures_of(server: dict[str, Any] | None) -> tuple[float | None, float | None, dict[str, Any] | None]:
        step = _step(server, "ramp", TEN_K)
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
    return Verdict(
        "broadcast_time_to_last_10k",
        "single broadcast to 10,000 clients, time until the last client has it (p50 of the ramp step's "
        "paced broadcasts; max in brackets)",
        "<= 100 ms",
        "-" if p50 is None else f"{_num(p50, 'ms')} ({_num(worst, 'ms')})",
        "-" if base_p50 is None else f"{_num(base_p50, 'ms')} ({_num(base_max, 'ms')})",
        NOT_RUN if p50 is None else _judge(p50 <= 100),
        p50,
        limited,
        note,
    )


def _sustained_rows(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> list[Verdict]:
    mine, base = _sustained(ours, TEN_K), _sustained(theirs, TEN_K)

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
    rows = [
        Verdict(
            "sustained_10k_measured",
            "sustained deliveries/s at 10,000 clients, every event delivered, p99 <= 150 ms (measured; p99 "
            "in brackets)",
            ">= 1,000,000 /s",
            "-" if rate is None else f"{_num(rate, '/s')} ({_num(p99, 'ms')})",
            "-" if base_rate is None else f"{_num(base_rate, '/s')} ({_num(base_p99, 'ms')})",
            NOT_RUN if rate is None else _judge(rate >= 1e6 and (p99 or 0) <= 150 and delivered == 1.0),
            rate,
            limited,
            note,
        )
    ]
    per_core, per_delivery = projected(mine)
    base_core, base_per_delivery = projected(base)
    rows.append(
        Verdict(
            "sustained_10k_projected",
            "same, projected per server core from measured server CPU (1e6 / server CPU us per delivery; "
            "a projection, not a measurement; us per delivery in brackets)",
            ">= 1,000,000 /s",
            "-" if per_core is None else f"{_num(per_core, '/s')} ({_num(per_delivery, 'us')})",
            "-" if base_core is None else f"{_num(base_core, '/s')} ({_num(base_per_delivery, 'us')})",
            NOT_RUN if per_core is None else f"{_judge(per_core >= 1e6)} (projected)",
            per_core,
            limited,
            "latency at a fully busy core is not measured" if per_core is not None else "",
        )
    )
    measured_ratio = ratio(rate, base_rate)
    rows.append(
        Verdict(
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
        Verdict(
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
) -> Verdict:
    """A row whose target is an upper bound on one figure, read the same way from both servers."""
    value = get(ours)
    return Verdict(
        key,
        figure,
        f"<= {bound:g} {unit}",
        _num(value, unit),
        _num(get(theirs), unit),
        NOT_RUN if value is None else _judge(value <= bound),
        value,
    )


def _storm_row(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> Verdict:
    def p99(server: dict[str, Any] | None) -> float | None:
        storm = _scenario(server, "storm")
        if not storm or storm["clients"] != STORM_TARGET:
            return None
        value: float | None = storm["connect"]["p99_ms"]
        return value

    figure = "1,000 clients connecting at once, p99 connect time"
    return _at_most_row("storm_1000_connect_p99", figure, 150, "ms", p99, ours, theirs)


def _twenty_row(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> Verdict:
    def p99(server: dict[str, Any] | None) -> float | None:
        step = _step(server, "targets", 20)
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


def _publish_rows(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> list[Verdict]:
    rows = []
    publish = _scenario(ours, "publish")
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
            Verdict(
                f"publish_single_{engine}",
                f"HTTP publish, single events, {engine} engine, no subscribers (p95 in brackets)",
                ">= 5,000 req/s, p95 <= 10 ms",
                "-" if requests is None else f"{_num(requests, '/s')} ({_num(p95, 'ms')})",
                "-"
                if base_single is None
                else f"{_num(base_single['requests_per_s'], '/s')} "
                f"({_num(base_single['request_latency']['p95_ms'], 'ms')})",
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
            Verdict(
                f"publish_batch100_{engine}",
                f"HTTP publish, batches of 100, {engine} engine, no subscribers",
                ">= 100,000 events/s",
                _num(events, "/s"),
                "-" if base_batch is None else _num(base_batch["published_events_per_s"], "/s"),
                NOT_RUN if events is None else _judge(events >= 100_000),
                events,
                limited,
                note,
            )
        )
    return rows


TWO_WORKERS_FIGURE = "2 workers on 2 cores vs 1 worker, deliveries/s"


def _workers_row(ours: dict[str, Any] | None, cpus: int, workers: int) -> Verdict:
    """Issue 6's scaling row from the `workers` scenario: judged on the measured ratio, or on the ratio
    projected from server CPU when the load generator shared a core with a worker or was the limit."""
    scenario = _scenario(ours, "workers") or {}
    measured, projected = scenario.get("ratio_measured"), scenario.get("ratio_projected")
    if measured is None or projected is None:
        note = (
            f"{cpus} cores: the load generator needs a core of its own, so 2 server cores leave it none"
            if cpus <= 2
            else f"this run used {workers} worker(s); run --workers 2 and compare"
        )
        if scenario.get("error"):
            note = f"workers scenario failed: {scenario['error']}"
        elif scenario.get("skipped"):
            note = f"workers scenario skipped: {scenario['skipped']}"
        return Verdict("two_workers_scaling", TWO_WORKERS_FIGURE, ">= 1.6x", "-", "-", NA, note=note)
    runs = {run["workers"]: run for run in scenario.get("runs", [])}
    shared = bool(scenario.get("load_shared_core"))
    limited = bool(scenario.get("load_limited"))
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
    busiest = scenario.get("ratio_projected_busiest_worker")
    if busiest is not None:
        parts.append(f"{busiest:.2f}x if the busier worker sets the pace")
    split = two.get("clients_per_worker")
    if split:
        parts.append(f"clients per worker {'/'.join(f'{n:,}' for n in split)}")
    undelivered = [n for n, run in sorted(runs.items()) if (run.get("delivery_rate") or 0) < 1.0]
    if undelivered:
        parts.append("not every event delivered with " + ", ".join(f"{n} worker(s)" for n in undelivered))
    return Verdict(
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


def performance_targets(report: dict[str, Any]) -> list[Verdict]:
    """Issue 6's targets judged on one report (eventcast, with the baseline's figures beside them)."""
    ours, theirs = _servers(report)
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
        Verdict(
            "connections_per_process",
            "connections per process (~19,000, open-file limit 20,000) with all of the above holding",
            "~19,000",
            "-",
            "-",
            NOT_RUN,
            note="the standard run stops at --max-clients 10000",
        ),
    ]


KEY_FIGURES: tuple[tuple[str, str], ...] = (
    ("sustained.memory_per_client_kb", "memory per idle connection, {n} clients"),
    ("storm.connect_p99_ms", "connect p99, {storm} clients at once"),
    ("targets.20.latency_p99_ms", "broadcast latency p99, 20 clients"),
    ("ramp.{n}.time_to_last_p50_ms", "single broadcast to {n} clients, time to last p50"),
    ("ramp.{n}.time_to_last_max_ms", "single broadcast to {n} clients, time to last max"),
    ("ramp.{n}.latency_p99_ms", "single broadcast to {n} clients, latency p99"),
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


def key_figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures: eventcast, baseline and eventcast/baseline (None where a side has no figure)."""
    ours, theirs = _servers(report)
    if ours is None:
        return []
    sustained = _scenario(ours, "sustained") or {}
    storm = _scenario(ours, "storm") or {}
    ramp_steps = (_scenario(ours, "ramp") or {}).get("steps", [])
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
            {
                "key": key,
                "figure": label.format(n=f"{n:,}", storm=f"{storm.get('clients', 0):,}"),
                "unit": figure.unit,
                "eventcast": figure.value,
                "baseline": other.value if other else None,
                "ratio": ratio(figure.value, other.value) if other else None,
                "better": "higher" if figure.higher_is_better else "lower",
            }
        )
    return rows


def _ratio_plain(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def headline_markdown(report: dict[str, Any]) -> str:
    """The key figures as one Markdown table (the README's headline table)."""
    lines = [
        "| figure | eventcast | naive baseline | eventcast/baseline |",
        "|---|---|---|---|",
    ]
    for row in key_figures(report):
        lines.append(
            f"| {row['figure']} | {_num(row['eventcast'], row['unit'])} | "
            f"{_num(row['baseline'], row['unit'])} | {_ratio_plain(row['ratio'])} |"
        )
    return "\n".join(lines) + "\n"


def targets_markdown(report: dict[str, Any]) -> str:
    """Issue 6's targets with PASS/FAIL/n/a, the baseline's figure and what limited a row."""
    lines = [
        "| figure | target | eventcast | naive baseline | result | note |",
        "|---|---|---|---|---|---|",
    ]
    for row in performance_targets(report):
        lines.append(
            f"| {row.figure} | {row.target} | {row.eventcast} | {row.baseline} | {row.status} | {row.note} |"
        )
    return "\n".join(lines) + "\n"


def workers_markdown(report: dict[str, Any]) -> str:
    """The `workers` scenario's runs as a Markdown table, and the 2-vs-1 ratios ("" when it did not run)."""
    ours, _ = _servers(report)
    scenario = _scenario(ours, "workers") or {}
    runs = scenario.get("runs") or []
    if not runs:
        return ""
    lines = [
        "| workers | server CPUs | clients (per worker) | deliveries/s (measured) | delivery | p99 | server CPU "
        "| server CPU us/delivery | projected deliveries/s per core | redis-server CPU (us/delivery) "
        "| load generator |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        split = run.get("clients_per_worker")
        clients = f"{run['connected']:,}" + (f" ({'/'.join(f'{n:,}' for n in split)})" if split else "")
        redis = run.get("redis") or {}
        load = f"busiest process {_num(run['load_max_pct'], '%')}, its cores {_num(run['load_cores_busy_pct'], '%')}"
        if run.get("load_shares_core"):
            load += ", shares a core with a worker"
        if run.get("load_limited"):
            load += " (limited)"
        cpus = ",".join(str(c) for c in run["server_cpus"]) if run.get("server_cpus") else "any"
        lines.append(
            f"| {run['workers']} | {cpus} | {clients} | {_num(run['deliveries_per_s'], '/s')} | "
            f"{_num(_pct(run['delivery_rate']), '%')} | {_num(run['p99_ms'], 'ms')} | "
            f"{_num(run['server_pct'], '%')} | {_num(run['server_cpu_us_per_delivery'], 'us')} | "
            f"{_num(run['projected_deliveries_per_s_per_core'], '/s')} | "
            f"{_num(redis.get('pct'), '%')} ({_num(redis.get('cpu_us_per_delivery'), 'us')}) | {load} |"
        )
    lines += [
        "",
        f"2 workers / 1 worker: {_ratio_plain(scenario.get('ratio_measured'))} measured, "
        f"{_ratio_plain(scenario.get('ratio_projected'))} projected from server CPU "
        "(2 x us per delivery with 1 worker / us per delivery with 2; a projection, not a measurement), "
        f"{_ratio_plain(scenario.get('ratio_projected_busiest_worker'))} if the busier worker sets the pace. "
        "redis-server's CPU is not counted in either.",
    ]
    return "\n".join(lines) + "\n"


def markdown_report(report: dict[str, Any]) -> str:
    """Everything `--markdown FILE` writes: first targets, key figures, issue-6 targets, all ratios."""
    machine = report.get("machine") or {}
    parts = [
        "# eventcast bench tables",
        "",
        f"Generated by `{report.get('command', 'eventcast bench')}` on {report.get('started_at', '?')} "
        f"({machine.get('cpus', '?')} cores, {machine.get('cpu_model', '?')}, Python "
        f"{machine.get('python', '?')}). Ratios are eventcast / baseline: for times, CPU and memory below 1 "
        "is better, for rates above 1.",
        "",
        "## Headline",
        "",
        "<!-- bench-table -->",
        headline_markdown(report).rstrip("\n"),
        "<!-- /bench-table -->",
        "",
        "## Issue 6 targets (per worker process on one core)",
        "",
        targets_markdown(report).rstrip("\n"),
        "",
        "## First targets",
        "",
    ]
    for server in report.get("servers", []):
        if server.get("checks"):
            parts += [
                f"**{server['label']}**",
                "",
                "| metric | target | measured | result |",
                "|---|---|---|---|",
            ]
            parts += [
                f"| {c['metric']} | {c['target']} | {_fmt(c['value'], c['unit'])} | {c['status']} |"
                for c in server["checks"]
            ]
            parts.append("")
    workers_table = workers_markdown(report)
    if workers_table:
        parts += ["## Workers: 1 against 2 (redis engine)", "", workers_table.rstrip("\n"), ""]
    notes = report.get("notes") or []
    if notes:
        parts += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    rows = report.get("comparison") or []
    parts += ["## Every figure", "", "<details><summary>all figures with ratios</summary>", ""]
    if rows:
        parts += [
            "| scenario | figure | eventcast | baseline | eventcast/baseline |",
            "|---|---|---|---|---|",
        ]
        parts += [
            f"| {r['section']} | {r['figure']} | {_fmt(r['eventcast'], r['unit'])} | "
            f"{_fmt(r['baseline'], r['unit'])} | {_ratio_plain(r['ratio'])} |"
            for r in rows
        ]
    primary = report["servers"][0] if report.get("servers") else None
    compared = {r["key"] for r in rows}
    alone = [f for f in figures(primary) if f.key not in compared] if primary else []
    if alone:
        parts += [
            "",
            f"Figures of {primary['label'] if primary else ''} without a baseline counterpart:",
            "",
            "| scenario | figure | value |",
            "|---|---|---|",
        ]
        parts += [f"| {f.section} | {f.label} | {_fmt(f.value, f.unit)} |" for f in alone]
    parts += ["", "</details>", ""]
    return "\n".join(parts)


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
