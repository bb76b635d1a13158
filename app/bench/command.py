"""`eventcast bench`: the command-line face of the benchmark (typer options -> RunOptions -> report)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from app.bench import compare
from app.bench import deflate as deflate_mod
from app.bench.checks import FAIL, server_checks
from app.bench.console import render
from app.bench.markdown import markdown_report
from app.bench.measure import PhaseOptions
from app.bench.run import RunOptions, planned_steps, run_sync, to_json
from app.bench.scenarios import DEFAULT_SCENARIOS, SCENARIOS, BenchConfig
from app.bench.workers import raise_file_limit


def parse_scenarios(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise typer.BadParameter(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    return names


CLIENTS = ("raw", "picows", "websockets")


def parse_peers(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in compare.PEERS]
    if unknown or not names:
        raise typer.BadParameter(f"unknown peer(s) {unknown}; choose from {', '.join(compare.PEERS)}")
    return names


def parse_pinning(text: str) -> tuple[str, ...]:
    if text == "both":
        return compare.PINNING
    if text not in compare.PINNING:
        raise typer.BadParameter("--pinning must be pinned, unpinned or both")
    return (text,)


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def run_deflate(
    *, clients: int, broadcasts: int, runs: int, pinned: bool, json_path: Path | None, doc: Path | None
) -> None:
    """``--deflate``: the gateway with and without permessage-deflate, side by side (app/bench/deflate.py)."""
    raise_file_limit()
    cpus = [0] if pinned and (os.cpu_count() or 1) > 1 else None
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))  # the clients off the server's core
    report = asyncio.run(deflate_mod.execute(runs, clients, broadcasts, cpus))
    typer.echo(deflate_mod.markdown(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if doc is not None:
        deflate_mod.write_doc(doc, report)


def run_peers(options: compare.PeerOptions, json_path: Path | None, doc: Path | None) -> None:
    """The side-by-side run: progress, the tables on the console, then the JSON and the doc section."""
    import asyncio

    console = Console()
    steps = len(options.pinning) * options.runs * (1 + len(options.peers)) * 4
    with _progress(console) as progress:
        task = progress.add_task("starting", total=steps)

        def advance(description: str) -> None:
            progress.advance(task)
            progress.update(task, description=description)

        try:
            result = asyncio.run(compare.execute(options, advance))
        except RuntimeError as error:
            raise typer.BadParameter(str(error)) from error
        progress.update(task, completed=steps, description="done")
    console.print(compare.markdown(result))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(to_json(result) + "\n")
        console.print(f"JSON written to {json_path}")
    if doc is not None:
        compare.write_doc(doc, result)
        console.print(f"side-by-side section of {doc} rewritten")


def build_options(
    *,
    url: str | None,
    publish_url: str | None,
    token: str | None,
    spawn: bool,
    workers: int,
    broker: str | None,
    scenarios: str,
    max_clients: int | None,
    duration: float | None,
    rate: float | None,
    baseline: bool,
    processes: int | None,
    quick: bool,
    client: str,
    events: int | None,
    storm_clients: int | None,
    event_bytes: int,
    pin: bool,
    search_steps: int | None = None,
    step_seconds: float | None = None,
) -> RunOptions:
    """Defaults for a full run, or a quick one (seconds, a few hundred clients)."""
    max_clients = max_clients or (200 if quick else 1000)
    config = BenchConfig(
        scenarios=parse_scenarios(scenarios),
        max_clients=max_clients,
        duration_s=duration or (2.0 if quick else 10.0),
        rate=rate,
        events_per_step=events or (5 if quick else 20),
        ramp_sustain_s=1.0 if quick else 2.0,
        storm_clients=storm_clients or min(max_clients, 1000),
        publish_seconds=1.0 if quick else 3.0,
        publish_subscribers=min(20 if quick else 100, max_clients),
        search_steps=(4 if quick else 10) if search_steps is None else search_steps,
        search_step_s=step_seconds or (1.0 if quick else 3.0),
        client=client,
        phase=PhaseOptions(
            event_bytes=event_bytes,
            event_timeout_s=1.0 if quick else 2.0,
            drain_timeout_s=3.0 if quick else 5.0,
        ),
        quick=quick,
    )
    return RunOptions(
        config=config,
        url=url,
        publish_url=publish_url,
        token=token,
        spawn=spawn or not url,
        workers=workers,
        broker=broker,
        baseline=baseline,
        pin=pin,
        processes=processes,
    )


def bench(
    url: Annotated[
        str | None, typer.Option(help="Gateway to measure, ws://HOST:PORT (default: --spawn one)")
    ] = None,
    publish_url: Annotated[
        str | None, typer.Option(help="POST endpoint (default: derived from --url)")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token for subscribing and publishing")] = None,
    spawn: Annotated[bool, typer.Option(help="Start a local gateway (the default without --url)")] = False,
    workers: Annotated[int, typer.Option(help="Workers of the spawned gateway")] = 1,
    broker: Annotated[str | None, typer.Option(help="Broker URL of the spawned gateway")] = None,
    scenarios: Annotated[str, typer.Option(help=f"Comma list of {', '.join(SCENARIOS)}")] = ",".join(
        DEFAULT_SCENARIOS
    ),
    max_clients: Annotated[int | None, typer.Option(help="Largest client count (ramp ceiling)")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds of the sustained scenario")] = None,
    rate: Annotated[
        float | None, typer.Option(help="Events/s while sustained (default: as fast as clients keep up)")
    ] = None,
    baseline: Annotated[
        bool, typer.Option(help="Also run the naive FastAPI broadcast app and print ratios")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write every figure to this JSON file")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write PNG charts into this directory")] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(
            help="Write the Markdown tables (first targets, key figures with ratios, per-core targets) here"
        ),
    ] = None,
    processes: Annotated[
        int | None, typer.Option(help="Load-generator processes (default: the free cores)")
    ] = None,
    quick: Annotated[bool, typer.Option(help="A short run: fewer clients, events and seconds")] = False,
    client: Annotated[
        str, typer.Option(help=f"Subscriber implementation: {', '.join(CLIENTS)} (see docs/benchmarks.md)")
    ] = "raw",
    events: Annotated[int | None, typer.Option(help="Broadcast events per step")] = None,
    storm_clients: Annotated[int | None, typer.Option(help="Clients connecting at once in the storm")] = None,
    event_bytes: Annotated[int, typer.Option(help="Approximate size of one event frame")] = 200,
    pin: Annotated[
        bool, typer.Option(help="Pin a spawned server and the load generator to separate cores")
    ] = True,
    peers: Annotated[
        str | None,
        typer.Option(
            help="Instead of the scenarios: eventcast side by side with these peers (comma list of "
            f"{', '.join(compare.PEERS)}), repeated --runs times"
        ),
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="With --peers: runs per pinning mode")] = 3,
    pinning: Annotated[
        str,
        typer.Option(help="With --peers: pinned (servers on core 0, load on the rest), unpinned, or both"),
    ] = "both",
    step_seconds: Annotated[
        float | None,
        typer.Option(
            min=0.2, help="Seconds of publishing per step of the sustained rate search [3, quick 1]"
        ),
    ] = None,
    search_steps: Annotated[
        int | None,
        typer.Option(min=0, help="Most steps of the sustained rate search (0: none) [10, quick 4]"),
    ] = None,
    doc: Annotated[
        Path | None,
        typer.Option(help="With --peers or --deflate: rewrite that section of this Markdown file"),
    ] = None,
    deflate: Annotated[
        bool,
        typer.Option(
            "--deflate",
            help="Instead of the scenarios: permessage-deflate against the same gateway without it (memory per "
            "idle connection, CPU per broadcast), --runs times",
        ),
    ] = False,
) -> None:
    """Measure a gateway: connection time, broadcast latency, delivery, deliveries/s and memory."""
    if client not in CLIENTS:
        raise typer.BadParameter(f"--client must be one of {', '.join(CLIENTS)}")
    if client == "picows" and importlib.util.find_spec("picows") is None:
        raise typer.BadParameter("--client picows needs picows: pip install 'eventcast[bench]'")
    if deflate:
        run_deflate(
            clients=max_clients or (200 if quick else 10_000),
            broadcasts=events or 10,
            runs=runs,
            pinned=pin,
            json_path=json_path,
            doc=doc,
        )
        return
    if peers is not None:
        peer_options = compare.PeerOptions(
            clients=max_clients or (200 if quick else 10_000),
            storm_clients=storm_clients or (100 if quick else 1_000),
            events=events or 10,
            runs=runs,
            pinning=parse_pinning(pinning),
            peers=parse_peers(peers),
            step_s=step_seconds or (1.0 if quick else 3.0),
            search_steps=10 if search_steps is None else max(1, search_steps),
            processes=processes,
            client=client,
            event_bytes=event_bytes,
        )
        run_peers(peer_options, json_path, doc)
        return
    if plot is not None and importlib.util.find_spec("matplotlib") is None:  # say so now, not after the run
        raise typer.BadParameter("--plot needs matplotlib: pip install 'eventcast[bench]'")
    options = build_options(
        url=url,
        publish_url=publish_url,
        token=token,
        spawn=spawn,
        workers=workers,
        broker=broker,
        scenarios=scenarios,
        max_clients=max_clients,
        duration=duration,
        rate=rate,
        baseline=baseline,
        processes=processes,
        quick=quick,
        client=client,
        events=events,
        storm_clients=storm_clients,
        event_bytes=event_bytes,
        pin=pin,
        search_steps=search_steps,
        step_seconds=step_seconds,
    )
    console = Console()
    with _progress(console) as progress:
        task = progress.add_task("starting", total=planned_steps(options))
        started = [False]

        def advance(description: str) -> None:
            if started[0]:
                progress.advance(task)
            started[0] = True
            progress.update(task, description=description)

        result = run_sync(options, advance)
        progress.update(task, completed=planned_steps(options), description="done")
    render(result, console)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(to_json(result) + "\n")
        console.print(f"JSON written to {json_path}")
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(markdown_report(result))
        console.print(f"Markdown tables written to {markdown}")
    if plot is not None:
        from app.bench.plot import write_charts

        for path in write_charts(result, plot):
            console.print(f"chart {path}")
    failed = [
        check for server in result["servers"][:1] for check in server_checks(server) if check.status == FAIL
    ]
    if failed:
        raise typer.Exit(code=1)
