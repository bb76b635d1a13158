"""Every name the operator shares with Kubernetes, the chart and the gateway, defined once."""

from __future__ import annotations

from enum import StrEnum

GROUP = "eventcast.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "connectionautoscalers"
SINGULAR = "connectionautoscaler"
KIND = "ConnectionAutoscaler"
SHORT_NAMES = ("cas",)
CRD_NAME = f"{PLURAL}.{GROUP}"

# Pods with a lower cost are removed first when a ReplicaSet scales down (Kubernetes >= 1.22).
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
# The annotation is an int32.
DELETION_COST_MAX = 2**31 - 1

# The gateway's contract (DESIGN sections 7 and 8, app/routes/http.py).
CONNECTIONS_METRIC = "eventcast_connections"
METRICS_PATH = "/metrics"
SHED_PATH = "/admin/shed"

# Spec defaults; the CRD schema and the spec parser both read these.
DEFAULT_MIN_REPLICAS = 1
# The one scale-down policy of every mode (chart: autoscaling.scaleDown): 1 pod per 60 s after 5 minutes.
DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS = 300
DEFAULT_SCALE_DOWN_VALUE = 1
DEFAULT_SCALE_DOWN_PERIOD_SECONDS = 60
# The HPA's default tolerance: the load must be off target by more than this before replicas move.
DEFAULT_TOLERANCE_PERCENT = 10
DEFAULT_METRICS_PORT = 8000
DEFAULT_SHED_SPREAD_SECONDS = 10
DEFAULT_INTERVAL_SECONDS = 15.0
# Continuous rebalancing: the busiest pod above 125 % of the mean for 60 s sheds toward the mean, at most
# churnBudget connections (default: connectionsPerReplica) per churnPeriodSeconds across the Deployment.
DEFAULT_REBALANCE_IMBALANCE_PERCENT = 125
DEFAULT_REBALANCE_WINDOW_SECONDS = 60
DEFAULT_CHURN_PERIOD_SECONDS = 60

# How long one pod's /metrics scrape or /admin/shed call may take.
SCRAPE_TIMEOUT_SECONDS = 2.0
SHED_TIMEOUT_SECONDS = 5.0
# Pods whose connection count is within this share of the mean are not asked to shed.
SHED_TOLERANCE = 0.1
# status.pods lists at most this many pods (the busiest first).
STATUS_PODS_LIMIT = 50


class Phase(StrEnum):
    """``status.phase`` of a ConnectionAutoscaler."""

    STABLE = "Stable"  # replicas match the load
    SCALING_UP = "ScalingUp"  # replicas were just raised
    SCALING_DOWN = "ScalingDown"  # replicas were just lowered
    REBALANCING = "Rebalancing"  # the busiest pods were asked to shed clients toward the mean this round
    DEGRADED = "Degraded"  # some or all pods could not be scraped; scaling on what was seen
    TARGET_NOT_FOUND = "TargetNotFound"  # the Deployment named in scaleTargetRef does not exist
    INVALID = "Invalid"  # the spec is not usable (the CRD schema normally stops this first)


class ConditionType(StrEnum):
    TARGET_FOUND = "TargetFound"
    METRICS_AVAILABLE = "MetricsAvailable"
    SCALING_LIMITED = "ScalingLimited"


# kopf's peering objects (kopf.dev/v1): keep-alives of every operator replica; the live one with the highest
# priority acts (docs/operator.md, "High availability").
PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"
PEERING_PLURAL = "kopfpeerings"
CLUSTER_PEERING_PLURAL = "clusterkopfpeerings"
DEFAULT_PEERING_LIFETIME_SECONDS = 60


def rbac_rules(
    secret_names: tuple[str, ...] = (), peering_name: str | None = None
) -> list[dict[str, list[str]]]:
    """What the operator does with the API, as RBAC rules for its namespace.

    k8s/operator/rbac.yaml and the chart's Role must grant exactly these (tests check both). The operator
    lists the autoscalers and writes their status; reads and patches the target Deployment; lists the pods and
    patches their deletion cost; reads the admin-token Secrets by name only (none when no autoscaler names
    one); posts Events; and, with peering, reads and writes its own KopfPeering object.
    """
    rules: list[dict[str, list[str]]] = [
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]},
    ]
    if secret_names:
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": list(secret_names),
                "verbs": ["get"],
            }
        )
    rules.append({"apiGroups": [""], "resources": ["events"], "verbs": ["create"]})
    if peering_name:
        # kopf lists and watches the peering objects of the namespace (a list cannot be limited by name) and
        # writes its keep-alive into its own one; the operator reads that one.
        rules.append(
            {"apiGroups": [PEERING_GROUP], "resources": [PEERING_PLURAL], "verbs": ["list", "watch"]}
        )
        rules.append(
            {
                "apiGroups": [PEERING_GROUP],
                "resources": [PEERING_PLURAL],
                "resourceNames": [peering_name],
                "verbs": ["get", "patch"],
            }
        )
    return rules
