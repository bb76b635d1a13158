"""The subscriber implementations count exactly: every frame once, losses and order as they happened."""

from __future__ import annotations

from typing import Any

import pytest

from app.bench import framerate
from app.bench.measure import PhaseOptions
from app.bench.run import RunOptions, run_sync
from app.bench.scenarios import TARGET_STEPS, BenchConfig


@pytest.mark.parametrize(("client", "counting"), [("raw", "auto"), ("raw", "python"), ("picows", "auto")])
async def test_each_client_counts_every_frame_of_the_source_once(client: str, counting: str) -> None:
    source_cpus, load_cpus = framerate.plan_cpus()
    rate = await framerate.measure(client, 20, 3000, source_cpus, load_cpus, counting)
    assert rate.frames == 20 * 3000
    assert rate.lost == rate.duplicated == rate.out_of_order == 0
    assert rate.load_cpu_s > 0 and rate.frames_per_cpu_s > 0


def test_picows_client_reports_the_losses_of_a_server_dropping_every_tenth_event(
    dropping_server: str,
) -> None:
    events = 15
    config = BenchConfig(
        scenarios=("targets",),
        events_per_step=events,
        client="picows",
        phase=PhaseOptions(event_timeout_s=0.3, drain_timeout_s=3.0),
    )
    report: dict[str, Any] = run_sync(RunOptions(config=config, url=dropping_server, processes=1, pin=False))
    steps = report["servers"][0]["scenarios"]["targets"]["steps"]
    assert [step["clients"] for step in steps] == list(TARGET_STEPS)
    for step in steps:  # fresh connections each step: each client loses exactly its 10th event
        delivery = step["broadcast"]["delivery"]
        assert step["connected"] == step["clients"]
        assert delivery["lost"] == step["clients"] * (events // 10), delivery
        assert delivery["delivered"] == step["clients"] * (events - events // 10)
        assert delivery["duplicated"] == delivery["out_of_order"] == 0
