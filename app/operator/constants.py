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
DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS = 300
DEFAULT_METRICS_PORT = 8000
DEFAULT_SHED_SPREAD_SECONDS = 10
DEFAULT_INTERVAL_SECONDS = 15.0

# How long one pod's /metrics scrape or /admin/shed call may take.
SCRAPE_TIMEOUT_SECONDS = 2.0
SHED_TIMEOUT_SECONDS = 5.0
# A rebalance waits this long for the new pods to become ready, then is dropped.
REBALANCE_TIMEOUT_SECONDS = 600.0
# Pods whose connection count is within this share of the mean are not asked to shed.
SHED_TOLERANCE = 0.1
# status.pods lists at most this many pods (the busiest first).
STATUS_PODS_LIMIT = 50


class Phase(StrEnum):
    """``status.phase`` of a ConnectionAutoscaler."""

    STABLE = "Stable"  # replicas match the load
    SCALING_UP = "ScalingUp"  # replicas were just raised
    SCALING_DOWN = "ScalingDown"  # replicas were just lowered
    REBALANCING = "Rebalancing"  # waiting for new pods to be ready, then shedding the busiest
    DEGRADED = "Degraded"  # some or all pods could not be scraped; scaling on what was seen
    TARGET_NOT_FOUND = "TargetNotFound"  # the Deployment named in scaleTargetRef does not exist
    INVALID = "Invalid"  # the spec is not usable (the CRD schema normally stops this first)


class ConditionType(StrEnum):
    TARGET_FOUND = "TargetFound"
    METRICS_AVAILABLE = "MetricsAvailable"
    SCALING_LIMITED = "ScalingLimited"


# What the operator does with the API, as RBAC rules for its namespace (k8s/operator/rbac.yaml must grant
# exactly these; tests/operator/test_manifests.py checks it). kopf lists, watches and patches the autoscalers
# and writes their status; the handlers read and patch the target Deployment, list the pods and patch their
# deletion cost, read the admin-token Secret, and post Events.
RBAC_RULES: tuple[dict[str, list[str]], ...] = (
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch", "update"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
)
