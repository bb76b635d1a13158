"""A simulated day of connection counts through the operator's own scaling function: no flapping, no scale-down
faster than the policy, and capacity that follows the load (app/operator/simulation.py, docs/operator.md)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from app.operator import simulation
from app.operator.scaling import PolicyType, ScaleDownPolicy
from tests.servers import ROOT

POLICY = simulation.POLICY
BOUNDS = simulation.BOUNDS


@pytest.fixture(scope="module")
def day() -> list[simulation.Step]:
    return simulation.simulate(simulation.day_of_connections())


def test_the_day_is_a_diurnal_curve_with_spikes(day: list[simulation.Step]) -> None:
    assert len(day) == simulation.DAY // simulation.INTERVAL
    night = [s.connections for s in day if s.at < 5 * 3600]
    peak = max(s.connections for s in day)
    assert max(night) < 12_000 and peak > 6 * max(night)
    spike = [s.connections for s in day if 15.5 * 3600 - 60 <= s.at <= 15.5 * 3600 + 60]
    assert max(spike) > 1.4 * day[int(15 * 3600 / simulation.INTERVAL)].connections


def test_no_scale_down_is_faster_than_the_policy(day: list[simulation.Step]) -> None:
    downs = [(at, -change) for at, change in simulation.changes(day) if change < 0]
    assert downs, "the day has scale-downs"
    for at, _ in downs:
        in_period = sum(n for t, n in downs if at - POLICY.period_seconds < t <= at)
        assert in_period <= POLICY.value  # Pods: at most 1 pod per 60 s
    # ... and none below what the load asked for at any round of the stabilisation window.
    for step_index, step in enumerate(day):
        if step_index and step.replicas < day[step_index - 1].replicas:
            window = [s.recommended for s in day if step.at - POLICY.stabilization_seconds < s.at <= step.at]
            assert step.replicas >= max(window)


def test_replicas_never_flap(day: list[simulation.Step]) -> None:
    """No change of direction within the stabilisation window, and a handful of moves where ceil() makes hundreds."""
    moves = simulation.changes(day)
    for (t1, d1), (t2, d2) in itertools.pairwise(moves):
        if (d1 > 0) != (d2 > 0):
            assert t2 - t1 >= POLICY.stabilization_seconds, (t1, d1, t2, d2)
    naive_moves = sum(1 for a, b in itertools.pairwise(day) if a.naive != b.naive)
    assert len(moves) < 40 < 10 * len(moves) < naive_moves


def test_capacity_follows_the_load(day: list[simulation.Step]) -> None:
    """Scale-up is immediate: the load never exceeds the replicas' capacity by more than the tolerance."""
    for step in day:
        capacity = step.replicas * BOUNDS.connections_per_replica
        assert step.connections <= capacity * (1 + BOUNDS.tolerance) or step.replicas == BOUNDS.max_replicas
    # ... and the day ends where it started, at the floor, as the night load asks.
    assert day[-1].replicas == BOUNDS.min_replicas


def test_a_percent_policy_holds_too() -> None:
    policy = ScaleDownPolicy(stabilization_seconds=120, type=PolicyType.PERCENT, value=20, period_seconds=60)
    steps = simulation.simulate(simulation.day_of_connections(seed=3), policy=policy)
    downs = [(at, -change) for at, change in simulation.changes(steps) if change < 0]
    replicas_at = {s.at: s.replicas for s in steps}
    for at, _ in downs:
        removed = sum(n for t, n in downs if at - policy.period_seconds < t <= at)
        assert removed <= policy.removable(replicas_at[at] + removed)


def test_the_plot_is_committed_and_shown_in_the_docs() -> None:
    plot = ROOT / "docs" / "operator-day.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "operator-day.png" in (ROOT / "docs" / "operator.md").read_text()


def test_the_plot_draws(tmp_path: Path, day: list[simulation.Step]) -> None:
    path = tmp_path / "day.png"
    simulation.plot(day, str(path))
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 20_000
