"""The ConnectionAutoscaler spec as a typed value, parsed (and checked) from the custom resource's dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.operator import constants


class InvalidSpec(ValueError):
    """The spec cannot be acted on; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class AutoscalerSpec:
    target: str  # the Deployment's name, in the autoscaler's namespace
    connections_per_replica: int
    min_replicas: int
    max_replicas: int
    scale_down_stabilization_seconds: int
    metrics_port: int
    shed_spread_seconds: int  # /admin/shed closes its share over this many seconds
    admin_token_secret: SecretKeyRef | None


def _int(spec: Mapping[str, Any], name: str, default: int | None, minimum: int, maximum: int) -> int:
    value = spec.get(name, default)
    if value is None:
        raise InvalidSpec(f"spec.{name} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidSpec(f"spec.{name} must be an integer from {minimum} to {maximum}, not {value!r}")
    return value


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"spec.{field} must be a non-empty string")
    return value


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
    return AutoscalerSpec(
        target=_name(target.get("name"), "scaleTargetRef.name"),
        connections_per_replica=_int(spec, "connectionsPerReplica", None, 1, 10_000_000),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_down_stabilization_seconds=_int(
            spec,
            "scaleDownStabilizationSeconds",
            constants.DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS,
            0,
            86_400,
        ),
        metrics_port=_int(spec, "metricsPort", constants.DEFAULT_METRICS_PORT, 1, 65_535),
        shed_spread_seconds=_int(spec, "shedSpreadSeconds", constants.DEFAULT_SHED_SPREAD_SECONDS, 0, 3600),
        admin_token_secret=secret,
    )
