"""A day of connection counts through the operator's own scaling function (``scaling.decide``), without a cluster.

The load is a diurnal curve (quiet at night, a morning ramp, an evening peak) with noise, a lunchtime surge and
two short spikes. Every ``interval`` seconds the simulation does what a round does: it asks ``decide`` for
the replicas, and the Deployment follows (pods are taken as ready at once: the point is the decisions).
tests/operator/test_simulation.py runs it and checks that replicas never flap and never fall faster than the
scale-down policy; ``python -m app.operator.simulation docs/operator-day.png`` draws the plot shown in
docs/operator.md (matplotlib: the ``bench`` extra).
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from app.operator import constants
from app.operator.scaling import Bounds, History, PolicyType, Reason, ScaleDownPolicy, decide, replicas_for

DAY = 86_400
INTERVAL = int(constants.DEFAULT_INTERVAL_SECONDS)
#: The example of docs/operator.md: 5,000 connections per pod, 2 to 30 pods, the default policy.
BOUNDS = Bounds(connections_per_replica=5000, min_replicas=2, max_replicas=30)
POLICY = ScaleDownPolicy()


@dataclass(frozen=True, slots=True)
class Step:
    at: int  # seconds into the day
    connections: int
    replicas: int  # after this round's decision
    recommended: int  # what the load asked for this round, before the window and the rate
    naive: int  # ceil(connections / per replica), clamped: what a scaler with no policy would pick
    reason: Reason


def day_of_connections(seed: int = 7, interval: int = INTERVAL) -> list[tuple[int, int]]:
    """(second of the day, open connections) every ``interval`` seconds."""
    rng = random.Random(seed)
    points = []
    for at in range(0, DAY, interval):
        hours = at / 3600
        # Two humps: a morning plateau and an evening peak, on a night floor of 8,000.
        diurnal = 8000 + 42_000 * max(0.0, math.sin(math.pi * (hours - 6) / 16)) ** 1.5
        evening = 25_000 * math.exp(-(((hours - 20.5) / 1.5) ** 2))
        surge = 20_000 if 12 * 3600 <= at < 12 * 3600 + 20 * 60 else 0  # lunchtime: 20 minutes
        spike = 30_000 * math.exp(-(((at - 15.5 * 3600) / 90) ** 2))  # a 3-minute spike at 15:30
        spike += 15_000 * math.exp(-(((at - 22.25 * 3600) / 45) ** 2))  # a shorter one at 22:15
        noise = rng.gauss(0, 0.02)  # clients come and go: +-2 % from round to round
        points.append((at, max(0, round((diurnal + evening + surge + spike) * (1 + noise)))))
    return points


def simulate(
    load: Sequence[tuple[int, int]],
    bounds: Bounds = BOUNDS,
    policy: ScaleDownPolicy = POLICY,
    start_replicas: int | None = None,
) -> list[Step]:
    replicas = start_replicas if start_replicas is not None else bounds.min_replicas
    history = History()
    steps = []
    for at, connections in load:
        decision = decide(
            current_replicas=replicas,
            observed_connections=connections,
            unobserved_pods=0,
            bounds=bounds,
            policy=policy,
            history=history,
            now=float(at),
        )
        history, replicas = decision.history, decision.desired
        naive = max(
            bounds.min_replicas,
            min(bounds.max_replicas, replicas_for(connections, bounds.connections_per_replica)),
        )
        steps.append(Step(at, connections, replicas, decision.recommended, naive, decision.reason))
    return steps


def changes(steps: Sequence[Step]) -> list[tuple[int, int]]:
    """(second, change of replicas) for every round that moved them."""
    return [(b.at, b.replicas - a.replicas) for a, b in itertools.pairwise(steps) if b.replicas != a.replicas]


def plot(steps: Sequence[Step], path: str, bounds: Bounds = BOUNDS, policy: ScaleDownPolicy = POLICY) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [s.at / 3600 for s in steps]
    per = bounds.connections_per_replica
    fig, load_axis = plt.subplots(figsize=(11, 4.8), dpi=110)
    load_axis.plot(
        hours, [s.connections / 1000 for s in steps], color="#9aa5b1", lw=0.8, label="open connections"
    )
    load_axis.step(
        hours,
        [s.naive * per / 1000 for s in steps],
        where="post",
        color="#e07a5f",
        lw=0.7,
        alpha=0.8,
        label="ceil(connections / per pod), no policy",
    )
    load_axis.step(
        hours,
        [s.replicas * per / 1000 for s in steps],
        where="post",
        color="#1d4e89",
        lw=1.8,
        label="operator replicas (x per pod)",
    )
    load_axis.set_xlabel("hour of the day")
    load_axis.set_ylabel("connections, capacity (thousands)")
    load_axis.set_xlim(0, 24)
    load_axis.set_xticks(range(0, 25, 2))
    top = max(max(s.connections for s in steps), max(s.replicas for s in steps) * per) * 1.1 / 1000
    load_axis.set_ylim(0, top)
    replica_axis = load_axis.twinx()  # the same lines read in pods
    replica_axis.set_ylim(0, top * 1000 / per)
    replica_axis.set_ylabel("replicas")
    load_axis.legend(loc="upper left", fontsize=8)
    moves = changes(steps)
    ups, downs = sum(1 for _, d in moves if d > 0), sum(1 for _, d in moves if d < 0)
    naive_moves = sum(1 for a, b in itertools.pairwise(steps) if a.naive != b.naive)
    unit = ("pod" if policy.value == 1 else "pods") if policy.type is PolicyType.PODS else "%"
    load_axis.set_title(
        f"A simulated day: {bounds.connections_per_replica} connections per pod, {bounds.min_replicas}-"
        f"{bounds.max_replicas} pods, scale-down {policy.value} {unit} per "
        f"{policy.period_seconds}s after {policy.stabilization_seconds}s\n"
        f"{ups} scale-ups, {downs} scale-downs (without the policy: {naive_moves} changes)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "docs/operator-day.png"
    plot(simulate(day_of_connections()), path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
