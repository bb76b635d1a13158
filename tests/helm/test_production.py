"""Production use: routing, a chart that works as a dependency, extension points, rollouts, one scale-down policy
in every mode, the HA operator, and alerts scoped to the release."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from app.operator.constants import rbac_rules
from dashboards import alerts
from tests.helm import crd_models, values_doc
from tests.helm.chart import (
    CHART_DIR,
    CI_VALUES,
    CUSTOM_KINDS,
    KUBE_VERSIONS,
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
JOB = f"{RELEASE}-internal"


def ci(name: str) -> dict[str, Any]:
    return load_values(CHART_DIR / "ci" / f"{name}-values.yaml")


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = gateway(objects)["spec"]["template"]["spec"]
    return spec


# ------------------------------------------------------------------------------------------------ dependency
def test_the_chart_works_as_a_dependency_of_an_umbrella_chart_with_global_values(tmp_path: Path) -> None:
    umbrella = tmp_path / "platform"
    (umbrella / "templates").mkdir(parents=True)
    (umbrella / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [
                    {
                        "name": "eventcast",
                        "version": "0.2.x",
                        "repository": f"file://{CHART_DIR}",
                        "condition": "eventcast.enabled",
                    }
                ],
            }
        )
    )
    (umbrella / "values.yaml").write_text(
        yaml.safe_dump(
            {
                "global": {"imageRegistry": "registry.example.com", "imagePullSecrets": [{"name": "corp"}]},
                "eventcast": {"enabled": True, **REDIS, "replicas": 2},
            }
        )
    )
    helm.dependency_build(str(umbrella))  # packages ../eventcast into charts/, as `helm dependency build`
    assert [p.name for p in (umbrella / "charts").iterdir()] == ["eventcast-0.2.0.tgz"]
    parent = helm.Chart.load(str(umbrella))
    texts = parent.render(
        {"global": {"storageClass": "fast"}}, name="platform", namespace="apps", is_install=True
    )
    objects = [
        obj
        for path, text in texts.items()
        if not path.endswith("NOTES.txt")
        for obj in yaml.safe_load_all(text)
        if obj
    ]
    deployment = gateway(objects)
    assert container(deployment)["image"] == "registry.example.com/eventcast:0.1.0"
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "corp"}]
    assert deployment["spec"]["replicas"] == 2
    report = helm.lint(str(umbrella), {}, strict=True, kube_version=f"v{KUBE_VERSIONS[-1]}")
    assert report["errors"] == []
    # A typo inside our own section is still refused through the parent, and the condition turns it off.
    with pytest.raises(helm.HelmError, match="enabeld"):
        helm.Chart.load(str(umbrella)).render(
            {"eventcast": {"ingress": {"enabeld": True}}}, name="platform", namespace="apps", is_install=True
        )
    off = helm.Chart.load(str(umbrella)).render(  # a fresh load: rendering drops disabled subcharts from it
        {"eventcast": {"enabled": False}}, name="platform", namespace="apps", is_install=True
    )
    assert not any(text.strip() for path, text in off.items() if "/charts/eventcast/" in path)


def test_helm_package_makes_an_archive_that_renders(tmp_path: Path) -> None:
    archive = Path(helm.package(str(CHART_DIR), destination=str(tmp_path)))
    assert archive.name == "eventcast-0.2.0.tgz"
    packaged = helm.Chart.load_archive(archive.read_bytes())
    texts = packaged.render(ci("operator-ha"), name=RELEASE, namespace=NAMESPACE, is_install=True)
    kinds = {
        yaml.safe_load(text)["kind"]
        for path, text in texts.items()
        if text.strip() and "NOTES" not in path and "---" not in text
    }
    assert "Deployment" in kinds
    with tarfile.open(archive) as packed:
        names = set(packed.getnames())
    for shipped in (
        "README.md",
        "icon.svg",
        "values.schema.json",
        "crds/kopfpeerings.yaml",
        "files/alerts.yaml",
    ):
        assert f"eventcast/{shipped}" in names
    assert not [name for name in names if "/ci/" in name] or "eventcast/ci/extensions-values.yaml" in names


def test_the_readme_values_table_is_current_and_covers_every_documented_value() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    assert readme == values_doc.render_readme(readme, (CHART_DIR / "values.yaml").read_text()), (
        "stale: run python -m tests.helm.values_doc"
    )
    rows = {row.path for row in values_doc.rows((CHART_DIR / "values.yaml").read_text())}
    for key in (
        "ingress.enabled",
        "httpRoute.timeouts",
        "autoscaling.scaleDown",
        "global.imageRegistry",
        "operator.replicas",
    ):
        assert key in rows and f"`{key}`" in readme


def test_the_icon_is_an_svg_the_chart_points_at() -> None:
    metadata = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert metadata["icon"].endswith("/helm/eventcast/icon.svg")
    svg = (CHART_DIR / "icon.svg").read_text()
    assert svg.startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in svg
    report = helm.lint(str(CHART_DIR), {}, strict=True)
    assert not [m for m in report["messages"] if "icon" in m.get("text", m.get("message", "")).lower()]


# ------------------------------------------------------------------------------------------------ routing
def test_ingress_routes_the_public_port_with_stream_timeouts_that_yours_override() -> None:
    ingress = only(render(ci("ingress")), "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "7200"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "7200"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "events.example.com"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": RELEASE, "port": {"name": "http"}}}
    assert ingress["spec"]["tls"][0]["secretName"] == "events-example-com-tls"
    mine = {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "60"},
        }
    }
    assert (
        only(render(mine), "Ingress")["metadata"]["annotations"][
            "nginx.ingress.kubernetes.io/proxy-read-timeout"
        ]
        == "60"
    )
    alb = only(render({"ingress": {"enabled": True, "className": "alb"}}), "Ingress")["metadata"][
        "annotations"
    ]
    assert alb == {"alb.ingress.kubernetes.io/load-balancer-attributes": "idle_timeout.timeout_seconds=3600"}
    assert (
        "annotations"
        not in only(render({"ingress": {"enabled": True, "className": "traefik"}}), "Ingress")["metadata"]
    )


def test_httproute_attaches_to_the_gateway_with_timeouts_off_for_streams() -> None:
    objects = render(ci("httproute"))
    route = only(objects, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [
        {"name": "public", "namespace": "gateways", "sectionName": "https"}
    ]
    assert route["spec"]["hostnames"] == ["events.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": RELEASE, "port": 8000}]
    assert rule["timeouts"] == {"request": "0s", "backendRequest": "0s"}
    assert only(objects, "Service", RELEASE)["spec"]["ports"][0]["appProtocol"] == "kubernetes.io/ws"
    assert "parentRefs" in render_error({"httpRoute": {"enabled": True}})
    assert "pick one" in render_error(
        {"httpRoute": {"enabled": True, "parentRefs": [{"name": "g"}]}, "ingress": {"enabled": True}}
    )


def test_both_services_declare_their_app_protocol() -> None:
    for service in of_kind(render({}), "Service"):
        assert all(port["appProtocol"] == "http" for port in service["spec"]["ports"]), service


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda path: path.name)
def test_custom_resources_pass_their_projects_schemas(path: Path) -> None:
    objects = render(load_values(path))
    assert {o["kind"] for o in objects if o["kind"] in crd_models.MODELS} <= CUSTOM_KINDS
    assert crd_models.validate(objects) == []


def test_the_custom_resource_check_catches_a_broken_object() -> None:
    scaled = only(render(ci("keda-fallback")), "ScaledObject")
    scaled["spec"]["fallback"]["behavior"] = "guess"
    route = only(render(ci("httproute")), "HTTPRoute")
    route["spec"]["rules"][0]["timeouts"]["request"] = "forever"
    errors = crd_models.validate([scaled, route])
    assert len(errors) == 2 and "fallback/behavior" in errors[0] and "timeouts/request" in errors[1]


# ------------------------------------------------------------------------------------------------ extension points
def test_extension_points_reach_the_pods() -> None:
    objects = render(ci("extensions"))
    deployment = gateway(objects)
    spec = pod_spec(objects)
    box = container(deployment)
    assert box["image"] == "registry.example.com/eventcast:0.1.0"  # global.imageRegistry
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "global-regcred"}]
    assert box["envFrom"] == [{"secretRef": {"name": "eventcast-extra-env"}}]
    assert env(deployment)["JWT_FROM_VAULT"]["valueFrom"]["secretKeyRef"] == {
        "name": "vault-synced",
        "key": "jwt",
    }
    assert [c["name"] for c in spec["initContainers"]] == ["wait-for-redis"]
    assert [c["name"] for c in spec["containers"]] == ["eventcast", "log-shipper"]
    assert box["livenessProbe"]["initialDelaySeconds"] == 5
    assert box["readinessProbe"]["successThreshold"] == 2
    assert box["startupProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": 2, "failureThreshold": 60}
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"
    assert env(deployment)["EVENTCAST_BROKER_URL"]["value"].startswith("redis+sentinel://")
    hpa = only(objects, "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods", "Resource", "Pods"]
    endpoint = only(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["honorLabels"] is True
    assert endpoint["relabelings"][0]["targetLabel"] == "node"
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    # image.registry alone, and no registry at all
    assert (
        container(gateway(render({"image": {"registry": "r.example/"}})))["image"]
        == "r.example/eventcast:0.1.0"
    )


def test_pods_spread_softly_across_nodes_and_zones_unless_told_otherwise() -> None:
    constraints = pod_spec(render({}))["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    assert {c["whenUnsatisfiable"] for c in constraints} == {"ScheduleAnyway"}
    selector = gateway(render({}))["spec"]["selector"]["matchLabels"]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in constraints)
    assert "topologySpreadConstraints" not in pod_spec(render({"defaultTopologySpread": {"enabled": False}}))
    mine = pod_spec(render(ci("config")))["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in mine] == ["topology.kubernetes.io/zone"]


def test_every_config_that_needs_a_rollout_has_a_checksum() -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        result: dict[str, str] = gateway(render(values))["spec"]["template"]["metadata"]["annotations"]
        return result

    base = annotations({})
    assert {"checksum/config", "checksum/cdc", "checksum/existing-secrets"} <= set(base)
    assert (
        annotations({"cdc": {"outbox": {"url": "postgresql://a/b"}}})["checksum/cdc"] != base["checksum/cdc"]
    )
    assert (
        annotations({"cdc": {"outbox": {"url": "postgresql://a/c"}}})["checksum/cdc"]
        != annotations({"cdc": {"outbox": {"url": "postgresql://a/b"}}})["checksum/cdc"]
    )
    # Existing Secrets are looked up at install and upgrade (empty offline): the annotation is stable here.
    existing = annotations(ci("auth-existing-secrets"))["checksum/existing-secrets"]
    assert existing == annotations(ci("auth-existing-secrets"))["checksum/existing-secrets"]
    assert "checksum/existing-secrets" not in annotations({"rolloutOnExistingSecretChange": False})


def test_console_cdc_and_sentinel_values_become_the_gateways_settings() -> None:
    objects = render(ci("cdc"))
    variables = env(gateway(objects))
    assert variables["EVENTCAST_CONSOLE"]["value"] == "true"
    assert env(gateway(render({})))["EVENTCAST_CONSOLE"]["value"] == "false"  # off unless asked
    secret = only(objects, "Secret", f"{RELEASE}-cdc")
    assert variables["EVENTCAST_OUTBOX_URL"] == {
        "name": "EVENTCAST_OUTBOX_URL",
        "valueFrom": {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "outbox-url"}},
    }
    assert "postgresql" not in json.dumps(gateway(objects))  # the DSN is never inline in the Deployment
    assert variables["EVENTCAST_OUTBOX_TABLE"]["value"] == "app_outbox"
    assert variables["EVENTCAST_NATS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "nats-credentials",
        "key": "url",
    }
    assert (variables["EVENTCAST_NATS_STREAM"]["value"], variables["EVENTCAST_NATS_SUBJECTS"]["value"]) == (
        "EVENTS",
        "orders.>=orders",
    )
    assert "nats-url" not in secret["data"]  # from the existing Secret, not copied
    assert not {"EVENTCAST_OUTBOX_URL", "EVENTCAST_NATS_URL"} & set(env(gateway(render({}))))
    sentinel = "rediss+sentinel://:pw@s-0:26379,s-1:26379/mymaster/2"
    assert env(gateway(render({"redis": {"url": sentinel}})))["EVENTCAST_BROKER_URL"]["value"] == sentinel


# ------------------------------------------------------------------------------------------------ scale-down policy
POLICY = {"stabilizationWindowSeconds": 420, "type": "Pods", "value": 2, "periodSeconds": 90}


def _modes(policy: dict[str, Any]) -> dict[str, Any]:
    common = REDIS | {"autoscaling": {"scaleDown": policy, "keda": {"serverAddress": "http://prom:9090"}}}
    out = {}
    for mode in ("hpa", "keda", "operator"):
        values = json.loads(json.dumps(common))
        values["autoscaling"]["mode"] = mode
        out[mode] = render(values)
    return out


@pytest.mark.parametrize(
    "policy", [POLICY, {**POLICY, "type": "Percent", "value": 20}], ids=["pods", "percent"]
)
def test_one_scale_down_policy_is_honoured_the_same_way_in_every_mode(policy: dict[str, Any]) -> None:
    modes = _modes(policy)
    hpa = only(modes["hpa"], "HorizontalPodAutoscaler")["spec"]["behavior"]["scaleDown"]
    keda = only(modes["keda"], "ScaledObject")["spec"]["advanced"]["horizontalPodAutoscalerConfig"][
        "behavior"
    ]
    operator = only(modes["operator"], "ConnectionAutoscaler")["spec"]["scaleDown"]
    assert keda["scaleDown"] == hpa  # KEDA's HPA gets exactly the HPA's policy, not the default 100 % / 15 s
    assert operator == policy
    assert hpa["stabilizationWindowSeconds"] == policy["stabilizationWindowSeconds"]
    expected = [{"type": policy["type"], "value": policy["value"], "periodSeconds": policy["periodSeconds"]}]
    if policy["type"] == "Percent":  # at least one pod per period, as the operator does
        expected.append({"type": "Pods", "value": 1, "periodSeconds": policy["periodSeconds"]})
    assert hpa == {
        "stabilizationWindowSeconds": policy["stabilizationWindowSeconds"],
        "selectPolicy": "Max",
        "policies": expected,
    }


def test_the_default_policy_is_one_pod_a_minute_after_five_minutes() -> None:
    spec = only(render(REDIS | {"autoscaling": {"mode": "operator"}}), "ConnectionAutoscaler")["spec"]
    assert spec["scaleDown"] == {
        "stabilizationWindowSeconds": 300,
        "type": "Pods",
        "value": 1,
        "periodSeconds": 60,
    }
    assert "100" in render_error(REDIS | {"autoscaling": {"scaleDown": {"type": "Percent", "value": 150}}})


def test_keda_holds_the_current_replicas_when_prometheus_cannot_be_read() -> None:
    scaled = only(render(ci("keda-fallback")), "ScaledObject")["spec"]
    assert scaled["fallback"] == {"failureThreshold": 5, "replicas": 3, "behavior": "currentReplicas"}
    assert scaled["triggers"][0]["metricType"] == "AverageValue"  # what KEDA's fallback requires
    assert [t["type"] for t in scaled["triggers"]] == ["prometheus", "cpu"]
    assert (
        only(render(ci("keda")), "ScaledObject")["spec"]["fallback"]["behavior"] == "currentReplicas"
    )  # default
    off = ci("keda") | {
        "autoscaling": ci("keda")["autoscaling"]
        | {"keda": {"serverAddress": "http://p:9090", "fallback": {"enabled": False}}}
    }
    assert "fallback" not in only(render(off), "ScaledObject")["spec"]


# ------------------------------------------------------------------------------------------------ the operator
def test_the_operator_runs_highly_available_with_a_liveness_probe_and_its_metrics() -> None:
    objects = render(ci("operator-ha"))
    operator = only(objects, "Deployment", f"{RELEASE}-operator")
    assert operator["spec"]["replicas"] == 3
    assert operator["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    box = container(operator)
    args = box["args"]
    assert args[args.index("--peering-lifetime") + 1] == "30"
    assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert args[args.index("--liveness") + 1] == "http://0.0.0.0:8080/healthz"
    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    assert args[args.index("--metrics-port") + 1] == str(ports["metrics"])
    peering = only(objects, "KopfPeering")
    assert (
        peering["apiVersion"] == "kopf.dev/v1"
        and args[args.index("--peering") + 1] == peering["metadata"]["name"]
    )
    pod = operator["spec"]["template"]["spec"]
    assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert operator["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "realtime"}
    service = only(objects, "Service", f"{RELEASE}-operator")
    monitors = {m["metadata"]["name"]: m for m in of_kind(objects, "ServiceMonitor")}
    selector = monitors[f"{RELEASE}-operator"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitors[f"{RELEASE}-operator"]["spec"]["endpoints"][0]["port"] == "metrics"
    # Secrets by name only: the chart's own auth Secret here.
    role = only(objects, "Role")
    assert role["rules"] == rbac_rules((f"{RELEASE}-auth",), peering["metadata"]["name"])
    assert all("resourceNames" in rule for rule in role["rules"] if rule["resources"] == ["secrets"])


def test_without_peering_one_operator_and_without_a_token_no_secret_at_all() -> None:
    objects = render(
        REDIS | {"autoscaling": {"mode": "operator"}, "operator": {"peering": {"enabled": False}}}
    )
    operator = only(objects, "Deployment", f"{RELEASE}-operator")
    assert operator["spec"]["replicas"] == 1 and operator["spec"]["strategy"] == {"type": "Recreate"}
    assert "--peering" not in container(operator)["args"]
    assert not of_kind(objects, "KopfPeering")
    assert only(objects, "Role")["rules"] == rbac_rules()
    assert not [rule for rule in only(objects, "Role")["rules"] if "secrets" in rule["resources"]]


def test_the_kopf_peering_crd_ships_with_the_chart() -> None:
    crd = yaml.safe_load((CHART_DIR / "crds" / "kopfpeerings.yaml").read_text())
    assert crd["metadata"]["name"] == "kopfpeerings.kopf.dev" and crd["spec"]["scope"] == "Namespaced"
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(crd, version, strict=True)


# ------------------------------------------------------------------------------------------------ alerts
def _rules(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rule = only(render(values), "PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def test_alerts_are_scoped_to_the_release_with_absolute_runbooks() -> None:
    rules = _rules({"metrics": {"prometheusRule": {"enabled": True}}})
    gateway_alerts = {a.name for a in alerts.ALERTS if a.group == alerts.GATEWAY_GROUP}
    assert set(rules) == gateway_alerts  # no operator alerts without the operator
    for name, rule in rules.items():
        assert f'namespace="{NAMESPACE}", job="{JOB}"' in rule["expr"], name
        assert "__" not in rule["expr"] and 'job=~".*' not in rule["expr"]
        assert rule["annotations"]["runbook_url"] == f"{alerts.RUNBOOK_BASE}#{name.lower()}"
        assert rule["annotations"]["runbook_url"].startswith("https://")


def test_alerts_can_be_switched_off_and_given_other_severities_and_labels() -> None:
    rules = _rules(ci("operator-ha"))
    assert "EventcastSlowConsumers" not in rules
    assert rules["EventcastOperatorAtMaxReplicas"]["labels"] == {"severity": "critical", "team": "realtime"}
    assert rules["EventcastDown"]["labels"] == {"severity": "critical", "team": "realtime"}
    assert (
        rules["EventcastDown"]["annotations"]["runbook_url"]
        == "https://runbooks.example.com/eventcast#eventcastdown"
    )
    operator = f'namespace="{NAMESPACE}", job="{RELEASE}-operator"'
    assert operator in rules["EventcastOperatorLeadership"]["expr"]
    assert {a.name for a in alerts.ALERTS} - set(rules) == {"EventcastSlowConsumers"}


def test_the_release_scoped_alerts_see_one_release_down_while_another_is_up(tmp_path: Path) -> None:
    """promtool runs the chart-rendered rules: this release's namespace down fires, the other release is ignored."""
    rule = only(render(ci("operator-ha")), "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    mine = f'namespace="{NAMESPACE}", job="{JOB}"'
    other = f'namespace="other", job="{JOB}"'
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'up{{{mine}, instance="10.0.0.1:9090"}}', "values": "1 0x10"},
                    {"series": f'up{{{other}, instance="10.0.1.1:9090"}}', "values": "1x10"},
                    {"series": f'eventcast_broker_up{{{other}, instance="10.0.1.1:9090"}}', "values": "0x10"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "EventcastDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "team": "realtime",
                                    "namespace": NAMESPACE,
                                    "job": JOB,
                                },
                                "exp_annotations": {
                                    "summary": "No eventcast pod of a release is up.",
                                    "description": f"Prometheus has not scraped any eventcast pod of job {JOB} in {NAMESPACE} "
                                    "successfully for 2 minutes; subscribers cannot connect.",
                                    "runbook_url": "https://runbooks.example.com/eventcast#eventcastdown",
                                },
                            }
                        ],
                    },
                    # The other release's broker is down, but these rules are this release's.
                    {"eval_time": "5m", "alertname": "EventcastBrokerDown", "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make test installs it (Debian package prometheus)"
    result = subprocess.run(
        [promtool, "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
