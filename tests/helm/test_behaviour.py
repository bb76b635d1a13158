"""What each value does to the rendered objects."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from app.operator.constants import rbac_rules
from tests.helm.chart import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    container,
    env,
    gateway,
    load_values,
    of_kind,
    only,
    render,
    render_error,
)

REDIS = {"redis": {"url": "redis://redis-master:6379/0"}}


def ci(name: str) -> dict[str, Any]:
    return load_values(CHART_DIR / "ci" / f"{name}-values.yaml")


def value(entry: dict[str, Any]) -> str:
    result: str = entry["value"]
    return result


def test_default_install_is_one_gateway_with_one_worker_on_the_memory_broker() -> None:
    objects = render({})
    deployment = gateway(objects)
    assert deployment["metadata"]["name"] == RELEASE
    assert deployment["spec"]["replicas"] == 1
    variables = env(deployment)
    assert value(variables["EVENTCAST_WORKERS"]) == "1"
    assert "EVENTCAST_BROKER_URL" not in variables  # the gateway's default: memory://
    assert value(variables["EVENTCAST_HOST"]) == "0.0.0.0"
    assert container(deployment)["image"] == "eventcast:0.1.0"  # the chart's appVersion
    assert container(deployment)["args"] == ["serve"]
    service = only(objects, "Service", RELEASE)
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    "values",
    [
        {"workers": 2},
        {"replicas": 3},
        {"autoscaling": {"mode": "hpa"}},
        {"autoscaling": {"mode": "operator"}},
    ],
    ids=["workers", "replicas", "hpa", "operator"],
)
def test_scaling_out_without_redis_fails_with_a_clear_message(values: dict[str, Any]) -> None:
    message = render_error(values)
    assert "need Redis" in message
    assert "Set redis.url (or redis.existingSecret)" in message


def test_workers_and_replicas_with_redis() -> None:
    deployment = gateway(render(ci("redis")))
    assert deployment["spec"]["replicas"] == 3
    variables = env(deployment)
    assert value(variables["EVENTCAST_WORKERS"]) == "4"
    assert value(variables["EVENTCAST_BROKER_URL"]) == "redis://redis-master:6379/0"
    # Several workers write metric files: the directory must be a writable emptyDir.
    metrics_dir = value(variables["EVENTCAST_METRICS_DIR"])
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[metrics_dir]]


def test_redis_url_from_an_existing_secret() -> None:
    variables = env(gateway(render(ci("redis-secret"))))
    assert variables["EVENTCAST_BROKER_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "eventcast-redis", "key": "url"}
    }
    assert "url or redis.existingSecret, not both" in render_error(
        {"redis": {"url": "redis://a:6379/0", "existingSecret": "s"}}
    )


@pytest.mark.parametrize(("drain", "expected_drain"), [(40, "40"), (12.5, "12.5"), (0, "0")])
def test_grace_period_covers_the_prestop_pause_and_the_drain(drain: float, expected_drain: str) -> None:
    deployment = gateway(render({"drainSeconds": drain}))
    assert value(env(deployment)["EVENTCAST_DRAIN_SECONDS"]) == expected_drain
    pod = deployment["spec"]["template"]["spec"]
    pause = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    grace = pod["terminationGracePeriodSeconds"]
    assert isinstance(grace, int)
    assert grace > int(pause[1]) + drain  # the pause, the whole drain, and then some to exit


def test_drain_ci_values() -> None:
    deployment = gateway(render(ci("drain")))
    assert value(env(deployment)["EVENTCAST_DRAIN_SECONDS"]) == "40"
    assert container(deployment)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 50


def test_probes_use_healthz_and_readyz() -> None:
    box = container(gateway(render({})))
    assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert box["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert box["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    off = container(gateway(render({"probes": {"startup": {"enabled": False}}})))
    assert "startupProbe" not in off


def test_internal_port_serves_metrics_and_the_service_monitor_scrapes_it() -> None:
    objects = render(ci("monitoring"))
    deployment = gateway(objects)
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert value(env(deployment)["EVENTCAST_INTERNAL_PORT"]) == str(ports["internal"])
    public = only(objects, "Service", RELEASE)
    assert [p["name"] for p in public["spec"]["ports"]] == ["http"]  # /metrics and /admin are not public
    monitor = only(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "internal" and endpoint["path"] == "/metrics"
    selected = [
        service
        for service in of_kind(objects, "Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ]
    assert [service["metadata"]["name"] for service in selected] == [f"{RELEASE}-internal"]
    assert [p["name"] for p in selected[0]["spec"]["ports"]] == ["internal"]


def test_without_internal_port_metrics_stay_on_http() -> None:
    objects = render({"internalPort": {"enabled": False}, "metrics": {"serviceMonitor": {"enabled": True}}})
    assert "EVENTCAST_INTERNAL_PORT" not in env(gateway(objects))
    assert only(objects, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "http"
    assert len(of_kind(objects, "Service")) == 1


def test_hpa_mode_scales_on_connections_per_pod_and_cpu_with_behavior() -> None:
    objects = render(ci("hpa"))
    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 20)
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "eventcast_connections"
    assert metrics["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "8000"}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert hpa["spec"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    }
    assert hpa["spec"]["behavior"]["scaleUp"]["policies"]
    assert "replicas" not in gateway(objects)["spec"]  # the HPA owns it
    no_cpu = ci("hpa") | {
        "autoscaling": ci("hpa")["autoscaling"] | {"hpa": {"targetCPUUtilizationPercentage": None}}
    }
    assert [m["type"] for m in only(render(no_cpu), "HorizontalPodAutoscaler")["spec"]["metrics"]] == ["Pods"]


@pytest.mark.parametrize("mode", ["hpa", "keda", "operator"])
def test_upgrades_never_reset_the_replicas_an_autoscaler_chose(mode: str) -> None:
    values = ci(mode)
    for upgrade in (False, True):
        assert "replicas" not in gateway(render(values, upgrade=upgrade))["spec"]


def test_keda_mode_renders_a_scaled_object_with_a_prometheus_trigger() -> None:
    objects = render(ci("keda"))
    scaled = only(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == RELEASE
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 30)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert trigger["metadata"]["threshold"] == "5000"
    query = trigger["metadata"]["query"]
    assert query.startswith("sum(eventcast_connections{") and f'namespace="{NAMESPACE}"' in query
    assert f'service="{RELEASE}-internal"' in query  # the ServiceMonitor's target gives that label
    assert not of_kind(objects, "HorizontalPodAutoscaler")  # KEDA makes its own
    assert "serverAddress" in render_error(REDIS | {"autoscaling": {"mode": "keda"}})


def test_operator_mode_renders_the_autoscaler_the_operator_and_its_rbac() -> None:
    objects = render(ci("operator"))
    deployment = gateway(objects)
    resource = only(objects, "ConnectionAutoscaler")
    assert resource["spec"] == {
        "scaleTargetRef": {"name": deployment["metadata"]["name"]},
        "connectionsPerReplica": 4000,
        "minReplicas": 2,
        "maxReplicas": 12,
        "tolerancePercent": 10,
        "scaleDown": {
            "stabilizationWindowSeconds": 120,
            "type": "Percent",
            "value": 20,
            "periodSeconds": 120,
        },
        "rebalance": {
            "enabled": True,
            "imbalancePercent": 125,
            "windowSeconds": 60,
            "churnBudget": 2000,
            "churnPeriodSeconds": 60,
        },
        "metricsPort": int(value(env(deployment)["EVENTCAST_INTERNAL_PORT"])),
        "adminTokenSecretRef": {"name": "eventcast-admin", "key": "token"},
    }
    operator = only(objects, "Deployment", f"{RELEASE}-operator")
    box = container(operator)
    peering = only(objects, "KopfPeering")["metadata"]["name"]
    assert box["args"][:3] == ["operator", "--namespace", NAMESPACE]
    assert box["args"][box["args"].index("--peering") + 1] == peering
    assert box["args"][box["args"].index("--identity") + 1] == "$(POD_NAME)"
    assert box["image"] == container(deployment)["image"]
    assert operator["spec"]["replicas"] == 2  # one acts, one stands by (kopf peering)
    account = operator["spec"]["template"]["spec"]["serviceAccountName"]
    assert only(objects, "ServiceAccount", account)
    role = only(objects, "Role")
    # What the operator needs, from the operator itself: the admin Secret by name only, its peering object.
    assert role["rules"] == rbac_rules(("eventcast-admin",), peering)
    assert not of_kind(objects, "ClusterRole")
    binding = only(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    # The gateway pods' NetworkPolicy lets the operator reach /metrics and /admin/shed.
    policy = only(objects, "NetworkPolicy")
    operator_labels = operator["spec"]["template"]["metadata"]["labels"]
    internal_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "internal")
    assert any(
        peer["podSelector"]["matchLabels"].items() <= operator_labels.items()
        for peer in internal_rule["from"]
    )
    # The operator's pods are not the gateway's: its selector must not pick them up.
    assert not deployment["spec"]["selector"]["matchLabels"].items() <= operator_labels.items()


def test_operator_mode_with_an_operator_elsewhere() -> None:
    objects = render(ci("operator-external"))
    assert [o["metadata"]["name"] for o in of_kind(objects, "Deployment")] == [RELEASE]
    assert not of_kind(objects, "Role")
    spec = only(objects, "ConnectionAutoscaler")["spec"]
    assert spec["metricsPort"] == 8000  # no internal port: /metrics is on the public one
    assert "adminTokenSecretRef" not in spec
    assert spec["scaleDown"] == {
        "stabilizationWindowSeconds": 300,
        "type": "Pods",
        "value": 1,
        "periodSeconds": 60,
    }


def test_inline_auth_secrets_go_into_the_charts_secret() -> None:
    objects = render(ci("auth"))
    secret = only(objects, "Secret")
    data = {key: base64.b64decode(text).decode() for key, text in secret["data"].items()}
    assert data["admin-token"] == "admin-token-for-ci"
    assert data["jwt-secret"] == "hs256-secret-for-ci"
    assert data["api-keys"] == "key-one\nkey-two\n"
    assert "BEGIN PUBLIC KEY" in data["jwt-public-key.pem"]
    deployment = gateway(objects)
    variables = env(deployment)
    name = secret["metadata"]["name"]
    assert variables["EVENTCAST_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": name,
        "key": "admin-token",
    }
    assert variables["EVENTCAST_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": name,
        "key": "jwt-secret",
    }
    assert value(variables["EVENTCAST_JWT_AUDIENCE"]) == "eventcast"
    assert value(variables["EVENTCAST_ALLOWED_ORIGINS"]) == "https://app.example.com,https://*.example.com"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"] == {
        "secretName": name,
        "items": [{"key": "api-keys", "path": "keys"}],
    }
    assert "EVENTCAST_API_KEYS" not in variables  # keys live in a file the gateway re-reads, never in env


def test_changing_an_inline_secret_rolls_the_pods() -> None:
    def checksum(token: str) -> str:
        pod = gateway(render({"auth": {"adminToken": {"value": token}}}))["spec"]["template"]
        result: str = pod["metadata"]["annotations"]["checksum/config"]
        return result

    assert checksum("one") != checksum("two")
    assert checksum("one") == checksum("one")


def test_existing_auth_secrets_are_referenced_not_copied() -> None:
    objects = render(ci("auth-existing-secrets"))
    assert not of_kind(objects, "Secret")
    deployment = gateway(objects)
    variables = env(deployment)
    assert variables["EVENTCAST_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "eventcast-admin",
        "key": "admin-token",
    }
    assert variables["EVENTCAST_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "eventcast-jwt",
        "key": "secret",
    }
    volumes = {
        v["name"]: v["secret"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v
    }
    assert volumes["jwt-public-key"] == {
        "secretName": "eventcast-jwt",
        "items": [{"key": "public.pem", "path": "key.pem"}],
    }
    assert volumes["api-keys"]["secretName"] == "eventcast-api-keys"
    assert volumes["jwks"]["items"] == [{"key": "jwks.json", "path": "jwks.json"}]


def test_network_policy_limits_the_internal_port() -> None:
    policy = only(render(ci("networkpolicy")), "NetworkPolicy")
    public, internal = policy["spec"]["ingress"]
    assert "from" not in public  # the public API is open to all
    assert internal["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    alone = only(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")["spec"]["ingress"][1]
    assert alone["from"], "an empty from would open the internal port to everyone"


def test_pod_disruption_budget() -> None:
    budget = only(render(ci("hpa")), "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert only(render(ci("config")), "PodDisruptionBudget")["spec"] == {
        "minAvailable": "50%",
        "selector": gateway(render(ci("config")))["spec"]["selector"],
    }


def test_other_settings_extra_env_and_long_names() -> None:
    objects = render(ci("config"))
    deployment = gateway(objects)
    variables = env(deployment)
    assert value(variables["EVENTCAST_HISTORY_MAX_EVENTS"]) == "50000"
    assert value(variables["EVENTCAST_IDLE_TIMEOUT_SECONDS"]) == "45.5"
    assert value(variables["EVENTCAST_WS_ENGINE"]) == "asgi"
    assert value(variables["EVENTCAST_OTEL_ENABLED"]) == "true"
    assert value(variables["OTEL_EXPORTER_OTLP_ENDPOINT"]).startswith("http://otel-collector")
    assert container(deployment)["image"].endswith("@sha256:" + "0123456789abcdef" * 4)
    names = [o["metadata"]["name"] for o in objects]
    assert all(len(name) <= 63 for name in names)
    services = sorted(service["metadata"]["name"] for service in of_kind(objects, "Service"))
    assert (
        services[0].endswith("-dns-internal") and services[0] != services[1]
    )  # the suffix survives truncation


def test_image_tag_and_pull_policy() -> None:
    box = container(
        gateway(render({"image": {"repository": "r.example/ec", "tag": "1.2.3", "pullPolicy": "Always"}}))
    )
    assert (box["image"], box["imagePullPolicy"]) == ("r.example/ec:1.2.3", "Always")
