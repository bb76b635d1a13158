"""Builds dashboards/eventcast.json, the Grafana dashboard of eventcast, from plain data.

Dashboards as code without a dependency: ``QUERIES`` (what each panel asks Prometheus) is kept apart from
``LAYOUT`` (where panels go and how they look), every query goes through one label selector, and every panel
reads from the ``${datasource}`` variable. tests/dashboards/ checks that the committed JSON is this module's
output, that each query returns data from a real Prometheus scraping a loaded gateway, and that the JSON
type-checks against Grafana's published schema (npm ``@grafana/schema``).

    python -m dashboards.build            # rewrite dashboards/eventcast.json
    python -m dashboards.build --check    # exit 1 if the committed file is stale
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "eventcast.json"

UID = "eventcast-overview"
TITLE = "eventcast"
#: Grafana's dashboard JSON schema version this file is written for.
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
SLOW_CONSUMER = 'reason="slow_consumer"'  # the close label of 4008 (app/causes.py)
MEMORY = 'resource="memory"'  # kube-state-metrics' resource label

#: The template variables every query filters on, in the order they cascade (cluster, namespace, job, pod).
#: Outside Kubernetes a series has no cluster, namespace or pod label: "All" is ".*", which also matches a
#: missing label.
VARIABLES = ("cluster", "namespace", "job", "pod")
SELECTOR = ", ".join(f'{name}=~"${name}"' for name in VARIABLES)
#: The operator's replica-wide series (round time) carry no autoscaler: only the cluster filters them.
CLUSTER_SELECTOR = 'cluster=~"$cluster"'
#: The operator's series: its own job, per autoscaler; ``autoscaler_namespace`` is the gateway's namespace.
OPERATOR_SELECTOR = 'cluster=~"$cluster", autoscaler_namespace=~"$namespace"'
#: Series of the gateway's pods scraped by others (kubelet's cAdvisor, kube-state-metrics): no eventcast job.
POD_SELECTOR = 'cluster=~"$cluster", namespace=~"$namespace", pod=~"$pod", container="eventcast"'
#: Metrics the dashboard reads from kube-state-metrics and cAdvisor (standard in kube-prometheus-stack). The
#: live test runs their queries for syntax only: no kubelet or kube-state-metrics runs there.
EXTERNAL_METRICS = {
    "container_memory_working_set_bytes": "cAdvisor (kubelet)",
    "kube_pod_container_resource_limits": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_desired_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_current_replicas": "kube-state-metrics",
}


def metric(name: str, extra: str = "", selector: str = SELECTOR) -> str:
    """``name{<the dashboard's selector>[, extra]}``: the one place a selector is written."""
    return f"{name}{{{selector}{', ' + extra if extra else ''}}}"


def operator(name: str, extra: str = "") -> str:
    return metric(name, extra, OPERATOR_SELECTOR)


def rate(name: str, extra: str = "", selector: str = SELECTOR) -> str:
    return f"rate({metric(name, extra, selector)}[{RATE}])"


def quantile(q: float, histogram: str, selector: str = SELECTOR) -> str:
    return f"histogram_quantile({q}, sum by (le) ({rate(histogram + '_bucket', selector=selector)}))"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    external: bool = False  # reads EXTERNAL_METRICS: data only where kube-state-metrics and cAdvisor run
    quiet: bool = False  # an error count that stays at zero in a healthy run (the live test checks it exists)


def quantiles(histogram: str, *qs: float) -> tuple[Query, ...]:
    return tuple(Query(quantile(q, histogram), f"p{round(q * 100)}") for q in qs)


# ------------------------------------------------------------------------------------------------ queries
QUERIES: dict[str, tuple[Query, ...]] = {
    "connections_total": (Query(f"sum({metric('eventcast_connections')})", "connections"),),
    "replicas": (Query(f"count({metric('eventcast_broker_up')})", "pods reporting"),),
    "published_rate": (Query(f"sum({rate('eventcast_events_published_total')})", "published/s"),),
    "broker_up_min": (Query(f"min({metric('eventcast_broker_up')})", "broker up (all pods)"),),
    "connections_by_transport": (
        Query(f"sum by (transport) ({metric('eventcast_connections')})", "{{transport}}"),
    ),
    "connections_per_pod": (
        Query(f"sum by (pod, transport) ({metric('eventcast_connections')})", "{{pod}} {{transport}}"),
    ),
    "connections_vs_limit": (
        Query(f"sum({metric('eventcast_connections')})", "connections"),
        Query(f"sum({metric('eventcast_connections_max')})", "limit"),
    ),
    "limit_used": (
        Query(
            f"100 * sum by (pod) ({metric('eventcast_connections')})"
            f" / sum by (pod) ({metric('eventcast_connections_max')})",
            "{{pod}}",
        ),
    ),
    "refusals": (
        Query(f"sum by (reason) ({rate('eventcast_connections_refused_total')})", "refused: {{reason}}"),
    ),
    "opens_closes": (
        Query(f"sum({rate('eventcast_connections_opened_total')})", "opened"),
        Query(f"sum by (reason) ({rate('eventcast_connections_closed_total')})", "closed: {{reason}}"),
    ),
    "connect_latency": quantiles("eventcast_connect_duration_seconds", 0.5, 0.95, 0.99),
    "broadcast_latency": quantiles("eventcast_broadcast_latency_seconds", 0.5, 0.99),
    "fanout_duration": quantiles("eventcast_fanout_duration_seconds", 0.5, 0.99),
    "throughput": (
        Query(f"sum({rate('eventcast_events_published_total')})", "published/s"),
        Query(f"sum({rate('eventcast_messages_delivered_total')})", "delivered/s"),
    ),
    "drops_slow_consumers": (
        Query(f"sum by (reason) ({rate('eventcast_messages_dropped_total')})", "dropped: {{reason}}"),
        Query(
            f"sum({rate('eventcast_connections_closed_total', SLOW_CONSUMER)})",
            "slow consumers closed (4008)",
        ),
    ),
    "delivery_faults": (
        Query(f"sum by (reason) ({rate('eventcast_events_quarantined_total')})", "quarantined: {{reason}}"),
        Query(f"sum({rate('eventcast_broker_reader_restarts_total')})", "broker reader restarts", quiet=True),
        Query(f"sum({rate('eventcast_fanout_errors_total')})", "fan-out errors (closed 1011)", quiet=True),
    ),
    "send_queue": (Query(f"sum by (pod) ({metric('eventcast_send_queue_bytes')})", "{{pod}}"),),
    "memory_per_connection": (
        Query(f"max by (pod) ({metric('eventcast_memory_per_connection_bytes')})", "{{pod}}"),
    ),
    "rss": (Query(f"sum by (pod) ({metric('process_resident_memory_bytes')})", "{{pod}}"),),
    "cpu": (Query(f"sum by (pod) ({rate('process_cpu_seconds_total')})", "{{pod}}"),),
    "recoveries": (Query(f"sum by (result) ({rate('eventcast_recoveries_total')})", "{{result}}"),),
    "broker_up": (Query(f"min by (pod) ({metric('eventcast_broker_up')})", "{{pod}}"),),
    "broker_lag": quantiles("eventcast_broker_lag_seconds", 0.5, 0.99),
    "replicas_over_time": (Query(f"count({metric('eventcast_broker_up')})", "pods reporting"),),
    "memory_vs_limit": (
        Query(f"sum by (pod) ({metric('process_resident_memory_bytes')})", "{{pod}} resident"),
        Query(
            f"sum by (pod) ({metric('container_memory_working_set_bytes', selector=POD_SELECTOR)})",
            "{{pod}} working set",
            external=True,
        ),
        Query(
            f"max by (pod) ({metric('kube_pod_container_resource_limits', MEMORY, POD_SELECTOR)})",
            "{{pod}} limit",
            external=True,
        ),
    ),
    # ---------------------------------------------------------------- the autoscaler
    "autoscaler_replicas": (
        Query(
            f"max by (autoscaler) ({operator('eventcast_operator_desired_replicas')})",
            "{{autoscaler}} desired",
        ),
        Query(
            f"max by (autoscaler) ({operator('eventcast_operator_current_replicas')})",
            "{{autoscaler}} current",
        ),
        Query(f"max by (autoscaler) ({operator('eventcast_operator_ready_pods')})", "{{autoscaler}} ready"),
        Query(f"max by (autoscaler) ({operator('eventcast_operator_min_replicas')})", "{{autoscaler}} min"),
        Query(f"max by (autoscaler) ({operator('eventcast_operator_max_replicas')})", "{{autoscaler}} max"),
        Query(
            "max by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_desired_replicas"
            '{cluster=~"$cluster", namespace=~"$namespace", horizontalpodautoscaler=~".*eventcast.*"})',
            "{{horizontalpodautoscaler}} desired (HPA/KEDA)",
            external=True,
        ),
        Query(
            "max by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_current_replicas"
            '{cluster=~"$cluster", namespace=~"$namespace", horizontalpodautoscaler=~".*eventcast.*"})',
            "{{horizontalpodautoscaler}} current (HPA/KEDA)",
            external=True,
        ),
    ),
    "autoscaler_decisions": (
        Query(
            f"sum by (reason) ({rate('eventcast_operator_decisions_total', selector=OPERATOR_SELECTOR)}) * 60",
            "{{reason}}",
        ),
    ),
    "autoscaler_sheds": (
        Query(
            f"sum({rate('eventcast_operator_shed_connections_total', selector=OPERATOR_SELECTOR)}) * 60",
            "clients shed/min",
        ),
        Query(
            f"sum by (result) ({rate('eventcast_operator_sheds_total', selector=OPERATOR_SELECTOR)}) * 60",
            "shed requests/min: {{result}}",
        ),
    ),
    "autoscaler_failures": (
        Query(
            f"sum by (autoscaler) ({rate('eventcast_operator_scrape_failures_total', selector=OPERATOR_SELECTOR)}) * 60",
            "{{autoscaler}} scrape failures/min",
        ),
        Query(
            f"sum by (autoscaler) ({rate('eventcast_operator_reconcile_errors_total', selector=OPERATOR_SELECTOR)}) * 60",
            "{{autoscaler}} failed rounds/min",
        ),
    ),
    "autoscaler_leader": (Query(f"max by (pod) ({operator('eventcast_operator_leader')})", "{{pod}}"),),
    "autoscaler_rounds": (
        Query(
            quantile(0.99, "eventcast_operator_round_duration_seconds", CLUSTER_SELECTOR),
            "round p99",
        ),
        Query(
            f"time() - max({metric('eventcast_operator_last_round_timestamp_seconds', selector=CLUSTER_SELECTOR)})",
            "since the last round",
        ),
    ),
}


# ------------------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class PanelSpec:
    key: str  # into QUERIES
    title: str
    description: str
    unit: str
    width: int
    kind: str = "timeseries"  # or "stat"


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[PanelSpec, ...]


HEIGHTS = {"stat": 4, "timeseries": 8}

LAYOUT: tuple[Row, ...] = (
    Row(
        "Overview",
        (
            PanelSpec(
                "connections_total",
                "Connections",
                "Open subscriber connections, all pods.",
                "short",
                6,
                "stat",
            ),
            PanelSpec("replicas", "Replicas", "Pods reporting eventcast metrics.", "short", 6, "stat"),
            PanelSpec(
                "published_rate", "Events published/s", "Events accepted by POST /events.", "ops", 6, "stat"
            ),
            PanelSpec(
                "broker_up_min",
                "Broker up",
                "1 when every pod reaches the broker (Redis).",
                "bool",
                6,
                "stat",
            ),
        ),
    ),
    Row(
        "Connections",
        (
            PanelSpec(
                "connections_by_transport",
                "Connections by transport",
                "WebSocket and SSE clients.",
                "short",
                8,
            ),
            PanelSpec("connections_per_pod", "Connections per pod", "Balance across replicas.", "short", 8),
            PanelSpec(
                "opens_closes", "Opens and closes/s", "Accepted connections and closes by reason.", "ops", 8
            ),
            PanelSpec(
                "connect_latency",
                "Connect latency",
                "Upgrade request to welcome frame (includes resume).",
                "s",
                12,
            ),
            PanelSpec(
                "recoveries", "Recoveries/s by result", "Resumes with since: recovered or gap.", "ops", 12
            ),
        ),
    ),
    Row(
        "Capacity",
        (
            PanelSpec(
                "connections_vs_limit",
                "Connections vs limit",
                "Open connections and the limit (EVENTCAST_MAX_CONNECTIONS x workers x pods), all pods.",
                "short",
                8,
            ),
            PanelSpec(
                "limit_used",
                "Limit used per pod",
                "Open connections as a share of the pod's limit; past 100% new clients get 1013.",
                "percent",
                8,
            ),
            PanelSpec(
                "refusals",
                "Refusals/s by reason",
                "Subscribers turned away before their welcome: overload, draining, auth, rate limit, ...",
                "ops",
                8,
            ),
        ),
    ),
    Row(
        "Delivery",
        (
            PanelSpec(
                "broadcast_latency",
                "Broadcast latency",
                "Publish accepted to frame written (sampled 1 in 8).",
                "s",
                8,
            ),
            PanelSpec(
                "fanout_duration",
                "Fan-out duration",
                "Queuing one broker batch to local subscribers.",
                "s",
                8,
            ),
            PanelSpec("throughput", "Published and delivered/s", "Events in, frames out.", "ops", 8),
            PanelSpec(
                "drops_slow_consumers",
                "Drops and slow consumers",
                "Frames dropped and clients closed with 4008 because they could not keep up.",
                "ops",
                12,
            ),
            PanelSpec(
                "send_queue", "Send queue bytes", "Bytes waiting in outbound queues, per pod.", "bytes", 12
            ),
            PanelSpec(
                "delivery_faults",
                "Quarantined events and delivery faults",
                "Events skipped because some encoding cannot carry them (a direct producer's; the log names "
                "each id), log reader restarts, subscribers closed by a fan-out bug. All should stay at 0.",
                "ops",
                24,
            ),
        ),
    ),
    Row(
        "Resources and broker",
        (
            PanelSpec(
                "memory_per_connection",
                "Memory per connection",
                "RSS above the startup baseline per open connection.",
                "bytes",
                8,
            ),
            PanelSpec("rss", "Resident memory", "Process RSS per pod (all workers).", "bytes", 8),
            PanelSpec("cpu", "CPU", "CPU cores used per pod (all workers).", "short", 8),
            PanelSpec("broker_up", "Broker up per pod", "0 when a pod lost Redis.", "bool", 8),
            PanelSpec("broker_lag", "Broker lag", "Publish accepted to the event reaching fan-out.", "s", 8),
            PanelSpec("replicas_over_time", "Replicas", "Pods reporting over time.", "short", 8),
            PanelSpec(
                "memory_vs_limit",
                "Memory vs limit",
                "Resident memory (eventcast), the container's working set (cAdvisor) and its memory limit "
                "(kube-state-metrics): the working set reaching the limit is an OOM kill.",
                "bytes",
                24,
            ),
        ),
    ),
    Row(
        "Autoscaler",
        (
            PanelSpec(
                "autoscaler_replicas",
                "Replicas: desired vs current",
                "Operator mode: what the operator chose, the Deployment's replicas, the ready pods and the bounds. "
                "hpa and keda modes: their HPA's desired and current replicas (kube-state-metrics).",
                "short",
                12,
            ),
            PanelSpec(
                "autoscaler_decisions",
                "Decisions/min by reason",
                "Why each round chose its replica count: scale_up, scale_down, rate_limited, stabilizing, "
                "within_tolerance, steady, limited, no_metrics.",
                "short",
                12,
            ),
            PanelSpec(
                "autoscaler_sheds",
                "Rebalancing: sheds",
                "Clients the gateway pods closed (1012) to move toward the mean, and the shed requests sent.",
                "short",
                8,
            ),
            PanelSpec(
                "autoscaler_failures",
                "Scrape failures and failed rounds",
                "Gateway pods the operator could not read (they count as full: no scale-down), and rounds that failed.",
                "short",
                8,
            ),
            PanelSpec(
                "autoscaler_leader",
                "Acting replica",
                "1 for the operator replica that acts (kopf peering); exactly one should.",
                "short",
                8,
            ),
            PanelSpec(
                "autoscaler_rounds",
                "Operator rounds",
                "p99 duration of a round over every autoscaler, and the time since the last one.",
                "s",
                24,
            ),
        ),
    ),
)


# ------------------------------------------------------------------------------------------------ rendering
def targets(key: str) -> list[dict[str, Any]]:
    return [
        {
            "datasource": DATASOURCE,
            "expr": query.expr,
            "legendFormat": query.legend,
            "range": True,
            "refId": chr(ord("A") + index),
        }
        for index, query in enumerate(QUERIES[key])
    ]


def panel(spec: PanelSpec, panel_id: int, x: int, y: int) -> dict[str, Any]:
    custom: dict[str, Any] = {"fillOpacity": 10, "showPoints": "never"} if spec.kind == "timeseries" else {}
    options: dict[str, Any] = (
        {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi"},
        }
        if spec.kind == "timeseries"
        else {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
        }
    )
    return {
        "datasource": DATASOURCE,
        "description": spec.description,
        "fieldConfig": {"defaults": {"unit": spec.unit, "custom": custom}, "overrides": []},
        "gridPos": {"h": HEIGHTS[spec.kind], "w": spec.width, "x": x, "y": y},
        "id": panel_id,
        "options": options,
        "targets": targets(spec.key),
        "title": spec.title,
        "type": spec.kind,
    }


def panels() -> list[dict[str, Any]]:
    """Rows and their panels, flowing left to right and wrapping at Grafana's 24 columns."""
    out: list[dict[str, Any]] = []
    y = 0
    for row in LAYOUT:
        out.append(
            {
                "collapsed": False,
                "datasource": DATASOURCE,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": len(out) + 1,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        y += 1
        x = line_height = 0
        for spec in row.panels:
            if x + spec.width > 24:
                x, y, line_height = 0, y + line_height, 0
            out.append(panel(spec, len(out) + 1, x, y))
            x += spec.width
            line_height = max(line_height, HEIGHTS[spec.kind])
        y += line_height
    return out


ANNOTATIONS: tuple[tuple[str, str, str, str], ...] = (
    # (name, colour, PromQL, title): what changed the pods while the graphs moved.
    (
        "Pods started (rollouts, restarts, scale-ups)",
        "blue",
        f"max by (pod) (time() - {metric('process_start_time_seconds')}) < 120",
        "{{pod}} started",
    ),
    (
        "Scale events (operator)",
        "orange",
        f"max by (autoscaler) (abs(delta({operator('eventcast_operator_desired_replicas')}[2m]))) > 0",
        "{{autoscaler}} scaled",
    ),
    (
        "Scale events (HPA, KEDA)",
        "purple",
        "max by (horizontalpodautoscaler) (abs(delta(kube_horizontalpodautoscaler_status_desired_replicas"
        '{cluster=~"$cluster", namespace=~"$namespace", horizontalpodautoscaler=~".*eventcast.*"}[2m]))) > 0',
        "{{horizontalpodautoscaler}} scaled",
    ),
)


def annotation_queries() -> list[dict[str, Any]]:
    """Prometheus annotation queries, in the form Grafana stores them (``target`` holds the query)."""
    return [
        {
            "datasource": DATASOURCE,
            "enable": True,
            "hide": False,
            "iconColor": colour,
            "name": name,
            "target": {
                "refId": "Anno",
                "expr": expr,
                "interval": "30s",
                "legendFormat": title,
                "titleFormat": title,
            },
        }
        for name, colour, expr, title in ANNOTATIONS
    ]


def variable(name: str, label: str, parents: tuple[str, ...]) -> dict[str, Any]:
    """A query variable listing ``name`` values of series that match the variables before it."""
    match = ", ".join(f'{parent}=~"${parent}"' for parent in parents)
    series = f"eventcast_broker_up{{{match}}}" if match else "eventcast_broker_up"
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": "All", "value": "$__all"},
        "datasource": DATASOURCE,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "query": {"query": f"label_values({series}, {name})", "refId": "PrometheusVariableQuery"},
        "refresh": 2,
        "sort": 1,
        "type": "query",
    }


def templating() -> list[dict[str, Any]]:
    datasource = {
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "name": "datasource",
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }
    labels = {"cluster": "Cluster", "namespace": "Namespace", "job": "Job", "pod": "Pod"}
    return [datasource] + [variable(name, labels[name], VARIABLES[:i]) for i, name in enumerate(VARIABLES)]


def build() -> dict[str, Any]:
    return {
        "annotations": {"list": annotation_queries()},
        "description": "eventcast WebSocket event gateway: connections, latency, delivery, drops, memory, broker, "
        "autoscaler.",
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": panels(),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["eventcast"],
        "templating": {"list": templating()},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": TITLE,
        "uid": UID,
        "version": 1,
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python -m dashboards.build", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
