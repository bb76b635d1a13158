"""scaling.py, spec.py, status.py, pods.py and the metrics parser: pure functions, no API, no network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.operator import constants, pods, scaling
from app.operator.constants import ConditionType
from app.operator.metrics import Scrape, admin_url, metrics_url, parse_connections
from app.operator.scaling import Recommendation
from app.operator.spec import InvalidSpec, SecretKeyRef, parse_spec
from app.operator.status import (
    Condition,
    Memory,
    PendingRebalance,
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
    assert spec.scale_down_stabilization_seconds == constants.DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS
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
    ],
)
def test_spec_errors_name_the_field(spec: dict[str, object], complaint: str) -> None:
    with pytest.raises(InvalidSpec, match=complaint):
        parse_spec(spec)


def test_memory_round_trips_through_the_status() -> None:
    memory = Memory(
        recommendations=[Recommendation(1_700_000_000.25, 4), Recommendation(1_700_000_001.5, 2)],
        pending_rebalance=PendingRebalance(4, 1_700_000_000.25),
        last_scale_time="2023-11-14T22:13:20Z",
        last_shed={"shed": 3},
    )
    assert memory_from_status(memory_fields(memory)) == memory
    assert memory_fields(Memory())["pendingRebalance"] is None  # a merge patch with None clears the field
    assert (
        memory_from_status({"recommendations": [{"time": "garbage"}], "pendingRebalance": {"x": 1}})
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
