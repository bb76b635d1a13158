"""The tables printed at the end of a run (rich): the first targets of each server, every figure (with the
eventcast/baseline ratios when the baseline ran), the per-core targets, the workers runs and the notes."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from app.bench.checks import NOT_RUN, PER_CORE_TITLE, performance_targets, server_checks
from app.bench.figures import (
    Comparison,
    comparison,
    figures,
    fmt,
    num,
    percent,
    ratio_text,
    scenario,
    servers_of,
)


def _ratio_text(row: Comparison) -> str:
    value = row.ratio
    if value is None:
        return "-"
    good = value >= 1 if row.better == "higher" else value <= 1
    if row.eventcast == row.baseline:
        return f"{value:.2f}x"
    colour = "green" if good else "red"
    return f"[{colour}]{value:.2f}x[/{colour}]"


def render(report: dict[str, Any], console: Console) -> None:
    """Print the targets table and the figures (with ratios when a baseline ran)."""
    for server in report["servers"]:
        checks = server_checks(server)
        if not checks:
            continue
        table = Table(title=f"First targets: {server['label']}", title_justify="left")
        for column in ("metric", "target", "measured", "result"):
            table.add_column(column)
        for check in checks:
            colour = {"PASS": "green", "FAIL": "red", "MIN": "yellow"}.get(check.status, "white")
            table.add_row(check.figure, check.target, check.eventcast, f"[{colour}]{check.status}[/{colour}]")
        console.print(table)
    primary = report["servers"][0]
    ours, theirs = servers_of(report)
    rows = comparison(ours, theirs) if ours and theirs else []
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
            shown = row.section if row.section != section else ""
            section = row.section
            table.add_row(
                shown, row.figure, fmt(row.eventcast, row.unit), fmt(row.baseline, row.unit), _ratio_text(row)
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
                fmt(figure.value, figure.unit),
            )
            section = figure.section
        console.print(table)
    verdicts = performance_targets(report)
    if any(v.status != NOT_RUN for v in verdicts):
        table = Table(title=PER_CORE_TITLE, title_justify="left")
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
    workers = scenario(ours, "workers") or {}
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
                num(run["deliveries_per_s"], "/s"),
                num(percent(run["delivery_rate"]), "%"),
                num(run["server_pct"], "%"),
                num(run["server_cpu_us_per_delivery"], "us"),
                num((run.get("redis") or {}).get("cpu_us_per_delivery"), "us"),
            )
        console.print(table)
        console.print(
            f"2 workers / 1: {ratio_text(workers.get('ratio_measured'))} measured, "
            f"{ratio_text(workers.get('ratio_projected'))} projected from server CPU"
        )
    elif workers.get("skipped") or workers.get("error"):
        console.print(f"[yellow]workers:[/yellow] {workers.get('error') or workers.get('skipped')}")
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}")
