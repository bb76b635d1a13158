"""scaling.py, spec.py, status.py, pods.py and the metrics parser: pure functions, no API, no network."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.operator import constants, peering, pods, scaling, simulation
from app.operator.constants import ConditionType
from app.operator.scaling import (
    Bounds,
    History,
    PolicyType,
    Reason,
    Recommendation,
    ScaleDown,
    ScaleDownPolicy,
    Shed,
    ShedOrder,
)
from app.operator.scrape import Scrape, admin_url, metrics_url, parse_connections
from app.operator.spec import InvalidSpec, SecretKeyRef, parse_spec
from app.operator.status import (
    Condition,
    Memory,
    memory_fields,
    memory_from_status,
    merge_conditions,
    pods_summary,
)


def recommend(
    total: int, current: int = 2, unobserved: int = 0, per: int = 10, lo: int = 1, hi: int = 8
) -> int:
    return scaling.recommend_replicas(
        observed_connections=total,
        unobserved_pods=unobserved,
        current_replicas=current,
        connections_per_replica=per,
        min_replicas=lo,
        max_replicas=hi,
    )


@pytest.mark.parametrize(
    ("total", "expected"), [(0, 1), (1, 1), (10, 1), (11, 2), (32, 4), (80, 8), (81, 8), (10_000, 8)]
)
def test_replicas_are_the_ceiling_of_connections_per_replica_within_min_and_max(
    total: int, expected: int
) -> None:
    assert recommend(total) == expected


def test_min_replicas_holds_with_no_connections() -> None:
    assert recommend(0, lo=3) == 3


def test_an_unreadable_pod_counts_as_full_so_it_never_causes_a_scale_down() -> None:
    # 5 connections read on one pod, one pod unreadable: 1 replica on what was read, 2 with the missing one full.
    assert recommend(5, current=2, unobserved=1) == 2
    # ... and as empty when what was read already asks for more: the scale-up is not held back.
    assert recommend(35, current=2, unobserved=1) == 4


def test_the_window_keeps_the_highest_recommendation_and_forgets_what_is_older() -> None:
    history = scaling.record_recommendation([], 0.0, 5, 10)
    history = scaling.record_recommendation(history, 1.0, 3, 10)
    history = scaling.record_recommendation(history, 2.0, 4, 10)
    assert history == [Recommendation(0.0, 5), Recommendation(2.0, 4)]  # 3 can never be the maximum again
    assert scaling.window_maximum(history) == 5
    history = scaling.record_recommendation(history, 10.5, 2, 10)  # 5 (at 0.0) has left the window
    assert scaling.window_maximum(history) == 4
    history = scaling.record_recommendation(history, 30.0, 1, 10)
    assert history == [Recommendation(30.0, 1)]


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 20)), max_size=40), st.integers(0, 30))
def test_the_window_maximum_is_the_maximum_of_every_recommendation_in_the_window(
    steps: list[tuple[float, int]], window: int
) -> None:
    history: list[Recommendation] = []
    now = 0.0
    seen: list[Recommendation] = []
    for gap, replicas in steps:
        now += gap
        history = scaling.record_recommendation(history, now, replicas, window)
        seen.append(Recommendation(now, replicas))
        in_window = [r.replicas for r in seen if r.at > now - window] + [replicas]  # the newest always counts
        assert scaling.window_maximum(history) == max(in_window)
        assert [r.replicas for r in history] == sorted({r.replicas for r in history}, reverse=True)


def test_stabilisation_scales_up_at_once_and_down_only_to_the_window_maximum() -> None:
    assert scaling.stabilized_replicas(current_replicas=2, recommended=5, window_max=5) == 5
    assert scaling.stabilized_replicas(current_replicas=5, recommended=2, window_max=5) == 5  # held
    assert scaling.stabilized_replicas(current_replicas=5, recommended=2, window_max=3) == 3  # partly
    assert scaling.stabilized_replicas(current_replicas=5, recommended=2, window_max=2) == 2


def test_deletion_cost_is_the_connection_count_so_the_emptiest_pod_is_cheapest() -> None:
    costs = scaling.deletion_costs({"a": 30, "b": 2, "c": 0, "huge": 2**40})
    assert costs == {"a": 30, "b": 2, "c": 0, "huge": constants.DELETION_COST_MAX}
    assert sorted(costs, key=costs.__getitem__)[0] == "c"


def test_costs_are_rewritten_only_when_missing_unreadable_or_moved_by_the_tolerance() -> None:
    wanted = {"a": 100, "b": 50, "c": 7, "d": 3}
    written = {"a": "100", "b": "48", "c": "bogus", "d": None}
    assert scaling.cost_updates(wanted, written, tolerance=5) == {"c": 7, "d": 3}
    assert scaling.cost_updates(wanted, written, tolerance=1) == {"b": 50, "c": 7, "d": 3}
    assert scaling.deletion_cost_tolerance(10) == 1
    assert scaling.deletion_cost_tolerance(1000) == 50


def test_shed_plan_moves_the_busiest_toward_the_mean() -> None:
    plan = scaling.shed_plan({"a": 30, "b": 2, "c": 0, "d": 0})
    assert plan == [scaling.ShedOrder("a", round(22 / 30, 4), 30)]
    assert round(30 * plan[0].fraction) == 22  # what the gateway closes: round(connections * fraction)
    plan = scaling.shed_plan({"a": 50, "b": 40, "c": 0, "d": 10})
    assert [(o.pod, o.fraction) for o in plan] == [("a", 0.5), ("b", 0.375)]


@pytest.mark.parametrize(
    "counts", [{}, {"only": 100}, {"a": 0, "b": 0}, {"a": 10, "b": 10, "c": 10}, {"a": 105, "b": 100}]
)
def test_shed_plan_is_empty_when_there_is_nothing_to_even_out(counts: dict[str, int]) -> None:
    assert scaling.shed_plan(counts) == []


def test_spec_defaults_and_checks() -> None:
    spec = parse_spec({"scaleTargetRef": {"name": "gw"}, "connectionsPerReplica": 1000, "maxReplicas": 10})
    assert (spec.target, spec.min_replicas, spec.max_replicas) == ("gw", 1, 10)
    assert spec.scale_down == ScaleDownPolicy(300, PolicyType.PODS, 1, 60)  # 1 pod per 60 s after 5 minutes
    assert spec.bounds.tolerance == 0.1
    assert (spec.rebalance.enabled, spec.rebalance.imbalance, spec.rebalance.window_seconds) == (
        True,
        1.25,
        60,
    )
    assert (spec.rebalance.churn_budget, spec.rebalance.churn_period_seconds) == (1000, 60)  # one pod's worth
    assert spec.metrics_port == constants.DEFAULT_METRICS_PORT and spec.admin_token_secret is None
    full = parse_spec(
        {
            "scaleTargetRef": {"name": "gw"},
            "connectionsPerReplica": 10,
            "minReplicas": 2,
            "maxReplicas": 2,
            "adminTokenSecretRef": {"name": "s", "key": "k"},
        }
    )
    assert full.admin_token_secret == SecretKeyRef("s", "k")


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"connectionsPerReplica": 10, "maxReplicas": 3}, "scaleTargetRef"),
        (
            {"scaleTargetRef": {"name": ""}, "connectionsPerReplica": 10, "maxReplicas": 3},
            "scaleTargetRef.name",
        ),
        ({"scaleTargetRef": {"name": "gw"}, "maxReplicas": 3}, "connectionsPerReplica is required"),
        (
            {"scaleTargetRef": {"name": "gw"}, "connectionsPerReplica": 0, "maxReplicas": 3},
            "connectionsPerReplica",
        ),
        (
            {"scaleTargetRef": {"name": "gw"}, "connectionsPerReplica": True, "maxReplicas": 3},
            "connectionsPerReplica",
        ),
        (
            {
                "scaleTargetRef": {"name": "gw"},
                "connectionsPerReplica": 5,
                "maxReplicas": 2,
                "minReplicas": 3,
            },
            "below",
        ),
        (
            {
                "scaleTargetRef": {"name": "gw"},
                "connectionsPerReplica": 5,
                "maxReplicas": 2,
                "metricsPort": 0,
            },
            "metricsPort",
        ),
        (
            {
                "scaleTargetRef": {"name": "gw"},
                "connectionsPerReplica": 5,
                "maxReplicas": 2,
                "adminTokenSecretRef": {"name": "s"},
            },
            "adminTokenSecretRef.key",
        ),
        (
            {
                "scaleTargetRef": {"name": "gw"},
                "connectionsPerReplica": 5,
                "maxReplicas": 2,
                "scaleDown": {"type": "Half"},
            },
            "scaleDown.type",
        ),
        (
            {
                "scaleTargetRef": {"name": "gw"},
                "connectionsPerReplica": 5,
                "maxReplicas": 2,
                "scaleDown": {"type": "Percent", "value": 150},
            },
            "scaleDown.value",
        ),
        (
            {
                "scaleTargetRef": {"name": "gw"},
                "connectionsPerReplica": 5,
                "maxReplicas": 2,
                "rebalance": {"imbalancePercent": 100},
            },
            "rebalance.imbalancePercent",
        ),
        (
            {
                "scaleTargetRef": {"name": "gw"},
                "connectionsPerReplica": 5,
                "maxReplicas": 2,
                "rebalance": "on",
            },
            "spec.rebalance must be an object",
        ),
        (
            {
                "scaleTargetRef": {"name": "gw"},
                "connectionsPerReplica": 5,
                "maxReplicas": 2,
                "tolerancePercent": -1,
            },
            "tolerancePercent",
        ),
    ],
)
def test_spec_errors_name_the_field(spec: dict[str, object], complaint: str) -> None:
    with pytest.raises(InvalidSpec, match=complaint):
        parse_spec(spec)


def test_memory_round_trips_through_the_status() -> None:
    memory = Memory(
        history=History(
            (Recommendation(1_700_000_000.25, 4), Recommendation(1_700_000_001.5, 2)),
            (ScaleDown(1_700_000_002.75, 1),),
        ),
        imbalanced_since=1_700_000_003.5,
        sheds=[Shed(1_700_000_004.0, 22)],
        last_scale_time="2023-11-14T22:13:20Z",
        last_shed={"shed": 3},
    )
    assert memory_from_status(memory_fields(memory)) == memory
    assert (
        memory_fields(Memory())["rebalance"]["imbalancedSince"] is None
    )  # a merge patch with None clears it
    assert (
        memory_from_status({"recommendations": [{"time": "garbage"}], "rebalance": {"sheds": [{}]}})
        == Memory()
    )


def test_conditions_keep_their_transition_time_until_their_status_changes() -> None:
    up = [Condition(ConditionType.METRICS_AVAILABLE, True, "ScrapeSucceeded", "ok")]
    first = merge_conditions([], up, 1_700_000_000)
    later = merge_conditions(first, up, 1_700_000_100)
    assert later[0]["lastTransitionTime"] == first[0]["lastTransitionTime"] == "2023-11-14T22:13:20Z"
    down = [Condition(ConditionType.METRICS_AVAILABLE, False, "ScrapeFailed", "x")]
    changed = merge_conditions(later, down, 1_700_000_200)
    assert (changed[0]["status"], changed[0]["lastTransitionTime"]) == ("False", "2023-11-14T22:16:40Z")


def test_pods_summary_lists_the_busiest_first_then_failures_and_is_bounded() -> None:
    scrapes = {f"p{i}": Scrape(f"p{i}", i) for i in range(60)} | {"dead": Scrape("dead", None, "refused")}
    rows = pods_summary(scrapes)
    assert len(rows) == constants.STATUS_PODS_LIMIT
    assert rows[0] == {"name": "p59", "connections": 59}
    assert pods_summary({"dead": Scrape("dead", None, "refused"), "a": Scrape("a", 1)}) == [
        {"name": "a", "connections": 1},
        {"name": "dead", "error": "refused"},
    ]


def test_selectors_match_like_the_api_server() -> None:
    selector = {
        "matchLabels": {"app": "gw"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["edge", "core"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert pods.selector_string(selector) == "app=gw,tier in (edge,core),!canary"
    assert pods.selector_matches(selector, {"app": "gw", "tier": "edge"})
    assert not pods.selector_matches(selector, {"app": "gw", "tier": "edge", "canary": "1"})
    assert not pods.selector_matches(selector, {"app": "gw"})
    assert not pods.selector_matches({}, {"app": "gw"})  # an empty selector never means "every pod"


def test_readiness_needs_running_an_ip_and_the_ready_condition() -> None:
    ready = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    assert pods.is_ready(ready)
    assert not pods.is_ready(
        {**ready, "metadata": {"name": "p", "deletionTimestamp": "2024-01-01T00:00:00Z"}}
    )
    assert not pods.is_ready({**ready, "status": {**ready["status"], "conditions": []}})
    assert not pods.is_ready({**ready, "status": {**ready["status"], "podIP": ""}})


def test_the_connections_gauge_is_summed_over_transports() -> None:
    text = (
        "# HELP eventcast_connections Open subscriber connections\n"
        "# TYPE eventcast_connections gauge\n"
        'eventcast_connections{transport="websocket"} 30.0\n'
        'eventcast_connections{transport="sse"} 2.0\n'
        "# TYPE eventcast_connections_opened_total counter\n"
        "eventcast_connections_opened_total 99.0\n"
    )
    assert parse_connections(text) == 32
    with pytest.raises(ValueError, match="no eventcast_connections"):
        parse_connections("# TYPE other gauge\nother 1.0\n")


def test_pod_urls_bracket_ipv6_addresses() -> None:
    assert metrics_url("10.1.2.3", 9000) == "http://10.1.2.3:9000/metrics"
    assert metrics_url("fd00::7", 9000) == "http://[fd00::7]:9000/metrics"
    assert admin_url("fd00::7", 9000, constants.SHED_PATH) == "http://[fd00::7]:9000/admin/shed"


# ------------------------------------------------------------------------------------------------ decide()
BOUNDS = Bounds(connections_per_replica=10, min_replicas=1, max_replicas=20)


def run_rounds(
    loads: list[int], policy: ScaleDownPolicy, start: int, step: float = 1.0, bounds: Bounds = BOUNDS
) -> list[simulation.Step]:
    """One round (scaling.decide, through the simulation) per load, ``step`` seconds apart."""
    return simulation.simulate(
        [(round(1000 + index * step), load) for index, load in enumerate(loads)], bounds, policy, start
    )


def test_the_tolerance_band_keeps_the_replicas_while_the_load_is_near_target() -> None:
    # 4 pods of 10 hold 40: 37 and 43 are within 10 %, 35 and 45 are not.
    assert recommend(37, current=4) == 4 and recommend(43, current=4) == 4
    assert recommend(35, current=4) == 4  # ceil(3.5) = 4 anyway
    assert recommend(45, current=4) == 5 and recommend(29, current=4) == 3
    assert (
        scaling.recommend_replicas(
            observed_connections=43,
            unobserved_pods=0,
            current_replicas=4,
            connections_per_replica=10,
            min_replicas=1,
            max_replicas=8,
            tolerance=0,
        )
        == 5
    )


def test_a_scale_down_waits_for_the_window_then_goes_one_pod_per_period() -> None:
    policy = ScaleDownPolicy(stabilization_seconds=5, type=PolicyType.PODS, value=1, period_seconds=3)
    decisions = run_rounds([100] + [5] * 30, policy, start=10)
    replicas = [d.replicas for d in decisions]
    assert replicas[:5] == [10] * 5  # held for the window (5 s) after the last high recommendation
    assert replicas[5] == 9
    drops = [i for i in range(1, len(replicas)) if replicas[i] < replicas[i - 1]]
    assert drops and all(replicas[i - 1] - replicas[i] == 1 for i in drops)
    assert all(b - a >= 3 for a, b in itertools.pairwise(drops))  # one pod per 3 s
    assert {decisions[i].reason for i in drops[:-1]} == {Reason.RATE_LIMITED}  # it wanted to go further
    assert decisions[drops[-1]].reason is Reason.SCALE_DOWN and replicas[-1] == 1  # the last step reached it
    assert decisions[3].reason is Reason.STABILIZING


def test_a_percent_policy_removes_a_share_of_the_period_start_and_at_least_one_pod() -> None:
    policy = ScaleDownPolicy(stabilization_seconds=0, type=PolicyType.PERCENT, value=50, period_seconds=10)
    assert [d.replicas for d in run_rounds([5, 5], policy, start=16)] == [
        8,
        8,
    ]  # 16 -> 8, then the period waits
    small = ScaleDownPolicy(stabilization_seconds=0, type=PolicyType.PERCENT, value=10, period_seconds=10)
    assert run_rounds([5], small, start=4)[0].replicas == 3  # 10 % of 4 rounds down to 0: one pod still goes
    assert small.removable(40) == 4 and small.removable(4) == 1


def test_scale_up_is_immediate_and_limited_at_max() -> None:
    policy = ScaleDownPolicy()
    up = run_rounds([120], policy, start=2)[0]
    assert (up.replicas, up.reason) == (12, Reason.SCALE_UP)
    capped = run_rounds([900, 900], policy, start=2)
    assert [d.replicas for d in capped] == [20, 20] and capped[1].reason is Reason.LIMITED


def test_no_metrics_decides_nothing_and_keeps_the_history() -> None:
    history = History((Recommendation(990.0, 7),), (ScaleDown(995.0, 1),))
    decision = scaling.decide(
        current_replicas=6,
        observed_connections=None,
        unobserved_pods=3,
        bounds=BOUNDS,
        policy=ScaleDownPolicy(),
        history=history,
        now=1000.0,
    )
    assert (decision.desired, decision.reason) == (6, Reason.NO_METRICS)
    assert decision.history == history


@given(
    st.lists(st.integers(0, 200), min_size=1, max_size=60),
    st.integers(1, 20),
    st.sampled_from(list(PolicyType)),
    st.integers(1, 60),
    st.integers(1, 30),
    st.integers(0, 30),
)
def test_replicas_never_fall_faster_than_the_policy(
    loads: list[int], start: int, kind: PolicyType, value: int, period: int, window: int
) -> None:
    """Whatever the load: in any period, at most what the policy allows goes, and never within the window."""
    policy = ScaleDownPolicy(window, kind, min(value, 100) if kind is PolicyType.PERCENT else value, period)
    decisions = run_rounds(loads, policy, start=start, step=1.0)
    replicas = [start] + [d.replicas for d in decisions]
    for end in range(1, len(replicas)):
        begin = max(0, end - period)  # rounds are 1 s apart: the rounds of one period ending at `end`
        removed = sum(max(0, replicas[i - 1] - replicas[i]) for i in range(begin + 1, end + 1))
        assert removed <= policy.removable(replicas[end] + removed), (replicas, policy)
    for index, decision in enumerate(decisions):
        if (
            decision.replicas < replicas[index]
        ):  # a scale-down now: nothing higher was recommended in the window
            recent = [d.recommended for d in decisions[max(0, min(index, index - window + 1)) : index + 1]]
            assert decision.replicas >= min(replicas[index], max(recent))


# ------------------------------------------------------------------------------------------------ rebalancing
def test_imbalance_is_the_busiest_over_the_mean() -> None:
    assert scaling.imbalance({"a": 30, "b": 2, "c": 0, "d": 0}) == 3.75
    assert scaling.imbalance({"a": 10, "b": 10}) == 1.0
    assert scaling.imbalance({"a": 0, "b": 0}) == 0.0 and scaling.imbalance({}) == 0.0


def test_the_plan_is_trimmed_to_the_churn_budget_busiest_first() -> None:
    plan = scaling.shed_plan({"a": 50, "b": 40, "c": 0, "d": 10})  # mean 25: a sheds 25, b 15
    assert [o.shed for o in plan] == [25, 15]
    assert scaling.trim_to_budget(plan, 100) == plan
    trimmed = scaling.trim_to_budget(plan, 30)
    assert [(o.pod, o.shed) for o in trimmed] == [("a", 25), ("b", 5)]
    assert [(o.pod, o.shed) for o in scaling.trim_to_budget(plan, 10)] == [("a", 10)]
    assert scaling.trim_to_budget(plan, 0) == []
    assert ShedOrder("a", 0.5, 30).shed == 15


def test_the_churn_budget_counts_only_the_sheds_of_the_period() -> None:
    sheds = [Shed(100.0, 20), Shed(150.0, 15)]
    assert scaling.churn_left(sheds, 155.0, 50, 60) == 15
    assert scaling.churn_left(sheds, 161.0, 50, 60) == 35  # the first left the period
    assert scaling.churn_left(sheds, 155.0, 30, 60) == 0


# ------------------------------------------------------------------------------------------------ peering
def keepalive(priority: int, lastseen: str, lifetime: int = 60) -> dict[str, object]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen}


def test_the_live_peer_with_the_highest_priority_leads() -> None:
    now = 1_700_000_030.0  # 2023-11-14T22:13:50Z
    status = {
        "old": keepalive(-100, "2023-11-14T22:13:40+00:00"),
        "new": keepalive(-200, "2023-11-14T22:13:45+00:00"),
        "dead": keepalive(0, "2023-11-14T22:10:00+00:00"),  # its lifetime ran out
        "gone": None,  # kopf writes null to remove a stopped replica
        "broken": {"priority": "high"},
    }
    assert peering.leader(status, now) == "old"
    assert peering.leader({"new": status["new"]}, now) == "new"
    assert peering.leader({"dead": status["dead"]}, now) is None
    # The same priority: the identity breaks the tie, so exactly one leads.
    tie = {"b": keepalive(5, "2023-11-14T22:13:45+00:00"), "a": keepalive(5, "2023-11-14T22:13:45+00:00")}
    assert peering.leader(tie, now) == "b"


def test_older_replicas_get_higher_priorities() -> None:
    assert peering.default_priority(1000.0) > peering.default_priority(1001.0)
    assert peering.default_identity() != ""
