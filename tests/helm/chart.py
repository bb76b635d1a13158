"""Render helm/eventcast with Helm's own Go SDK (helm-python-sdk) and read the objects back strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "eventcast"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
RELEASE = "eventcast"
NAMESPACE = "realtime"
KUBE_VERSION = "1.30.0"
#: The oldest Kubernetes the chart is validated on and the newest schema kubernetes-validate ships.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Kinds from CRDs (prometheus-operator, KEDA, Gateway API, kopf, the eventcast operator): kubernetes-validate
# has no schema for them; tests/helm/crd_models.py checks the first three against their own models.
CUSTOM_KINDS = {
    "ServiceMonitor",
    "PrometheusRule",
    "ScaledObject",
    "HTTPRoute",
    "KopfPeering",
    "ConnectionAutoscaler",
}

_chart: helm.Chart | None = None


def chart() -> helm.Chart:
    global _chart
    if _chart is None:
        _chart = helm.Chart.load(str(CHART_DIR))
    return _chart


class StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
    duplicates = {key for key in keys if keys.count(key) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {sorted(map(str, duplicates))}", node.start_mark
        )
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_values(path: Path) -> dict[str, Any]:
    values = yaml.safe_load(path.read_text()) or {}
    assert isinstance(values, dict)
    return values


def render(values: dict[str, Any] | None = None, *, upgrade: bool = False) -> list[dict[str, Any]]:
    """Every object the chart renders with these values (NOTES.txt and switched-off templates left out)."""
    texts = chart().render(
        values or {}, name=RELEASE, namespace=NAMESPACE, is_install=not upgrade, is_upgrade=upgrade
    )
    objects: list[dict[str, Any]] = []
    for path, text in sorted(texts.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for obj in yaml.load_all(text, Loader=StrictLoader):  # a SafeLoader subclass
            if obj:
                objects.append(obj)
    return objects


def render_error(values: dict[str, Any]) -> str:
    """The message of the render failure these values must cause."""
    try:
        chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as exc:
        return str(exc)
    raise AssertionError(f"rendering {values} succeeded; it should have failed")


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def gateway(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway Deployment (the operator's Deployment has component=operator)."""
    deployments = [
        o
        for o in of_kind(objects, "Deployment")
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    ]
    assert len(deployments) == 1
    return deployments[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The gateway's (or the operator's) own container: the first one, whatever sidecars follow."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = containers[0]
    assert result["name"] in ("eventcast", "operator")
    return result


def env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's env entries by name (each {"value": ...} or {"valueFrom": ...})."""
    entries = container(deployment).get("env", [])
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"env set twice: {names}"
    return {entry["name"]: entry for entry in entries}


def pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
