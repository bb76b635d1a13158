"""PNG charts of a report (matplotlib, Agg backend): latency CDF per step, connect-time histogram,
deliveries/s and memory against clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.bench import stats

MB = 1024 * 1024


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _counts(sparse: dict[str, int]) -> list[int]:
    counts = stats.new_counts()
    for index, count in sparse.items():
        counts[int(index)] = count
    return counts


def _steps(server: dict[str, Any]) -> list[dict[str, Any]]:
    scenarios = server["scenarios"]
    return list(scenarios.get("ramp", {}).get("steps") or scenarios.get("targets", {}).get("steps") or [])


def latency_cdf(report: dict[str, Any], out: Path) -> list[Path]:
    plt = _pyplot()
    written = []
    for server in report["servers"]:
        steps = _steps(server)
        if not steps:
            continue
        figure, axis = plt.subplots(figsize=(8, 5))
        for step in steps:
            points = stats.cdf_points(_counts(step["broadcast"]["latency_histogram"]))
            if points:
                xs, ys = zip(*points, strict=True)
                axis.step(xs, ys, where="post", label=f"{step['clients']} clients")
        axis.set_xscale("log")
        axis.set_xlabel("broadcast latency, publish to receipt (ms)")
        axis.set_ylabel("fraction of deliveries")
        axis.set_title(f"Broadcast latency CDF per step: {server['label']}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
        path = out / f"latency-cdf-{server['label']}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def connect_histogram(report: dict[str, Any], out: Path) -> Path | None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 5))
    drawn = False
    for server in report["servers"]:
        scenarios = server["scenarios"]
        source = scenarios.get("storm") or (scenarios.get("ramp", {}).get("steps") or [None])[-1]
        if not source or not source["connect"]["samples_ms"]:
            continue
        samples = source["connect"]["samples_ms"]
        # The JSON keeps at most ~1,000 evenly spaced order statistics per step: weigh each by how many
        # connections it stands for, so the bars still count clients.
        weight = max(1.0, (source["connect"].get("count") or len(samples)) / len(samples))
        axis.hist(
            samples,
            weights=[weight] * len(samples),
            bins=50,
            alpha=0.6,
            label=f"{server['label']} ({source['connect']['attempted']} connects)",
        )
        drawn = True
    if not drawn:
        plt.close(figure)
        return None
    axis.set_xlabel("connection time, TCP connect to welcome frame (ms)")
    axis.set_ylabel("clients")
    axis.set_title("Connection time histogram (storm, or the largest ramp step)")
    axis.legend()
    path = out / "connect-histogram.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def against_clients(report: dict[str, Any], out: Path) -> Path | None:
    plt = _pyplot()
    figure, (throughput_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 5))
    drawn = False
    for server in report["servers"]:
        steps = _steps(server)
        sustained = [s for s in steps if s.get("sustained")]
        if sustained:
            line = throughput_axis.plot(
                [s["clients"] for s in sustained],
                [s["sustained"]["throughput"]["deliveries_per_s"] or 0 for s in sustained],
                marker="o",
                label=f"{server['label']} measured",
            )
            projected = [
                (s["clients"], s["sustained"]["server_efficiency"]["projected_deliveries_per_s_per_core"])
                for s in sustained
                if (s["sustained"].get("server_efficiency") or {}).get("projected_deliveries_per_s_per_core")
            ]
            if projected:
                throughput_axis.plot(
                    [clients for clients, _ in projected],
                    [value for _, value in projected],
                    marker="x",
                    linestyle="--",
                    color=line[0].get_color(),
                    label=f"{server['label']} projected per core (from server CPU)",
                )
            drawn = True
        with_memory = [s for s in steps if s["memory"]["rss_bytes"] is not None]
        if with_memory:
            memory_axis.plot(
                [s["clients"] for s in with_memory],
                [s["memory"]["rss_bytes"] / MB for s in with_memory],
                marker="o",
                label=f"{server['label']} RSS",
            )
            drawn = True
    if not drawn:
        plt.close(figure)
        return None
    for axis in (throughput_axis, memory_axis):
        axis.set_xscale("log")
        axis.set_xlabel("connected clients")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    throughput_axis.set_ylabel("sustained deliveries per second")
    throughput_axis.set_yscale("log")
    throughput_axis.set_title("Deliveries/s against clients")
    memory_axis.set_ylabel("server resident memory (MB)")
    memory_axis.set_title("Memory against clients")
    path = out / "throughput-memory.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def write_charts(report: dict[str, Any], out: Path) -> list[Path]:
    """Write every chart into `out` (created if needed); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = latency_cdf(report, out)
    for path in (connect_histogram(report, out), against_clients(report, out)):
        if path is not None:
            written.append(path)
    return written
