"""Turn results into judgements and text: the targets table (PASS/FAIL), the figures of every step, the
eventcast/baseline ratios, and the rich tables printed at the end of a run. Pure functions over the result
dicts, so the tests can check them without running anything.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def target_checks(targets: dict[str, Any]) -> list[Check]:
    """The issue's table of first targets, judged on the `targets` scenario's steps."""
    steps = {step["clients"]: step for step in targets.get("steps", [])}
    samples = [s for step in steps.values() for s in step["connect"]["samples_ms"]]
    ordered = sorted(samples)
    connect_p99 = ordered[max(0, -(-99 * len(ordered) // 100) - 1)] if ordered else None
    attempted = sum(step["connect"]["attempted"] for step in steps.values())
    all_connected = attempted > 0 and len(samples) == attempted
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
    for run in scenarios.get("publish", {}).get("runs", []):
        prefix = f"publish.b{run['batch']}.s{run['subscribers']}"
        section = f"publish, batch {run['batch']}, {run['subscribers']} subscribers"
        latency = run["request_latency"]
        out += [
            Figure(f"{prefix}.requests_per_s", section, "requests/s", run["requests_per_s"], "/s", True),
            Figure(f"{prefix}.events_per_s", section, "events/s", run["published_events_per_s"], "/s", True),
            Figure(f"{prefix}.request_p50_ms", section, "request p50", latency["p50_ms"], "ms", False),
            Figure(f"{prefix}.request_p95_ms", section, "request p95", latency["p95_ms"], "ms", False),
            Figure(f"{prefix}.request_p99_ms", section, "request p99", latency["p99_ms"], "ms", False),
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
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}")


def limits_notes(server: dict[str, Any]) -> list[str]:
    """Say where the load generator, not the server, may have set a figure."""
    notes = []
    for figure in figures(server):
        if figure.key.endswith("load_cpu_pct") and figure.value is not None and figure.value >= 90:
            notes.append(
                f"{server['label']} {figure.section}: a load-generator process ran at {figure.value:.0f}% "
                "of a core; the figure may be the load generator's limit"
            )
    return notes


def markdown_table(report: dict[str, Any]) -> str:
    """The comparison (or the figures) as a Markdown table, for docs/benchmarks.md."""
    lines: list[str] = []
    for server in report["servers"]:
        if server.get("checks"):
            lines += [
                f"**First targets ({server['label']})**",
                "",
                "| metric | target | measured | result |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {c['metric']} | {c['target']} | {_fmt(c['value'], c['unit'])} | {c['status']} |"
                for c in server["checks"]
            ]
            lines.append("")
    rows = report.get("comparison") or []
    if rows:
        lines += [
            "| scenario | figure | eventcast | baseline | eventcast/baseline |",
            "|---|---|---|---|---|",
        ]
        for row in rows:
            ratio_text = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            lines.append(
                f"| {row['section']} | {row['figure']} | {_fmt(row['eventcast'], row['unit'])} | "
                f"{_fmt(row['baseline'], row['unit'])} | {ratio_text} |"
            )
    else:
        lines += ["| scenario | figure | value |", "|---|---|---|"]
        lines += [
            f"| {f.section} | {f.label} | {_fmt(f.value, f.unit)} |" for f in figures(report["servers"][0])
        ]
    return "\n".join(lines) + "\n"
