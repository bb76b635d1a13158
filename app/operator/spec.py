"""The ConnectionAutoscaler spec as a typed value, parsed (and checked) from the custom resource's dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.operator import constants
from app.operator.scaling import Bounds, PolicyType, ScaleDownPolicy


class InvalidSpec(ValueError):
    """The spec cannot be acted on; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class RebalancePolicy:
    """Continuous rebalancing: shed toward the mean when the busiest pod stays above the threshold."""

    enabled: bool
    imbalance: float  # busiest / mean above this is an imbalance (1.25 for 125 %)
    window_seconds: int  # ... for this long, in rounds where the Deployment is settled
    churn_budget: int  # at most this many connections shed ...
    churn_period_seconds: int  # ... per this many seconds, across the Deployment


@dataclass(frozen=True, slots=True)
class AutoscalerSpec:
    target: str  # the Deployment's name, in the autoscaler's namespace
    bounds: Bounds
    scale_down: ScaleDownPolicy
    rebalance: RebalancePolicy
    metrics_port: int
    shed_spread_seconds: int  # /admin/shed closes its share over this many seconds
    admin_token_secret: SecretKeyRef | None

    @property
    def connections_per_replica(self) -> int:
        return self.bounds.connections_per_replica

    @property
    def min_replicas(self) -> int:
        return self.bounds.min_replicas

    @property
    def max_replicas(self) -> int:
        return self.bounds.max_replicas


def _int(
    spec: Mapping[str, Any], name: str, default: int | None, minimum: int, maximum: int, where: str = "spec"
) -> int:
    value = spec.get(name, default)
    if value is None:
        raise InvalidSpec(f"{where}.{name} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidSpec(f"{where}.{name} must be an integer from {minimum} to {maximum}, not {value!r}")
    return value


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"spec.{field} must be a non-empty string")
    return value


def _section(spec: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = spec.get(name) or {}
    if not isinstance(section, Mapping):
        raise InvalidSpec(f"spec.{name} must be an object")
    return section


def _scale_down(spec: Mapping[str, Any]) -> ScaleDownPolicy:
    section = _section(spec, "scaleDown")
    kind = section.get("type", PolicyType.PODS.value)
    if kind not in {t.value for t in PolicyType}:
        raise InvalidSpec(f"spec.scaleDown.type must be Pods or Percent, not {kind!r}")
    policy = PolicyType(kind)
    where = "spec.scaleDown"
    return ScaleDownPolicy(
        stabilization_seconds=_int(
            section,
            "stabilizationWindowSeconds",
            constants.DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS,
            0,
            3600,
            where,
        ),
        type=policy,
        value=_int(
            section,
            "value",
            constants.DEFAULT_SCALE_DOWN_VALUE,
            1,
            100 if policy is PolicyType.PERCENT else 10_000,
            where,
        ),
        period_seconds=_int(
            section, "periodSeconds", constants.DEFAULT_SCALE_DOWN_PERIOD_SECONDS, 1, 1800, where
        ),
    )


def _rebalance(spec: Mapping[str, Any], connections_per_replica: int) -> RebalancePolicy:
    section = _section(spec, "rebalance")
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidSpec("spec.rebalance.enabled must be true or false")
    where = "spec.rebalance"
    return RebalancePolicy(
        enabled=enabled,
        imbalance=_int(
            section, "imbalancePercent", constants.DEFAULT_REBALANCE_IMBALANCE_PERCENT, 101, 1000, where
        )
        / 100,
        window_seconds=_int(
            section, "windowSeconds", constants.DEFAULT_REBALANCE_WINDOW_SECONDS, 0, 3600, where
        ),
        churn_budget=_int(section, "churnBudget", connections_per_replica, 1, 10_000_000, where),
        churn_period_seconds=_int(
            section, "churnPeriodSeconds", constants.DEFAULT_CHURN_PERIOD_SECONDS, 1, 3600, where
        ),
    )


def parse_spec(spec: Mapping[str, Any]) -> AutoscalerSpec:
    """Check the spec as the CRD schema does (an operator must not trust that the schema was applied)."""
    target = spec.get("scaleTargetRef")
    if not isinstance(target, Mapping):
        raise InvalidSpec("spec.scaleTargetRef.name is required")
    min_replicas = _int(spec, "minReplicas", constants.DEFAULT_MIN_REPLICAS, 1, 10_000)
    max_replicas = _int(spec, "maxReplicas", None, 1, 10_000)
    if max_replicas < min_replicas:
        raise InvalidSpec(f"spec.maxReplicas ({max_replicas}) is below spec.minReplicas ({min_replicas})")
    secret_ref = spec.get("adminTokenSecretRef")
    secret: SecretKeyRef | None = None
    if secret_ref is not None:
        if not isinstance(secret_ref, Mapping):
            raise InvalidSpec("spec.adminTokenSecretRef must be {name, key}")
        secret = SecretKeyRef(
            _name(secret_ref.get("name"), "adminTokenSecretRef.name"),
            _name(secret_ref.get("key"), "adminTokenSecretRef.key"),
        )
    per_replica = _int(spec, "connectionsPerReplica", None, 1, 10_000_000)
    tolerance = _int(spec, "tolerancePercent", constants.DEFAULT_TOLERANCE_PERCENT, 0, 100)
    return AutoscalerSpec(
        target=_name(target.get("name"), "scaleTargetRef.name"),
        bounds=Bounds(per_replica, min_replicas, max_replicas, tolerance / 100),
        scale_down=_scale_down(spec),
        rebalance=_rebalance(spec, per_replica),
        metrics_port=_int(spec, "metricsPort", constants.DEFAULT_METRICS_PORT, 1, 65_535),
        shed_spread_seconds=_int(spec, "shedSpreadSeconds", constants.DEFAULT_SHED_SPREAD_SECONDS, 0, 3600),
        admin_token_secret=secret,
    )
