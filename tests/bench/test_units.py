"""Pure parts of the bench: histograms, the per-client tracker, metric parsing, target checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.bench import stats
from app.bench.checks import first_targets, performance_targets
from app.bench.client import Phase, Tracker
from app.bench.fastcount import CPhase, CTracker
from app.bench.figures import comparison, key_figures, pooled_percentile
from app.bench.markdown import markdown_report
from app.bench.measure import server_efficiency
from app.bench.publisher import event_body
from app.bench.scenarios import scaling_ratios
from app.bench.server import parse_metric, with_channel


def frame(phase: int, seq: int, ts: float) -> bytes:
    body = json.loads(event_body("bench", phase, [seq], "xx"))
    return json.dumps(
        {"id": str(seq), "channel": "bench", "type": body["type"], "data": body["data"], "ts": ts}
    ).encode()


def test_histogram_percentiles_are_close_to_exact() -> None:
    samples = [0.1 * i for i in range(1, 1001)]
    counts = stats.new_counts()
    for value in samples:
        counts[stats.bucket_of(value)] += 1
    approx = stats.summarize_histogram(counts, max(samples), sum(samples))
    exact = stats.summarize_samples(samples)
    assert exact.p50_ms == 50.0 and exact.p99_ms == 99.0 and exact.max_ms == 100.0
    assert approx.p50_ms is not None and abs(approx.p50_ms - 50.0) / 50.0 < 0.02
    assert approx.p99_ms is not None and abs(approx.p99_ms - 99.0) / 99.0 < 0.02
    assert stats.summarize_samples([]).p99_ms is None


def test_tracker_counts_lost_duplicated_and_out_of_order_separately() -> None:
    phase = Phase(phase_id=7)
    tracker = Tracker(phase)
    tracker.on_text(b'{"type": "eventcast.welcome"}', 0.0)
    for seq in (0, 1, 3, 2, 3, 5):  # 4 is lost, 3 comes twice, 2 comes after 3
        tracker.on_text(frame(7, seq, 1000.0), 1001.0)
    tracker.on_text(frame(8, 6, 1000.0), 1001.0)  # another phase: stray, not counted
    assert tracker.unique == 5
    assert tracker.dups == 1
    assert tracker.ooo == 1
    assert tracker.lost(6) == 1
    assert phase.stray == 1
    assert sum(phase.histogram) == 5
    assert phase.arrivals[:6] == [1, 1, 1, 1, 0, 1]


def test_parse_metric_sums_workers_and_ignores_longer_names() -> None:
    text = (
        "# TYPE eventcast_connections gauge\n"
        'eventcast_connections{transport="ws"} 3.0\n'
        'eventcast_connections{transport="sse"} 2.0\n'
        "eventcast_connections_opened_total 99.0\n"
        "process_resident_memory_bytes 1.5e+07\n"
    )
    assert parse_metric(text, "eventcast_connections") == 5.0
    assert parse_metric(text, "process_resident_memory_bytes") == 1.5e7
    assert parse_metric(text, "missing") is None


def test_subscribe_url_gets_the_bench_channel() -> None:
    assert with_channel("ws://h:1", "b") == "ws://h:1/ws/events?channels=b"
    assert with_channel("wss://h/ws/events", "b") == "wss://h/ws/events?channels=b"


def _step(clients: int, rate: float, p99: float, per_client: float, peak: float) -> dict[str, Any]:
    return {
        "clients": clients,
        "connected": clients,
        "connect": {"attempted": clients, "failed": 0, "samples_ms": [5.0] * clients},
        "memory": {"per_client_bytes": per_client, "peak_rss_bytes": peak},
        "broadcast": {"delivery": {"rate": rate}, "latency": {"p99_ms": p99}},
    }


def test_target_checks_pass_and_fail() -> None:
    good = {"steps": [_step(n, 1.0, 3.0, 40_000, 80e6) for n in (1, 10, 20, 50, 100)]}
    assert {c.key: c.status for c in first_targets(good)} == {
        "connect_time": "PASS",
        "broadcast_latency_20": "PASS",
        "delivery": "PASS",
        "concurrent_clients": "PASS",
        "memory_per_client": "PASS",
        "peak_memory_100": "PASS",
    }
    lossy = {"steps": [_step(n, 0.9, 80.0, 2e6, 300e6) for n in (1, 10, 20, 50, 100)]}
    statuses = {c.key: c.status for c in first_targets(lossy)}
    assert statuses["delivery"] == "FAIL"
    assert statuses["broadcast_latency_20"] == "FAIL"
    assert statuses["memory_per_client"] == "FAIL"
    assert statuses["peak_memory_100"] == "FAIL"
    assert statuses["concurrent_clients"] == "FAIL"


def test_comparison_ratios() -> None:
    ours = {"scenarios": {"targets": {"steps": [_full_step(10, 2.0)]}}}
    theirs = {"scenarios": {"targets": {"steps": [_full_step(10, 8.0)]}}}
    rows = {row.key: row for row in comparison(ours, theirs)}
    assert rows["targets.10.latency_p99_ms"].ratio == 0.25
    assert rows["targets.10.latency_p99_ms"].better == "lower"
    assert rows["targets.10.delivery"].ratio == 1.0


def _full_step(clients: int, p99: float) -> dict[str, Any]:
    latency = {"p50_ms": p99 / 2, "p99_ms": p99, "max_ms": p99}
    return {
        "clients": clients,
        "connect": {"attempted": clients, "p50_ms": 1.0, "p99_ms": 2.0, "success_rate": 1.0},
        "broadcast": {"latency": latency, "time_to_last": latency, "delivery": {"rate": 1.0}},
        "memory": {"per_client_bytes": 1024.0, "peak_rss_bytes": 1e6},
    }


def test_thin_samples_keeps_evenly_spaced_order_statistics() -> None:
    samples = [float(i) for i in range(10_000, 0, -1)]
    kept = stats.thin_samples(samples, 1000)
    assert len(kept) == 1000 and kept == sorted(kept)
    assert kept[0] == 1.0 and kept[-1] == 10_000.0
    assert stats.thin_samples([3.0, 1.0], 1000) == [1.0, 3.0]


def test_pooled_percentile_weighs_thinned_steps() -> None:
    many = {"count": 10_000, "samples_ms": stats.thin_samples([float(i) for i in range(1, 10_001)], 100)}
    few = {"count": 10, "samples_ms": [100_000.0] * 10}
    p99 = pooled_percentile([many, few], 99.0)
    assert p99 is not None and 9_800 <= p99 <= 10_000  # ten slow connects of 10,010 are not the p99


def test_server_efficiency_projects_from_cpu_per_delivery() -> None:
    phase = {
        "cpu": {"server_cpu_s": 2.5, "server_pct": 25.0, "load_max_pct": 98.0, "load_limited": True},
        "delivery": {"delivered": 4_000_000, "events": 400},
        "throughput": {"deliveries_per_s": 400_000.0},
    }
    figures = server_efficiency(phase)
    assert figures["server_cpu_us_per_delivery"] == 0.625
    assert figures["projected_deliveries_per_s_per_core"] == 1_600_000
    assert figures["load_limited"] is True
    assert server_efficiency({**phase, "cpu": {"server_cpu_s": None}})["server_cpu_us_per_delivery"] is None


def _sustained(clients: int, rate: float, p99: float, us: float, limited: bool) -> dict[str, Any]:
    return {
        "clients": clients,
        "connected": clients,
        "connect": {"attempted": clients, "p50_ms": 1.0, "p99_ms": 2.0, "success_rate": 1.0},
        "memory": {"per_client_bytes": 7 * 1024, "peak_rss_bytes": 1e8},
        "sustained": {
            "throughput": {"deliveries_per_s": rate},
            "latency": {"p99_ms": p99},
            "delivery": {"rate": 1.0},
            "cpu": {"load_max_pct": 98.0 if limited else 50.0, "load_limited": limited, "server_pct": 25.0},
            "server_efficiency": {
                "server_cpu_us_per_delivery": us,
                "projected_deliveries_per_s_per_core": round(1e6 / us),
            },
        },
    }


def test_performance_targets_judge_measured_and_projected_separately() -> None:
    ours = {
        "label": "eventcast",
        "workers": 1,
        "scenarios": {"sustained": _sustained(10_000, 4e5, 90, 0.6, True)},
    }
    theirs = {"label": "baseline", "scenarios": {"sustained": _sustained(10_000, 7.5e4, 140, 13.0, False)}}
    report = {"machine": {"cpus": 2}, "servers": [ours, theirs]}
    rows = {row.key: row for row in performance_targets(report)}
    assert rows["memory_per_idle_connection"].status == "PASS"
    measured = rows["sustained_10k_measured"]
    assert measured.status == "FAIL" and measured.load_limited and "load-generator-limited" in measured.note
    assert rows["sustained_10k_projected"].status == "PASS (projected)"
    assert (
        rows["deliveries_ratio_10k"].status == "PASS" and "lower bound" in rows["deliveries_ratio_10k"].note
    )
    assert rows["deliveries_ratio_10k_projected"].status == "PASS (projected)"
    assert rows["two_workers_scaling"].status == "n/a on this machine"
    assert rows["storm_1000_connect_p99"].status == "not measured"  # no storm in this report
    text = markdown_report({**report, "command": "eventcast bench"})
    assert "<!-- bench-table -->" in text and "PASS (projected)" in text
    assert "projected deliveries/s per server core" in text


def _workers_run(
    workers: int, rate: float, us: float, worker_cpu: list[float], **extra: Any
) -> dict[str, Any]:
    return {
        "workers": workers,
        "server_cpus": list(range(workers)),
        "load_cpus": [1],
        "load_shares_core": workers == 2,
        "clients": 10_000,
        "connected": 10_000,
        "clients_per_worker": [10_000 // workers] * workers,
        "worker_cpu_s": worker_cpu,
        "deliveries_per_s": rate,
        "delivered": 2_000_000,
        "delivery_rate": 1.0,
        "p99_ms": 400.0,
        "server_pct": 50.0 * workers,
        "server_cpu_us_per_delivery": us,
        "projected_deliveries_per_s_per_core": round(1e6 / us),
        "load_limited": True,
        "load_max_pct": 95.0,
        "load_cores_busy_pct": 99.0,
        "redis": {"cpu_s": 0.4, "pct": 4.0, "cpu_us_per_delivery": 0.2},
        **extra,
    }


def test_scaling_ratios_measured_and_projected_from_cpu_per_delivery() -> None:
    one = _workers_run(1, 250_000.0, 2.0, [4.0])
    # 2 workers: 2.5 us per delivery over the whole gateway (the second worker's Redis reads counted),
    # 2,000,000 deliveries, the busier worker 3 of the 5 CPU seconds
    two = _workers_run(2, 300_000.0, 2.5, [3.0, 2.0])
    ratios = scaling_ratios(one, two)
    assert ratios["ratio_measured"] == 1.2
    assert ratios["ratio_projected"] == 1.6  # 2 x 2.0 / 2.5
    assert ratios["ratio_projected_busiest_worker"] == pytest.approx(2.0 * 2_000_000 / 3e6, abs=0.001)
    assert ratios["load_shared_core"] is True and ratios["load_limited"] is True
    assert "projection" in ratios["basis"]
    missing = scaling_ratios(one, None)
    assert missing["ratio_measured"] is missing["ratio_projected"] is None
    assert scaling_ratios(one, {**two, "server_cpu_us_per_delivery": None})["ratio_projected"] is None


def _workers_report(scenario: dict[str, Any] | None) -> dict[str, Any]:
    server: dict[str, Any] = {"label": "eventcast", "workers": 1, "scenarios": {}}
    if scenario is not None:
        server["scenarios"]["workers"] = scenario
    return {"machine": {"cpus": 2}, "servers": [server], "command": "eventcast bench"}


def _scaling_row(scenario: dict[str, Any] | None) -> Any:
    return {row.key: row for row in performance_targets(_workers_report(scenario))}["two_workers_scaling"]


def test_two_workers_row_judges_the_projection_when_the_load_generator_shared_a_core() -> None:
    one = _workers_run(1, 250_000.0, 2.0, [4.0])
    runs = [one, _workers_run(2, 300_000.0, 2.2, [2.3, 2.1])]
    scenario = {"runs": runs, "skipped": None, "error": None, **scaling_ratios(*runs)}
    row = _scaling_row(scenario)  # measured 1.2x would fail; projected 1.82x passes
    assert row.status == "PASS (projected)" and row.value == scenario["ratio_projected"] and row.load_limited
    assert row.eventcast == "1.20x measured, 1.82x projected"
    assert row.note.startswith("projected from CPU: the load generator shared a core with a worker")
    assert "clients per worker 5,000/5,000" in row.note

    slow = [one, _workers_run(2, 300_000.0, 3.0, [3.0, 3.0])]
    assert _scaling_row({"runs": slow, **scaling_ratios(*slow)}).status == "FAIL (projected)"  # 1.33x

    # Own cores and no saturation: judged on the measured ratio, which here misses while the projection passes
    free = [
        _workers_run(1, 250_000.0, 2.0, [4.0], load_limited=False, load_shares_core=False),
        _workers_run(2, 375_000.0, 2.0, [2.0, 2.0], load_limited=False, load_shares_core=False),
    ]
    row = _scaling_row({"runs": free, **scaling_ratios(*free)})
    assert row.status == "FAIL" and row.value == 1.5 and not row.load_limited
    assert row.note.startswith("measured")

    text = markdown_report({**_workers_report(scenario), "comparison": []})
    assert "## Workers: 1 against 2 (redis engine)" in text
    assert "| 2 | 0,1 | 10,000 (5,000/5,000) | 300,000 /s |" in text and "shares a core with a worker" in text
    keys = {row.key: row.eventcast for row in key_figures(_workers_report(scenario))}
    assert (
        keys["workers.ratio_measured"] == 1.2
        and keys["workers.ratio_projected"] == scenario["ratio_projected"]
    )


def test_two_workers_row_is_na_without_the_scenario() -> None:
    row = _scaling_row(None)
    assert row.status == "n/a on this machine" and row.eventcast == "-"
    assert row.note == "2 cores: the load generator needs a core of its own, so 2 server cores leave it none"
    failed = _scaling_row(
        {"runs": [], "skipped": None, "error": "RuntimeError: boom", **scaling_ratios(None, None)}
    )
    assert failed.status == "n/a on this machine" and "boom" in failed.note
    assert "## Workers" not in markdown_report({**_workers_report(None), "comparison": []})


def _frames_for(seqs: list[int], stamps: list[float], own: bool) -> list[bytes]:
    out = [b'{"type": "eventcast.welcome"}']
    for seq, ts in zip(seqs, stamps, strict=False):
        data = (
            f'{{"bench": 7, "seq": {seq}, "ts": {ts!r}, "pad": "x"}}'
            if own
            else f'{{"bench":7,"seq":{seq},"pad":"x"}}'
        )
        out.append(
            f'{{"id":"{seq}","channel":"bench","type":"bench.tick","data":{data},"ts":{ts + 1.5!r}}}'.encode()
        )
    out += [frame(8, 1, 1.0), b"not json", b'{"bench":7,"seq":3}']  # another phase, garbage, no time: stray
    return out


@settings(max_examples=60, deadline=None)
@given(
    seqs=st.lists(st.integers(min_value=0, max_value=3000), max_size=60),
    stamps=st.lists(st.floats(min_value=-1e3, max_value=2e12, allow_nan=False), min_size=60, max_size=60),
    own=st.booleans(),
    streams=st.integers(min_value=1, max_value=4),
)
def test_c_counter_counts_exactly_as_the_python_tracker(
    seqs: list[int], stamps: list[float], own: bool, streams: int
) -> None:
    """fastcount.c against the reference Tracker: same counts, same per-seq arrays, same histogram."""
    phase, c_phase = Phase(phase_id=7, streams=streams), CPhase(7, streams)
    python, c = Tracker(phase), CTracker(c_phase)
    for index, payload in enumerate(_frames_for(seqs, stamps, own)):
        python.on_text(payload, 2e12 + index)
        c.on_text(payload, 2e12 + index)
    expected = max(seqs, default=0) + 1
    assert (c.unique, c.dups, c.ooo, c.max_seq, c.lost(expected)) == (
        python.unique,
        python.dups,
        python.ooo,
        python.max_seq,
        python.lost(expected),
    )
    event_ts, first, last, arrivals, histogram, latency_sum, latency_max, stray = c_phase.export(expected)
    phase.grow(expected)
    assert stray == phase.stray and histogram == phase.histogram
    assert (event_ts, first, last, arrivals) == (
        phase.event_ts[:expected],
        phase.first_arrival[:expected],
        phase.last_arrival[:expected],
        phase.arrivals[:expected],
    )
    assert latency_sum == pytest.approx(phase.latency_sum_ms) and latency_max == phase.latency_max_ms


def test_c_counter_walks_whole_frames_and_stops_before_others() -> None:
    """One call counts every whole text frame of a buffer, stops in front of a ping and at a partial frame."""
    import ctypes

    from app.bench.framerate import event_frames, text_frame

    c_phase = CPhase(5, 1)
    c = CTracker(c_phase, welcome=False)
    run = event_frames(5, 10)
    ping = bytes((0x89, 0))
    buffer = run + ping + text_frame(b'{"bench":5,"seq":10,"ts":1.0}')[:-3]
    special = ctypes.c_int64()
    stop = c.consume_fn(c.pointer, buffer, 0, len(buffer), 2.0, ctypes.byref(special))
    assert (stop, special.value, c.unique) == (len(run), 1, 10)
    stop = c.consume_fn(c.pointer, buffer, stop + 2, len(buffer), 2.0, ctypes.byref(special))
    assert (stop, special.value, c.unique) == (len(run) + 2, 0, 10)  # the last frame is not whole yet
