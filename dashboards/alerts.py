"""Builds the Prometheus alert rules of eventcast from one table, for plain Prometheus and for the Helm chart.

Every expression selects its series through one placeholder (``{sel}`` for the gateway, ``{osel}`` for the
operator), so the same rules come out

- in ``dashboards/alerts.yaml``: for a plain Prometheus, selecting ``job="eventcast"`` and
  ``job="eventcast-operator"``, grouped by namespace and job, runbooks on the project's docs;
- in ``helm/eventcast/files/alerts.yaml``: with the placeholders left as ``__SELECTOR__``,
  ``__OPERATOR_SELECTOR__`` and ``__RUNBOOK_BASE__``, which the chart's PrometheusRule fills with the release's
  own namespace and job and ``metrics.prometheusRule.runbookBaseUrl`` (per-alert enable and severity there too).

    python -m dashboards.alerts            # rewrite both files
    python -m dashboards.alerts --check    # exit 1 if either is stale
    python -m dashboards.alerts --selector 'namespace="prod", job="gw"' --runbook-base URL > my-alerts.yaml
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "dashboards" / "alerts.yaml"
CHART_OUTPUT = ROOT / "helm" / "eventcast" / "files" / "alerts.yaml"

RUNBOOK_BASE = "https://github.com/eventcast/eventcast/blob/main/docs/dashboards.md"
SELECTOR = 'job="eventcast"'
OPERATOR_SELECTOR = 'job="eventcast-operator"'
#: What the chart replaces (helm/eventcast/templates/prometheusrule.yaml).
CHART_PLACEHOLDERS = {"sel": "__SELECTOR__", "osel": "__OPERATOR_SELECTOR__", "runbook": "__RUNBOOK_BASE__"}

GATEWAY_GROUP = "eventcast"
OPERATOR_GROUP = "eventcast-operator"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str  # with {sel} / {osel}
    duration: str
    severity: str
    summary: str
    description: str
    group: str = GATEWAY_GROUP


def _down(selector: str) -> str:
    """Targets that exist but none answers, per namespace and job; or no target at all."""
    return (
        f"(count by (namespace, job) (up{{{selector}}}) unless count by (namespace, job) (up{{{selector}}} == 1))\n"
        f"  or absent(up{{{selector}}})\n"
    )


ALERTS: tuple[Alert, ...] = (
    Alert(
        "EventcastDown",
        _down("{sel}"),
        "2m",
        "critical",
        "No eventcast pod of a release is up.",
        "Prometheus has not scraped any eventcast pod of job {{ $labels.job }}"
        "{{ with $labels.namespace }} in {{ . }}{{ end }} successfully for 2 minutes; subscribers cannot connect.",
    ),
    Alert(
        "EventcastTargetDown",
        "up{{sel}} == 0",
        "5m",
        "warning",
        "An eventcast pod cannot be scraped.",
        "{{ $labels.instance }} of job {{ $labels.job }} has not answered /metrics for 5 minutes.",
    ),
    Alert(
        "EventcastBrokerDown",
        "eventcast_broker_up{{sel}} == 0",
        "1m",
        "critical",
        "An eventcast pod has lost its broker.",
        "{{ $labels.instance }} cannot reach Redis: it is not ready, publishes fail and its clients get no new events.",
    ),
    Alert(
        "EventcastHighBroadcastLatency",
        "histogram_quantile(0.99, sum by (namespace, job, le) "
        "(rate(eventcast_broadcast_latency_seconds_bucket{{sel}}[5m]))) > 0.5\n",
        "10m",
        "warning",
        "eventcast broadcast latency p99 is above 500 ms.",
        "p99 from publish accepted to frame written is {{ $value | humanizeDuration }} for job {{ $labels.job }}.",
    ),
    Alert(
        "EventcastHighConnectLatency",
        "histogram_quantile(0.99, sum by (namespace, job, le) "
        "(rate(eventcast_connect_duration_seconds_bucket{{sel}}[5m]))) > 1\n",
        "10m",
        "warning",
        "eventcast connect latency p99 is above 1 s.",
        "p99 from upgrade request to welcome frame is {{ $value | humanizeDuration }} for job {{ $labels.job }}.",
    ),
    Alert(
        "EventcastBrokerLagHigh",
        "histogram_quantile(0.99, sum by (namespace, job, le) "
        "(rate(eventcast_broker_lag_seconds_bucket{{sel}}[5m]))) > 0.25\n",
        "10m",
        "warning",
        "Events take more than 250 ms (p99) to come back from the broker.",
        "p99 broker lag is {{ $value | humanizeDuration }} for job {{ $labels.job }}.",
    ),
    Alert(
        "EventcastSlowConsumers",
        'sum by (namespace, job) (rate(eventcast_connections_closed_total{{sel}, reason="slow_consumer"}[5m])) '
        "* 60 > 5\n",
        "10m",
        "warning",
        "eventcast is closing many slow consumers (4008).",
        "{{ $value | humanize }} connections per minute are closed as slow consumers in job {{ $labels.job }}.",
    ),
    Alert(
        "EventcastMessagesDropped",
        "sum by (namespace, job) (rate(eventcast_messages_dropped_total{{sel}}[5m]))\n"
        "  / (sum by (namespace, job) (rate(eventcast_messages_delivered_total{{sel}}[5m]))\n"
        "     + sum by (namespace, job) (rate(eventcast_messages_dropped_total{{sel}}[5m])))\n"
        "  > 0.01\n",
        "10m",
        "warning",
        "More than 1% of eventcast frames are dropped.",
        "{{ $value | humanizePercentage }} of frames are dropped in job {{ $labels.job }}.",
    ),
    Alert(
        "EventcastEventsQuarantined",
        "sum by (namespace, job, reason) (increase(eventcast_events_quarantined_total{{sel}}[10m])) > 0\n",
        "0m",
        "warning",
        "eventcast skipped events no encoding can carry.",
        "{{ $value | humanize }} events were quarantined ({{ $labels.reason }}) in job {{ $labels.job }} in 10 "
        "minutes: a producer writes straight into the Redis log what publish validation would refuse. The "
        "gateway logs each id (event.quarantined).",
    ),
    Alert(
        "EventcastBrokerReaderRestarting",
        "sum by (namespace, job) (increase(eventcast_broker_reader_restarts_total{{sel}}[10m])) > 0\n"
        "  or sum by (namespace, job) (increase(eventcast_fanout_errors_total{{sel}}[10m])) > 0\n",
        "0m",
        "critical",
        "eventcast's log reader or fan-out failed unexpectedly.",
        "The broker reader restarted or the fan-out closed subscribers with 1011 in job {{ $labels.job }}: a "
        "bug. Delivery goes on, but look at the logs (broker.reader_failed, fanout.error) and report it.",
    ),
    Alert(
        "EventcastMemoryPerConnectionHigh",
        "eventcast_memory_per_connection_bytes{{sel}} > 262144\n"
        "  and sum without (transport) (eventcast_connections{{sel}}) > 100\n",
        "15m",
        "warning",
        "eventcast uses more than 256 KiB per connection.",
        "{{ $labels.instance }} uses {{ $value | humanize1024 }}B above its baseline per open connection.",
    ),
    Alert(
        "EventcastNoDeliveries",
        "sum by (namespace, job) (rate(eventcast_events_published_total{{sel}}[5m])) > 0\n"
        "  and sum by (namespace, job) (eventcast_connections{{sel}}) > 0\n"
        "  and sum by (namespace, job) (rate(eventcast_messages_delivered_total{{sel}}[5m])) == 0\n",
        "10m",
        "critical",
        "eventcast accepts events but delivers none.",
        "Job {{ $labels.job }} accepts publishes and has open connections, yet no frame was delivered for 10 minutes.",
    ),
    Alert(
        "EventcastRecoveryFailures",
        'sum by (namespace, job) (rate(eventcast_recoveries_total{{sel}, result="gap"}[10m]))\n'
        "  / sum by (namespace, job) (rate(eventcast_recoveries_total{{sel}}[10m]))\n"
        "  > 0.1\n",
        "10m",
        "warning",
        "More than 10% of eventcast resumes cannot recover.",
        "{{ $value | humanizePercentage }} of resume attempts end in a gap in job {{ $labels.job }}.",
    ),
    Alert(
        "EventcastConnectionsNearLimit",
        "sum without (transport) (eventcast_connections{{sel}}) / eventcast_connections_max{{sel}} > 0.85\n",
        "5m",
        "warning",
        "An eventcast pod holds more than 85% of its connection limit.",
        "{{ $labels.instance }} holds {{ $value | humanizePercentage }} of its connection limit "
        "(EVENTCAST_MAX_CONNECTIONS x workers); past it new clients are refused with 1013.",
    ),
    Alert(
        "EventcastConnectionsRefused",
        "sum by (namespace, job, reason) (rate(eventcast_connections_refused_total{{sel}, "
        'reason=~"overload|broker_unavailable"}[5m])) * 60 > 5\n',
        "5m",
        "critical",
        "eventcast is refusing new subscribers (overload or broker unavailable).",
        "{{ $value | humanize }} subscribers per minute are refused with reason {{ $labels.reason }} "
        "in job {{ $labels.job }}.",
    ),
    # ---------------------------------------------------------------------------------- the operator
    Alert(
        "EventcastOperatorDown",
        _down("{osel}"),
        "5m",
        "warning",
        "No eventcast operator replica of a release is up.",
        "No operator of job {{ $labels.job }}{{ with $labels.namespace }} in {{ . }}{{ end }} answered /metrics for 5 minutes: "
        "nothing scales or rebalances the gateway (it keeps serving at its current size).",
        OPERATOR_GROUP,
    ),
    Alert(
        "EventcastOperatorLeadership",
        "sum by (namespace, job, autoscaler_namespace) (eventcast_operator_leader{{osel}}) != 1\n",
        "5m",
        "warning",
        "Not exactly one eventcast operator replica acts.",
        "{{ $value }} operator replicas act for the autoscalers of {{ $labels.autoscaler_namespace }}: none "
        "means no scaling (peering object or CRD missing), more than one means double actions.",
        OPERATOR_GROUP,
    ),
    Alert(
        "EventcastOperatorScrapeFailures",
        "sum by (namespace, job, autoscaler_namespace, autoscaler) "
        "(rate(eventcast_operator_scrape_failures_total{{osel}}[5m])) > 0\n",
        "15m",
        "warning",
        "The eventcast operator cannot read some gateway pods' /metrics.",
        "Autoscaler {{ $labels.autoscaler_namespace }}/{{ $labels.autoscaler }} keeps failing to scrape gateway "
        "pods: unread pods count as full, so it will not scale down.",
        OPERATOR_GROUP,
    ),
    Alert(
        "EventcastOperatorAtMaxReplicas",
        "max by (namespace, job, autoscaler_namespace, autoscaler) (eventcast_operator_desired_replicas{{osel}})\n"
        "  >= max by (namespace, job, autoscaler_namespace, autoscaler) (eventcast_operator_max_replicas{{osel}})\n",
        "30m",
        "warning",
        "An eventcast autoscaler has been at maxReplicas for 30 minutes.",
        "Autoscaler {{ $labels.autoscaler_namespace }}/{{ $labels.autoscaler }} wants maxReplicas: the load may "
        "exceed the capacity it is allowed.",
        OPERATOR_GROUP,
    ),
    Alert(
        "EventcastOperatorReplicasNotReady",
        "min by (namespace, job, autoscaler_namespace, autoscaler) (eventcast_operator_ready_pods{{osel}})\n"
        "  < min by (namespace, job, autoscaler_namespace, autoscaler) (eventcast_operator_desired_replicas{{osel}})\n",
        "15m",
        "warning",
        "The gateway has fewer ready pods than its autoscaler asked for.",
        "Autoscaler {{ $labels.autoscaler_namespace }}/{{ $labels.autoscaler }} asked for more pods than are "
        "ready for 15 minutes: scheduling, quota or image problems.",
        OPERATOR_GROUP,
    ),
    Alert(
        "EventcastOperatorErrors",
        "sum by (namespace, job, autoscaler_namespace, autoscaler) "
        "(rate(eventcast_operator_reconcile_errors_total{{osel}}[10m])) > 0\n",
        "10m",
        "warning",
        "The eventcast operator's rounds fail.",
        "Rounds of autoscaler {{ $labels.autoscaler_namespace }}/{{ $labels.autoscaler }} keep failing: see "
        "the operator's logs.",
        OPERATOR_GROUP,
    ),
)

NAMES = tuple(alert.name for alert in ALERTS)


def rules(selector: str, operator_selector: str, runbook_base: str) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {GATEWAY_GROUP: [], OPERATOR_GROUP: []}
    for alert in ALERTS:
        groups[alert.group].append(
            {
                "alert": alert.name,
                "expr": alert.expr.replace("{sel}", selector).replace("{osel}", operator_selector),
                "for": alert.duration,
                "labels": {"severity": alert.severity},
                "annotations": {
                    "summary": alert.summary,
                    "description": alert.description,
                    "runbook_url": f"{runbook_base}#{alert.name.lower()}",
                },
            }
        )
    return {"groups": [{"name": name, "rules": items} for name, items in groups.items()]}


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)

HEADER = (
    "# Generated by `python -m dashboards.alerts` from dashboards/alerts.py: edit that, then regenerate.\n"
    "# Runbooks: docs/dashboards.md. Tests: dashboards/tests/alerts_test.yaml (promtool).\n"
)


def render(
    selector: str = SELECTOR, operator_selector: str = OPERATOR_SELECTOR, runbook: str = RUNBOOK_BASE
) -> str:
    body = yaml.dump(rules(selector, operator_selector, runbook), Dumper=_Dumper, sort_keys=False, width=200)
    return HEADER + str(body)


def render_chart() -> str:
    return render(CHART_PLACEHOLDERS["sel"], CHART_PLACEHOLDERS["osel"], CHART_PLACEHOLDERS["runbook"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.alerts")
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is stale")
    parser.add_argument("--selector", help="print the rules for this gateway selector instead")
    parser.add_argument("--operator-selector", default=OPERATOR_SELECTOR)
    parser.add_argument("--runbook-base", default=RUNBOOK_BASE)
    args = parser.parse_args(argv)
    if args.selector:
        sys.stdout.write(render(args.selector, args.operator_selector, args.runbook_base))
        return 0
    wanted = {OUTPUT: render(), CHART_OUTPUT: render_chart()}
    if args.check:
        stale = [str(path) for path, text in wanted.items() if not path.exists() or path.read_text() != text]
        for name in stale:
            print(f"{name} is stale: run python -m dashboards.alerts", file=sys.stderr)
        return 1 if stale else 0
    for path, text in wanted.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
