"""The sustained-rate search on a fake measurement: a server that keeps up to a known rate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from app.bench.ratesearch import RateStep, SearchOptions, search_rate, step_from_phase

CLIENTS = 1000


def step(
    rate: float, *, delivered: float = 1.0, p99: float = 20.0, achieved: float | None = None
) -> RateStep:
    expected = int(rate * 3) * CLIENTS
    got = int(expected * delivered)
    return RateStep(
        rate=rate,
        achieved_rate=rate if achieved is None else achieved,
        clients=CLIENTS,
        delivered=got,
        expected=expected,
        lost=expected - got,
        duplicated=0,
        out_of_order=0,
        disconnected=0,
        p99_ms=p99,
        deliveries_per_s=rate * CLIENTS * delivered,
        load_limited=False,
        load_max_pct=40.0,
    )


def capacity(
    limit: float, how: str = "latency"
) -> tuple[list[float], Callable[[float], Awaitable[RateStep]]]:
    """A fake server that sustains `limit` events/s: above it, p99 grows past the bound (or events are lost)."""
    asked: list[float] = []

    async def measure(rate: float) -> RateStep:
        asked.append(rate)
        if rate <= limit:
            return step(rate)
        return step(rate, p99=400.0) if how == "latency" else step(rate, delivered=0.999)

    return asked, measure


@pytest.mark.parametrize("how", ["latency", "loss"])
async def test_search_converges_on_the_highest_rate_that_passes(how: str) -> None:
    asked, measure = capacity(1234.0, how)
    result = await search_rate(measure, SearchOptions(start_rate=100.0, precision=0.05, max_steps=20))
    assert result.best is not None and result.failed is not None
    assert result.best.rate <= 1234.0 < result.failed.rate <= result.best.rate * 1.05
    assert result.deliveries_per_s == result.best.rate * CLIENTS
    assert asked[:5] == [100.0, 200.0, 400.0, 800.0, 1600.0]  # exponential first
    assert "converged" in result.stopped
    reason = result.failed.failure()
    assert reason is not None and ("p99" in reason if how == "latency" else "missing" in reason)


async def test_search_goes_down_when_the_first_rate_fails() -> None:
    asked, measure = capacity(30.0)
    result = await search_rate(measure, SearchOptions(start_rate=100.0, precision=0.1, max_steps=20))
    assert asked[:3] == [100.0, 50.0, 25.0]
    assert result.best is not None and 27.0 <= result.best.rate <= 30.0


async def test_search_is_bounded_in_steps_and_reports_no_rate_when_nothing_passes() -> None:
    asked, measure = capacity(0.0)
    result = await search_rate(measure, SearchOptions(start_rate=100.0, max_steps=4))
    assert len(asked) == 4 and result.best is None and result.deliveries_per_s is None
    assert result.as_dict()["best"] is None and len(result.as_dict()["steps"]) == 4


async def test_a_publisher_that_cannot_keep_the_rate_fails_the_step() -> None:
    async def measure(rate: float) -> RateStep:
        return step(rate, achieved=min(rate, 500.0))

    result = await search_rate(measure, SearchOptions(start_rate=100.0, precision=0.1, max_steps=12))
    assert result.best is not None and result.best.rate <= 500.0 / 0.95
    assert result.failed is not None and "publisher sent" in (result.failed.failure() or "")


def test_step_from_phase_reads_a_sustained_phase() -> None:
    phase = {
        "achieved_rate": 99.0,
        "clients": 10,
        "delivery": {
            "delivered": 2990,
            "expected": 3000,
            "lost": 10,
            "duplicated": 1,
            "out_of_order": 2,
            "disconnected_clients": 0,
        },
        "latency": {"p99_ms": 12.0},
        "throughput": {"deliveries_per_s": 990.0},
        "cpu": {"load_limited": True, "load_max_pct": 95.0},
    }
    parsed = step_from_phase(100.0, phase)
    assert parsed.load_limited and parsed.offered_deliveries_per_s == 1000.0
    assert parsed.failure() == "10 of 3,000 deliveries missing; 1 duplicated; 2 out of order"
