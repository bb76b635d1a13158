"""The CRD files and the kustomize manifests of k8s/: rendered with the real kubectl, checked with the real schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.operator import constants
from app.operator.crd import build_crd, build_peering_crd, render_yaml
from app.operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = [ROOT / "k8s/operator/crd.yaml", ROOT / "helm/eventcast/crds/connectionautoscalers.yaml"]
PEERING_CRD_FILES = [
    ROOT / "k8s/operator/kopfpeering-crd.yaml",
    ROOT / "helm/eventcast/crds/kopfpeerings.yaml",
]
KUBE_VERSION = "1.30.0"


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_crd_files_are_the_builders_output(path: Path) -> None:
    assert path.read_text() == render_yaml(), (
        f"regenerate: python -m app.operator.crd > {path.relative_to(ROOT)}"
    )


@pytest.mark.parametrize("path", PEERING_CRD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_peering_crd_files_are_the_builders_output(path: Path) -> None:
    assert path.read_text() == render_yaml(peering=True), (
        f"regenerate: python -m app.operator.crd --peering > {path.relative_to(ROOT)}"
    )
    crd = yaml.safe_load(path.read_text())
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    # kopf looks its peering resource up by exactly these names (kopf._cogs.structs.references).
    assert (crd["spec"]["group"], crd["spec"]["versions"][0]["name"], crd["spec"]["names"]["plural"]) == (
        "kopf.dev",
        "v1",
        "kopfpeerings",
    )


def test_the_crd_is_valid_and_names_the_agreed_fields() -> None:
    crd = build_crd()
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    version = crd["spec"]["versions"][0]
    assert (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"]) == (
        "eventcast.dev",
        "v1alpha1",
        "ConnectionAutoscaler",
    )
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec["required"]) == {"scaleTargetRef", "connectionsPerReplica", "maxReplicas"}
    assert {
        "scaleTargetRef",
        "connectionsPerReplica",
        "minReplicas",
        "maxReplicas",
        "tolerancePercent",
        "scaleDown",
        "rebalance",
        "metricsPort",
        "adminTokenSecretRef",
    } <= set(spec["properties"])
    assert spec["properties"]["minReplicas"]["default"] == 1
    assert set(spec["properties"]["scaleDown"]["properties"]) == {
        "stabilizationWindowSeconds",
        "type",
        "value",
        "periodSeconds",
    }
    assert spec["properties"]["metricsPort"]["default"] == 8000
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Connections"] == ".status.observedConnections"
    phases = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]["enum"]
    assert phases == [phase.value for phase in constants.Phase]


def schema_check(crd: dict[str, Any], obj: dict[str, Any]) -> None:
    """The CRD's structural schema applied to a custom object (jsonschema ignores the x-kubernetes keys)."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate({k: v for k, v in obj.items() if k != "metadata"}, schema)


@pytest.mark.parametrize(
    "bad",
    [
        {"connectionsPerReplica": 0},
        {"maxReplicas": 0},
        {"metricsPort": 70000},
        {"scaleTargetRef": {}},
        {"adminTokenSecretRef": {"name": "only-a-name"}},
        {"scaleDown": {"type": "Half"}},
        {"scaleDown": {"periodSeconds": 0}},
        {"rebalance": {"imbalancePercent": 100}},
        {"tolerancePercent": 101},
    ],
)
def test_the_crd_schema_refuses_nonsense(bad: dict[str, Any]) -> None:
    spec = {"scaleTargetRef": {"name": "gw"}, "connectionsPerReplica": 10, "maxReplicas": 3, **bad}
    with pytest.raises(jsonschema.ValidationError):
        schema_check(build_crd(), {"apiVersion": constants.API_VERSION, "kind": constants.KIND, "spec": spec})


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, (
        "kubectl (with kustomize) is needed to render k8s/: it is on the machine image"
    )
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_every_rendered_object_passes_the_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    assert kinds == sorted(
        [
            ("CustomResourceDefinition", constants.CRD_NAME),
            ("CustomResourceDefinition", "kopfpeerings.kopf.dev"),
            ("KopfPeering", "eventcast-operator"),
            ("ServiceAccount", "eventcast-operator"),
            ("Role", "eventcast-operator"),
            ("RoleBinding", "eventcast-operator"),
            ("Deployment", "eventcast-operator"),
            ("Deployment", "eventcast"),
            ("Service", "eventcast"),
            ("Deployment", "eventcast-redis"),
            ("Service", "eventcast-redis"),
            ("ConnectionAutoscaler", "eventcast"),
        ]
    )
    for doc in rendered:
        if doc["kind"] == constants.KIND:
            schema_check(build_crd(), doc)  # a custom resource: its own CRD is its schema
        elif doc["kind"] == "KopfPeering":
            schema_check(build_peering_crd(), doc)
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_the_gateway_deployment_drains_probes_and_runs_restricted(rendered: list[dict[str, Any]]) -> None:
    pod = by_kind(rendered, "Deployment", "eventcast")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EVENTCAST_BROKER_URL"] == "redis://eventcast-redis:6379/0"
    assert container["image"] == "eventcast:latest"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The grace period covers the preStop pause and the whole drain.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + float(env["EVENTCAST_DRAIN_SECONDS"])
    assert (
        pod["securityContext"]["runAsNonRoot"]
        and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env["EVENTCAST_INTERNAL_PORT"]) == ports["internal"]
    # Only the public port is behind the Service: /metrics and /admin stay on the pod network.
    service = by_kind(rendered, "Service", "eventcast")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_the_example_autoscaler_points_at_the_gateway(rendered: list[dict[str, Any]]) -> None:
    autoscaler = by_kind(rendered, constants.KIND, "eventcast")
    spec = parse_spec(autoscaler["spec"])
    gateway = by_kind(rendered, "Deployment", spec.target)
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert int(env["EVENTCAST_INTERNAL_PORT"]["value"]) == spec.metrics_port
    token = env["EVENTCAST_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert spec.admin_token_secret is not None
    assert (token["name"], token["key"]) == (spec.admin_token_secret.name, spec.admin_token_secret.key)
    # The autoscaler owns the count: an apply must not reset it (the first apply starts one pod).
    assert "replicas" not in gateway["spec"]


def test_the_operator_runs_namespaced_with_exactly_the_rules_it_needs(rendered: list[dict[str, Any]]) -> None:
    autoscaler = parse_spec(by_kind(rendered, constants.KIND, "eventcast")["spec"])
    assert autoscaler.admin_token_secret is not None
    role = by_kind(rendered, "Role", "eventcast-operator")
    assert role["rules"] == constants.rbac_rules((autoscaler.admin_token_secret.name,), "eventcast-operator")
    binding = by_kind(rendered, "RoleBinding", "eventcast-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "eventcast-operator"}]
    pod = by_kind(rendered, "Deployment", "eventcast-operator")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "eventcast-operator"
    args = pod["containers"][0]["args"]
    assert args[:3] == ["operator", "--namespace", "$(POD_NAMESPACE)"]
    assert (
        args[args.index("--peering") + 1]
        == by_kind(rendered, "KopfPeering", "eventcast-operator")["metadata"]["name"]
    )
    assert args[args.index("--identity") + 1] == "$(POD_NAME)"
    assert (
        by_kind(rendered, "Deployment", "eventcast-operator")["spec"]["replicas"] == 2
    )  # one acts (peering)
    assert pod["containers"][0]["livenessProbe"]["httpGet"]["port"] == "health"


def test_the_quick_start_redis_says_it_is_not_for_production(rendered: list[dict[str, Any]]) -> None:
    redis = by_kind(rendered, "Deployment", "eventcast-redis")
    assert "not-for-production" in " ".join(redis["metadata"]["annotations"])
    assert "NOT FOR PRODUCTION" in (ROOT / "k8s/redis/kustomization.yaml").read_text()
