"""Every values file renders, lints strictly and gives objects valid for Kubernetes 1.30."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from tests.helm.chart import (
    CHART_DIR,
    CI_VALUES,
    CUSTOM_KINDS,
    KUBE_VERSIONS,
    ROOT,
    container,
    env,
    load_values,
    of_kind,
    only,
    pod_specs,
    render,
)

CASES = [pytest.param({}, id="default")] + [
    pytest.param(load_values(path), id=path.name.removesuffix("-values.yaml")) for path in CI_VALUES
]


def test_every_feature_has_a_ci_values_file() -> None:
    names = {path.name for path in CI_VALUES}
    for feature in (
        "redis",
        "auth",
        "drain",
        "hpa",
        "keda",
        "keda-fallback",
        "operator",
        "operator-ha",
        "monitoring",
        "networkpolicy",
        "ingress",
        "httproute",
        "extensions",
        "cdc",
    ):
        assert f"{feature}-values.yaml" in names


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", CASES)
def test_lints_clean_in_strict_mode(values: dict[str, Any], kube: str) -> None:
    report = helm.lint(str(CHART_DIR), values, strict=True, kube_version=f"v{kube}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []  # no warnings either


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", CASES)
def test_every_object_is_valid_for_kubernetes(values: dict[str, Any], kube: str) -> None:
    objects = render(values)
    assert objects
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(obj, kube, strict=True)
            continue
        kubernetes_validate.validate(obj, kube, strict=True)  # raises ValidationError on a bad field
        assert obj["metadata"]["namespace"] == "realtime"
        assert len(obj["metadata"]["name"]) <= 63


@pytest.mark.parametrize("values", CASES)
def test_every_pod_runs_restricted(values: dict[str, Any]) -> None:
    """The restricted Pod Security Standard, a read-only root, and a writable /tmp from an emptyDir."""
    for spec in pod_specs(render(values)):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        emptydirs = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        for box in spec["containers"]:
            security = box["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["runAsNonRoot"] is True
            mounts = {mount["mountPath"]: mount["name"] for mount in box["volumeMounts"]}
            assert mounts["/tmp"] in emptydirs


#: Settings whose feature lands in parallel (the console; CDC from an outbox and NATS). The chart sets them
#: already: the gateway ignores unknown EVENTCAST_* variables until then, and once the fields exist in
#: app/settings.py this test holds them to the same checks as every other setting.
LANDING_ELSEWHERE = {"console", "outbox_url", "outbox_table", "nats_url", "nats_stream", "nats_subjects"}


def _accepts_sentinel_urls() -> bool:
    try:
        Settings.model_validate({"broker_url": "redis+sentinel://s-0:26379/mymaster/0"})
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("values", CASES)
def test_every_eventcast_variable_is_a_setting_the_gateway_accepts(values: dict[str, Any]) -> None:
    """Each EVENTCAST_* the chart sets names a field of app.settings.Settings, and the values validate."""
    fields = Settings.model_fields
    for deployment in of_kind(render(values), "Deployment"):
        settings: dict[str, Any] = {}
        for name, entry in env(deployment).items():
            if not name.startswith("EVENTCAST_"):
                continue
            field = name.removeprefix("EVENTCAST_").lower()
            if field not in fields and field in LANDING_ELSEWHERE:
                continue
            assert field in fields, f"{name} is not a setting of app/settings.py"
            assert fields[field].validation_alias is None, f"{name} is read under another name"
            if "value" in entry:
                settings[field] = entry["value"]
            elif field == "broker_url":  # from a Secret: any Redis URL stands in for it
                settings[field] = "redis://redis.example:6379/0"
        if "+sentinel://" in settings.get("broker_url", "") and not _accepts_sentinel_urls():
            settings["broker_url"] = (
                "redis://redis.example:6379/0"  # Sentinel lands in parallel (redis-ha.md)
            )
        if settings:
            Settings.model_validate(settings)  # the values the pod gets pass the gateway's own validation


@pytest.mark.parametrize("values", CASES)
def test_file_settings_point_into_mounted_secrets(values: dict[str, Any]) -> None:
    for deployment in of_kind(render(values), "Deployment"):
        mounts = [mount["mountPath"] for mount in container(deployment).get("volumeMounts", [])]
        for name, entry in env(deployment).items():
            if name.startswith("EVENTCAST_") and name.endswith("_FILE"):
                assert any(entry["value"].startswith(path + "/") for path in mounts), name


def test_the_chart_dashboard_is_dashboards_eventcast_json_byte_for_byte() -> None:
    chart_copy = CHART_DIR / "files" / "eventcast.json"
    assert chart_copy.read_bytes() == (ROOT / "dashboards" / "eventcast.json").read_bytes()


def test_prometheus_rule_carries_the_alerts_and_promtool_accepts_them(tmp_path: Path) -> None:
    objects = render({"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}})
    rule = only(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kps"
    source = yaml.safe_load((ROOT / "dashboards" / "alerts.yaml").read_text())
    # The gateway's alerts, all of them; the operator's only in operator mode.
    assert [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]] == [
        r["alert"] for r in source["groups"][0]["rules"]
    ]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make test installs it (Debian package prometheus)"
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_configmap_has_the_sidecar_label_and_the_dashboard() -> None:
    objects = render({"metrics": {"grafanaDashboard": {"enabled": True}}})
    config_map = only(objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["eventcast.json"])
    assert dashboard == json.loads((ROOT / "dashboards" / "eventcast.json").read_text())
    assert dashboard["uid"]


def test_monitoring_objects_are_off_by_default() -> None:
    kinds = {obj["kind"] for obj in render({})}
    assert kinds == {"Deployment", "Service", "ServiceAccount"}


def test_connection_autoscaler_matches_the_operator_crd() -> None:
    """The rendered custom resource validates against the CRD the operator ships in crds/."""
    crd = yaml.safe_load((CHART_DIR / "crds" / "connectionautoscalers.yaml").read_text())
    assert crd["spec"]["group"] == "eventcast.dev"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = version["schema"]["openAPIV3Schema"]
    for path in CI_VALUES:
        values = load_values(path)
        if values.get("autoscaling", {}).get("mode") != "operator":
            continue
        resource = only(render(values), "ConnectionAutoscaler")
        assert resource["apiVersion"] == "eventcast.dev/v1alpha1"
        jsonschema.validate(resource, schema)
        _assert_known_fields(resource["spec"], schema["properties"]["spec"], "spec")


def _assert_known_fields(value: Any, schema: dict[str, Any], where: str) -> None:
    """The API server prunes fields a structural schema does not name: none of ours may be pruned."""
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            assert key in schema["properties"], f"{where}.{key} is not in the CRD"
            _assert_known_fields(item, schema["properties"][key], f"{where}.{key}")
