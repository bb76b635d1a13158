"""values.schema.json: every shipped values file passes, nonsense is refused before anything renders."""

from __future__ import annotations

import json
import typing
from typing import Any

import helm_python as helm
import pytest

from app.settings import Settings
from tests.helm.chart import CHART_DIR, CI_VALUES, chart, env, load_values, of_kind, render

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda path: path.name)
def test_every_ci_values_file_passes(path: Any) -> None:
    chart().validate_schema(load_values(path))


def test_the_defaults_pass() -> None:
    chart().validate_schema({})


NONSENSE = {
    "negative replicas": {"replicas": -1},
    "zero workers": {"workers": 0},
    "too many workers": {"workers": 65},
    "workers as text": {"workers": "four"},
    "unknown autoscaling mode": {"autoscaling": {"mode": "magic"}},
    "negative drain": {"drainSeconds": -5},
    "drain as text": {"drainSeconds": "20s"},
    "drain of days": {"drainSeconds": 86400},
    "unknown autoscaling key": {"autoscaling": {"minReplica": 2}},
    "zero connections per replica": {"autoscaling": {"connectionsPerReplica": 0}},
    "port out of range": {"containerPort": 70000},
    "bad pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "redis url without scheme": {"redis": {"url": "redis-master:6379"}},
    "unknown setting": {"config": {"histroy_max_events": 10}},
    "setting of the wrong type": {"config": {"history_max_events": "many"}},
    "setting out of range": {"config": {"history_max_events": 0}},
    "bad log level": {"logLevel": "verbose"},
    "bad ws engine": {"config": {"ws_engine": "fast"}},
    "unknown top-level key of another type": {"replica": 3},
    "typo inside our section": {"ingress": {"enabeld": True}},
    "typo in global's neighbour": {"image": {"registy": "r.example"}},
    "unknown scale-down policy": {"autoscaling": {"scaleDown": {"type": "Half"}}},
    "zero pods per period": {"autoscaling": {"scaleDown": {"value": 0}}},
    "old scale-down key": {"autoscaling": {"scaleDownStabilizationSeconds": 300}},
    "bad keda fallback": {"autoscaling": {"keda": {"fallback": {"behavior": "guess"}}}},
    "imbalance at or below the mean": {"autoscaling": {"rebalance": {"imbalancePercent": 100}}},
    "unknown alert": {"metrics": {"prometheusRule": {"rules": {"EventcastDwon": {"enabled": False}}}}},
    "bad alert severity": {"metrics": {"prometheusRule": {"rules": {"EventcastDown": {"severity": "page"}}}}},
    "relative runbook base": {"metrics": {"prometheusRule": {"runbookBaseUrl": "docs/dashboards.md"}}},
    "route timeout as a number": {"httpRoute": {"timeouts": {"request": 0}}},
    "ingress path without a slash": {"ingress": {"hosts": [{"host": "a", "paths": [{"path": "x"}]}]}},
    "sentinel url without a master": {"redis": {"url": "redis+sentinel://s-0:26379"}},
    "console as text": {"console": {"enabled": "yes"}},
}


ACCEPTED = {
    "a parent chart's global values": {"global": {"imageRegistry": "r.example", "storageClass": "fast"}},
    "a parent chart's condition key": {"enabled": True},
    "another parent boolean": {"install": False},
    "redis through sentinel": {"redis": {"url": "redis+sentinel://:pw@s-0:26379,s-1:26379/mymaster/0"}},
    "rediss through sentinel": {"redis": {"url": "rediss+sentinel://s-0:26379/mymaster"}},
}


@pytest.mark.parametrize("values", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_what_a_parent_chart_and_sentinel_users_send_is_accepted(values: dict[str, Any]) -> None:
    chart().validate_schema(values)


@pytest.mark.parametrize("values", NONSENSE.values(), ids=NONSENSE.keys())
def test_nonsense_is_refused(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema(values)
    with pytest.raises(helm.HelmError):  # and rendering refuses it too, before any template runs
        chart().render(values, name="eventcast", namespace="realtime", is_install=True)


_JSON_TYPES: dict[Any, str] = {
    int: "integer",
    float: "number",
    bool: "boolean",
    str: "string",
    str | None: "string",
}


def test_config_names_only_real_settings_with_their_types_and_bounds() -> None:
    """`config` takes any setting the chart does not set itself, by its field name in app/settings.py."""
    properties = SCHEMA["properties"]["config"]["properties"]
    assert SCHEMA["properties"]["config"]["additionalProperties"] is False
    managed = {
        name.removeprefix("EVENTCAST_").lower()
        for path in [None, *CI_VALUES]
        for deployment in of_kind(render(load_values(path) if path else {}), "Deployment")
        for name in env(deployment)
        if name.startswith("EVENTCAST_")
    } - set(properties)
    assert {"workers", "broker_url", "drain_seconds", "internal_port", "admin_token"} <= managed
    for name, prop in properties.items():
        field = Settings.model_fields.get(name)
        assert field is not None, f"config.{name} is not a setting"
        assert field.validation_alias is None, f"config.{name} is read under another name"
        if typing.get_origin(field.annotation) is typing.Literal:
            assert prop["enum"] == list(typing.get_args(field.annotation))
        else:
            assert prop["type"] == _JSON_TYPES[field.annotation], name
        bounds = {key: getattr(m, attr) for m in field.metadata for attr, key in _BOUNDS if hasattr(m, attr)}
        assert {key: prop[key] for key in bounds} == bounds, name


_BOUNDS = [("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum")]


def test_every_value_is_documented_in_values_yaml() -> None:
    """STYLE: every key documented. A key needs a comment right above it or above one of its parents."""
    undocumented: list[str] = []
    parents: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    previous = ""
    for line in (CHART_DIR / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "-")) and ":" in stripped:
            indent = len(line) - len(line.lstrip())
            while parents and parents[-1][0] >= indent:
                parents.pop()
            documented = previous.startswith("#") or any(done for _, done in parents)
            if stripped.endswith(":"):
                parents.append((indent, documented))
            elif not documented:
                undocumented.append(stripped)
        if stripped:
            previous = stripped
    assert undocumented == []


def test_every_shipped_alert_can_be_configured_and_no_other() -> None:
    from dashboards.alerts import NAMES

    rules = SCHEMA["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]["rules"]
    assert sorted(rules["properties"]) == sorted(NAMES) and rules["additionalProperties"] is False
