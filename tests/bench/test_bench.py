"""The bench end to end: real servers and load processes on 127.0.0.1. No test asserts a timing."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.bench import baseline
from app.bench.measure import PhaseOptions
from app.bench.run import RunOptions, run_sync, to_json
from app.bench.scenarios import TARGET_STEPS, BenchConfig
from app.bench.server import redis_server_path


def small_config(**overrides: Any) -> BenchConfig:
    values: dict[str, Any] = {
        "scenarios": ("ramp",),
        "max_clients": 50,
        "events_per_step": 10,
        "ramp_sustain_s": 0.5,
        "storm_clients": 20,
        "publish_seconds": 0.5,
        "publish_concurrency": 4,
        "publish_subscribers": 10,
        "duration_s": 0.5,
        "phase": PhaseOptions(event_timeout_s=1.0, drain_timeout_s=3.0),
    }
    values.update(overrides)
    return BenchConfig(**values)


@pytest.fixture(scope="module")
def gateway_report() -> dict[str, Any]:
    """One bench run against a spawned gateway: ramp to 50 clients, then the publish scenario."""
    config = small_config(scenarios=("ramp", "publish"))
    return run_sync(RunOptions(config=config, spawn=True, processes=1, pin=False))


def test_spawned_gateway_with_50_clients_gets_every_event(gateway_report: dict[str, Any]) -> None:
    server = gateway_report["servers"][0]
    assert server["label"] == "eventcast" and server["spawned"]
    steps = server["scenarios"]["ramp"]["steps"]
    assert [step["clients"] for step in steps] == [1, 10, 50]
    for step in steps:
        assert step["connected"] == step["clients"]
        assert step["connect"]["success_rate"] == 1.0
        for phase in (step["broadcast"], step["sustained"]):
            delivery = phase["delivery"]
            assert delivery["rate"] == 1.0, delivery
            assert delivery["lost"] == delivery["duplicated"] == delivery["out_of_order"] == 0
            assert (
                delivery["delivered"] == delivery["expected"] == phase["delivery"]["events"] * step["clients"]
            )
            latency = phase["latency"]
            assert 0 <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
        assert step["broadcast"]["time_to_last"]["complete_events"] == 10
        assert step["sustained"]["throughput"]["deliveries_per_s"] > 0
        efficiency = step["sustained"]["server_efficiency"]
        assert efficiency["deliveries"] == step["sustained"]["delivery"]["delivered"]
        assert efficiency["server_cpu_s"] > 0 and efficiency["server_cpu_us_per_delivery"] > 0
        assert efficiency["projected_deliveries_per_s_per_core"] == pytest.approx(
            1e6 / efficiency["server_cpu_us_per_delivery"], rel=0.01
        )
        assert "projection" in efficiency["basis"]
        assert step["memory"]["rss_bytes"] > step["memory"]["idle_rss_bytes"] > 0
    fifty = steps[-1]
    assert 0 < fifty["memory"]["per_client_bytes"] < 10 * 1024 * 1024
    assert fifty["memory"]["server_connections"] == 50  # the gateway's own gauge agrees


def test_publish_scenario_counts_requests_and_deliveries(gateway_report: dict[str, Any]) -> None:
    runs = gateway_report["servers"][0]["scenarios"]["publish"]["runs"]
    assert [(r["batch"], r["subscribers"]) for r in runs] == [(1, 0), (100, 0), (1, 10), (100, 10)]
    for run in runs:
        assert run["requests"] > 0 and not run["errors"]
        assert run["request_latency"]["p50_ms"] <= run["request_latency"]["p99_ms"]
    for run in runs[2:]:
        assert run["delivery"]["rate"] == 1.0 and run["delivery"]["out_of_order"] == 0


@pytest.mark.skipif(redis_server_path() is None, reason="redis-server not installed")
def test_publish_scenario_also_measures_a_spawned_redis_engine(gateway_report: dict[str, Any]) -> None:
    publish = gateway_report["servers"][0]["scenarios"]["publish"]
    assert publish["engine"] == "memory://"
    [redis] = publish["other_engines"]
    assert redis["engine"] == "redis" and redis["error"] is None, redis
    assert redis["broker"].startswith("redis://127.0.0.1:")
    assert [(r["batch"], r["subscribers"]) for r in redis["runs"]] == [(1, 0), (100, 0), (1, 10), (100, 10)]
    for run in redis["runs"]:
        assert run["requests"] > 0 and not run["errors"]
    for run in redis["runs"][2:]:
        assert run["delivery"]["rate"] == 1.0 and run["delivery"]["out_of_order"] == 0
    rows = {row["key"]: row for row in gateway_report["performance_targets"]}
    assert rows["publish_single_redis"]["status"] in ("PASS", "FAIL")


SCHEMA_TOP = {
    "schema_version",
    "tool",
    "started_at",
    "finished_at",
    "duration_s",
    "command",
    "machine",
    "config",
    "servers",
    "comparison",
    "notes",
    "performance_targets",
    "key_figures",
}
SCHEMA_SERVER = {
    "label",
    "url",
    "publish_url",
    "spawned",
    "workers",
    "broker",
    "server_cpus",
    "load_cpus",
    "load_processes",
    "idle_rss_bytes",
    "scenarios",
    "checks",
}
SCHEMA_STEP = {"clients", "connected", "connect", "memory", "broadcast", "sustained"}
SCHEMA_CONNECT = {
    "attempted",
    "succeeded",
    "failed",
    "success_rate",
    "errors",
    "seconds",
    "per_s",
    "count",
    "mean_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "samples_ms",
}
SCHEMA_MEMORY = {
    "idle_rss_bytes",
    "rss_bytes",
    "per_client_bytes",
    "source",
    "server_connections",
    "peak_rss_bytes",
}
SCHEMA_PHASE = {
    "clients",
    "delivery",
    "latency",
    "latency_histogram",
    "time_to_last",
    "time_to_first",
    "throughput",
    "cpu",
    "mode",
    "publish_latency",
    "publish_retries",
    "publish_errors",
    "server_efficiency",
}
SCHEMA_DELIVERY = {
    "events",
    "expected",
    "delivered",
    "lost",
    "duplicated",
    "out_of_order",
    "stray",
    "disconnected_clients",
    "close_codes",
    "rate",
}
SCHEMA_LATENCY = {"count", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"}
SCHEMA_CPU = {
    "load_workers_pct",
    "publisher_pct",
    "load_max_pct",
    "load_limited",
    "server_pct",
    "server_cpu_s",
    "server_user_s",
    "server_sys_s",
    "wall_s",
    "load_cpu_s",
    "load_cores_busy_pct",
}


def test_json_schema_is_stable(gateway_report: dict[str, Any]) -> None:
    report = json.loads(to_json(gateway_report))  # what --json writes
    assert report == json.loads(json.dumps(gateway_report))
    assert report["schema_version"] == 1
    assert set(report) == SCHEMA_TOP
    server = report["servers"][0]
    assert set(server) == SCHEMA_SERVER
    step = server["scenarios"]["ramp"]["steps"][-1]
    assert set(step) == SCHEMA_STEP
    assert set(step["connect"]) == SCHEMA_CONNECT
    assert set(step["memory"]) == SCHEMA_MEMORY
    assert set(step["broadcast"]) == SCHEMA_PHASE
    assert set(step["sustained"]) >= SCHEMA_PHASE - {"publish_latency"} | {"target_rate", "batch", "window"}
    assert set(step["broadcast"]["delivery"]) == SCHEMA_DELIVERY
    assert set(step["broadcast"]["latency"]) == SCHEMA_LATENCY
    assert set(step["broadcast"]["time_to_last"]) == SCHEMA_LATENCY | {"complete_events"}
    assert set(step["broadcast"]["time_to_first"]) == SCHEMA_LATENCY
    assert set(step["broadcast"]["throughput"]) == {"seconds", "deliveries_per_s", "events_per_s"}
    assert set(step["broadcast"]["cpu"]) == SCHEMA_CPU
    assert {"cpus", "python", "versions", "memory_bytes"} <= set(report["machine"])
    assert report["machine"]["frame_counter"] == "c"  # make system-deps installs the C compiler


def test_a_server_dropping_every_tenth_event_is_reported(dropping_server: str) -> None:
    events = 15  # each client loses its 10th event, exactly one per step
    config = small_config(
        scenarios=("targets",),
        events_per_step=events,
        phase=PhaseOptions(event_timeout_s=0.3, drain_timeout_s=3.0),
    )
    report = run_sync(RunOptions(config=config, url=dropping_server, processes=1, pin=False))
    server = report["servers"][0]
    assert not server["spawned"]
    steps = server["scenarios"]["targets"]["steps"]
    assert [s["clients"] for s in steps] == list(TARGET_STEPS)
    for step in steps:
        delivery = step["broadcast"]["delivery"]
        assert delivery["lost"] == step["clients"] * (events // 10), delivery
        assert delivery["delivered"] == step["clients"] * (events - events // 10)
        assert delivery["duplicated"] == delivery["out_of_order"] == 0
    checks = {check["key"]: check for check in server["checks"]}
    assert checks["delivery"]["status"] == "FAIL"
    assert checks["delivery"]["value"] == pytest.approx(100 * (events - 1) / events, abs=0.01)
    assert checks["memory_per_client"]["status"] == "N/A"  # the double has no /metrics


def test_baseline_is_naive() -> None:
    source = inspect.getsource(baseline)
    # One awaited send per client per event, encoding the event again for each client...
    assert re.search(
        r"for ws, channels in list\(clients\):\n(.*\n){1,4}\s+await ws\.send_text\(json\.dumps\(event\)\)",
        source,
    )
    # ... and none of the tricks the gateway is measured for.
    for trick in ("Queue", "gather", "create_task", "encode(", "broadcast_bytes", "send_bytes"):
        assert trick not in source


@pytest.mark.slow
def test_cli_against_a_remote_url_writes_json_and_charts(baseline_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    charts = tmp_path / "charts"
    command = [
        sys.executable,
        "-m",
        "app.bench",
        "--url",
        baseline_url,
        "--scenarios",
        "ramp,storm",
        "--max-clients",
        "20",
        "--storm-clients",
        "20",
        "--quick",
        "--processes",
        "1",
        "--json",
        str(out),
        "--plot",
        str(charts),
        "--markdown",
        str(tmp_path / "table.md"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["schema_version"] == 1
    assert report["servers"][0]["scenarios"]["storm"]["connect"]["succeeded"] == 20
    assert {p.name for p in charts.iterdir()} >= {
        "connect-histogram.png",
        "throughput-memory.png",
        "latency-cdf-eventcast.png",
    }
    assert "ramp, 20 clients" in done.stdout
    tables = (tmp_path / "table.md").read_text()
    assert "## Per-core targets" in tables and "<!-- bench-table -->" in tables
    assert "issue" not in tables.lower() and "issue" not in done.stdout.lower()


SCHEMA_WORKERS = {
    "skipped",
    "error",
    "broker",
    "clients",
    "duration_s",
    "load_cpus",
    "runs",
    "ratio_measured",
    "ratio_projected",
    "ratio_projected_busiest_worker",
    "load_shared_core",
    "load_limited",
    "basis",
    "idle_rss_bytes",
}
SCHEMA_WORKERS_RUN = {
    "workers",
    "server_cpus",
    "load_cpus",
    "load_shares_core",
    "clients",
    "connected",
    "connect",
    "memory",
    "server_connections",
    "clients_per_worker",
    "worker_cpu_s",
    "deliveries_per_s",
    "delivered",
    "delivery_rate",
    "p99_ms",
    "server_pct",
    "server_cpu_us_per_delivery",
    "projected_deliveries_per_s_per_core",
    "load_limited",
    "load_max_pct",
    "load_cores_busy_pct",
    "redis",
    "sustained",
}


def test_workers_scenario_runs_one_then_two_workers_on_a_spawned_redis() -> None:
    """1 worker, then 2, on one throwaway redis-server (pinned, as `make bench` runs it), 30 clients for 1 s."""
    config = small_config(scenarios=("workers",), max_clients=30, duration_s=1.0)
    report = json.loads(to_json(run_sync(RunOptions(config=config, spawn=True, processes=1))))
    workers = report["servers"][0]["scenarios"]["workers"]
    assert set(workers) == SCHEMA_WORKERS
    assert workers["skipped"] is None and workers["error"] is None, workers
    assert workers["broker"].startswith("redis://127.0.0.1:")
    one, two = workers["runs"]
    assert (one["workers"], two["workers"]) == (1, 2)
    for run in (one, two):
        assert set(run) == SCHEMA_WORKERS_RUN
        assert run["connected"] == run["server_connections"] == 30
        assert run["clients_per_worker"] is not None and sum(run["clients_per_worker"]) == 30
        assert len(run["clients_per_worker"]) == len(run["worker_cpu_s"]) == run["workers"]
        delivery = run["sustained"]["delivery"]
        assert run["delivery_rate"] == delivery["rate"] == 1.0, delivery
        assert delivery["lost"] == delivery["duplicated"] == delivery["out_of_order"] == 0
        assert run["delivered"] == delivery["expected"] > 0
        assert run["deliveries_per_s"] > 0 and run["server_cpu_us_per_delivery"] > 0
        assert run["redis"]["cpu_s"] is not None and run["redis"]["cpu_s"] >= 0
        assert set(run["sustained"]) >= SCHEMA_PHASE - {"publish_latency"}
    if one["server_cpus"] is not None:  # pinned: 1 worker on the run's server core, 2 on that and the next
        assert len(one["server_cpus"]) == 1 and len(two["server_cpus"]) == 2
        assert one["server_cpus"][0] == two["server_cpus"][0]
        assert two["load_shares_core"] == bool(set(two["server_cpus"]) & set(two["load_cpus"]))
    assert workers["ratio_measured"] == pytest.approx(
        two["deliveries_per_s"] / one["deliveries_per_s"], rel=0.01
    )
    assert workers["ratio_projected"] == pytest.approx(
        2 * one["server_cpu_us_per_delivery"] / two["server_cpu_us_per_delivery"], rel=0.01
    )
    [row] = [row for row in report["performance_targets"] if row["key"] == "two_workers_scaling"]
    assert row["status"].removesuffix(" (projected)") in ("PASS", "FAIL")
    assert "measured" in row["eventcast"] and "projected" in row["eventcast"]


def test_workers_scenario_is_skipped_for_a_url_target(baseline_url: str) -> None:
    config = small_config(scenarios=("workers",), max_clients=5)
    report = run_sync(RunOptions(config=config, url=baseline_url, processes=1, pin=False))
    workers = report["servers"][0]["scenarios"]["workers"]
    assert "--url" in workers["skipped"] and workers["runs"] == [] and workers["ratio_projected"] is None
    [row] = [row for row in report["performance_targets"] if row["key"] == "two_workers_scaling"]
    assert row["status"] == "n/a on this machine" and "skipped" in row["note"]


def test_sustained_scenario_searches_for_the_highest_rate_that_holds() -> None:
    """After the fixed-window phase, a bounded search over rates; every step counted per client and event."""
    config = small_config(scenarios=("sustained",), max_clients=30, search_steps=3, search_step_s=0.3)
    report = run_sync(RunOptions(config=config, spawn=True, processes=1, pin=False))
    sustained = report["servers"][0]["scenarios"]["sustained"]
    search = sustained["search"]
    assert 1 <= len(search["steps"]) <= 3 and search["p99_bound_ms"] == 150.0
    for step in search["steps"]:
        assert step["clients"] == 30 and step["expected"] % 30 == 0
        if step["failure"] is None:
            assert step["delivered"] == step["expected"] and step["lost"] == step["duplicated"] == 0
            assert step["p99_ms"] <= 150.0
    if search["best"] is not None:
        assert search["deliveries_per_s"] == search["best"]["rate"] * 30
    keys = {row["key"] for row in report["key_figures"]}
    assert ("sustained.search_deliveries_per_s" in keys) == (search["deliveries_per_s"] is not None)
