"""Sustained throughput as a search over rates: the highest publish rate at which every event reaches every
client and the p99 latency stays within a bound.

A rate at a fixed window (publish as fast as the slowest client keeps up) says how fast the whole loop went,
not what the server sustains within a latency bound. This module finds that rate: exponentially up from a
start rate until a step fails (or down, if the first one fails), then a binary search between the highest
rate that passed and the lowest that failed until they are within `precision` of each other. Every step is
one bounded measurement (`measure(rate)`, seconds of publishing plus a bounded drain), and the whole search
is bounded in steps. The search itself is pure: it takes any `measure`, so a test can drive it with a fake.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

P99_BOUND_MS = 150.0
RATE_KEPT = 0.95  # a step whose publisher reached less of its target rate than this did not measure it


@dataclass(frozen=True)
class RateStep:
    """One measurement at one publish rate (events/s to every client)."""

    rate: float  # target events/s
    achieved_rate: float  # events/s the publisher actually sent
    clients: int
    delivered: int
    expected: int
    lost: int
    duplicated: int
    out_of_order: int
    disconnected: int
    p99_ms: float | None
    deliveries_per_s: float | None  # measured: deliveries / the phase's window
    load_limited: bool  # a load-generator process (or its cores) was busy above the threshold
    load_max_pct: float | None
    publish_errors: int = 0  # requests that failed (a timeout, a refusal): the server did not take the rate
    close_codes: dict[str, int] = field(default_factory=dict)  # clients cut during the step, by close code

    def failure(self, p99_bound_ms: float = P99_BOUND_MS) -> str | None:
        """Why this step does not count as sustained (None: it does)."""
        if self.clients == 0:
            return "no client connected"
        if self.publish_errors:
            return f"{self.publish_errors} publish request(s) failed"
        if self.achieved_rate < RATE_KEPT * self.rate:
            return f"the publisher sent {self.achieved_rate:,.0f} events/s of {self.rate:,.0f}"
        problems = []
        if self.lost or self.delivered < self.expected:
            problems.append(f"{self.expected - self.delivered:,} of {self.expected:,} deliveries missing")
        if self.duplicated:
            problems.append(f"{self.duplicated:,} duplicated")
        if self.out_of_order:
            problems.append(f"{self.out_of_order:,} out of order")
        if self.disconnected:
            codes = ", ".join(f"{count:,} x {code}" for code, count in sorted(self.close_codes.items()))
            problems.append(f"{self.disconnected:,} clients disconnected" + (f" ({codes})" if codes else ""))
        if self.p99_ms is None or self.p99_ms > p99_bound_ms:
            problems.append(f"p99 {self.p99_ms if self.p99_ms is not None else '-'} ms > {p99_bound_ms:g} ms")
        return "; ".join(problems) or None

    @property
    def offered_deliveries_per_s(self) -> float:
        """The rate as deliveries/s: events/s times clients."""
        return self.rate * self.clients


@dataclass(frozen=True)
class SearchOptions:
    start_rate: float  # events/s of the first step
    factor: float = 2.0  # growth (and shrink) per step until the first change of outcome
    precision: float = 0.1  # stop when the failing rate is within this fraction above the passing one
    max_steps: int = 10
    min_rate: float = 0.5  # below this nothing is searched any more
    max_rate: float = 1e7  # a passing step at or above this ends the search (the ceiling of the search)
    p99_bound_ms: float = P99_BOUND_MS


@dataclass
class SearchResult:
    """The highest passing step, the lowest failing step above it, and every step in the order measured."""

    best: RateStep | None = None
    failed: RateStep | None = None
    steps: list[RateStep] = field(default_factory=list)
    stopped: str = ""  # why the search ended

    @property
    def deliveries_per_s(self) -> float | None:
        """Sustained deliveries/s: the best passing rate times its clients (None: no rate passed)."""
        return None if self.best is None else self.best.offered_deliveries_per_s

    @property
    def load_limited(self) -> bool:
        """The load generator was busy at the best step or at the failure above it: the figure may be the
        load generator's limit, not the server's."""
        return any(step.load_limited for step in (self.best, self.failed) if step is not None)

    def as_dict(self, p99_bound_ms: float = P99_BOUND_MS) -> dict[str, Any]:
        def step_dict(step: RateStep | None) -> dict[str, Any] | None:
            if step is None:
                return None
            return {**asdict(step), "failure": step.failure(p99_bound_ms)}

        return {
            "deliveries_per_s": self.deliveries_per_s,
            "rate": None if self.best is None else self.best.rate,
            "measured_deliveries_per_s": None if self.best is None else self.best.deliveries_per_s,
            "p99_ms": None if self.best is None else self.best.p99_ms,
            "load_limited": self.load_limited,
            "stopped": self.stopped,
            "p99_bound_ms": p99_bound_ms,
            "best": step_dict(self.best),
            "failed": step_dict(self.failed),
            "steps": [step_dict(step) for step in self.steps],
        }


async def search_rate(
    measure: Callable[[float], Awaitable[RateStep]], options: SearchOptions
) -> SearchResult:
    """Find the highest rate whose step passes (see the module docstring); bounded by `options.max_steps`."""
    result = SearchResult()
    passed: RateStep | None = None
    failed: RateStep | None = None
    rate = options.start_rate

    async def step_at(value: float) -> bool:
        step = await measure(value)
        result.steps.append(step)
        nonlocal passed, failed
        if step.failure(options.p99_bound_ms) is None:
            if passed is None or step.rate > passed.rate:
                passed = step
            return True
        if failed is None or step.rate < failed.rate:
            failed = step
        return False

    # 1. exponential: up while passing, or down while failing, until the outcome changes
    while len(result.steps) < options.max_steps:
        ok = await step_at(rate)
        if ok and rate >= options.max_rate:
            result.stopped = f"passed at the search's ceiling of {options.max_rate:g} events/s"
            break
        if ok and failed is not None:
            break
        if not ok and passed is not None:
            break
        rate = rate * options.factor if ok else rate / options.factor
        if rate < options.min_rate:
            result.stopped = f"failed down to {options.min_rate:g} events/s"
            break
    # 2. binary (geometric midpoints) between the highest pass and the lowest failure above it
    while (
        not result.stopped
        and passed is not None
        and failed is not None
        and failed.rate > passed.rate * (1 + options.precision)
        and len(result.steps) < options.max_steps
    ):
        await step_at((passed.rate * failed.rate) ** 0.5)
    if not result.stopped:
        if passed is not None and failed is not None and failed.rate <= passed.rate * (1 + options.precision):
            result.stopped = f"converged within {options.precision:.0%}"
        else:
            result.stopped = f"stopped after {len(result.steps)} steps"
    result.best, result.failed = passed, failed
    return result


def step_from_phase(rate: float, phase: dict[str, Any]) -> RateStep:
    """A `RateStep` from one sustained phase's figures (`PhaseRunner.sustained` in rate mode)."""
    delivery = phase["delivery"]
    cpu = phase.get("cpu") or {}
    return RateStep(
        rate=rate,
        achieved_rate=float(phase.get("achieved_rate") or 0.0),
        clients=int(phase.get("clients") or 0),
        delivered=int(delivery["delivered"]),
        expected=int(delivery["expected"]),
        lost=int(delivery["lost"]),
        duplicated=int(delivery["duplicated"]),
        out_of_order=int(delivery["out_of_order"]),
        disconnected=int(delivery["disconnected_clients"]),
        p99_ms=phase["latency"]["p99_ms"],
        deliveries_per_s=phase["throughput"]["deliveries_per_s"],
        load_limited=bool(cpu.get("load_limited")),
        load_max_pct=cpu.get("load_max_pct"),
        publish_errors=sum((phase.get("publish_errors") or {}).values()),
        close_codes=dict(delivery.get("close_codes") or {}),
    )
