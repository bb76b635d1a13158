"""dashboards/alerts.yaml: valid for promtool, unit-tested by promtool, every alert documented and tested."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from dashboards import alerts as build_alerts
from tests.servers import ROOT

DASHBOARDS = ROOT / "dashboards"
RULES = DASHBOARDS / "alerts.yaml"
RULE_TESTS = DASHBOARDS / "tests" / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "dashboards.md"


def promtool(*args: str | Path) -> str:
    binary = shutil.which("promtool")
    assert binary is not None, (
        "promtool is missing: run `make test` (it installs the Debian prometheus package)"
    )
    result = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    }


def test_the_rule_files_are_the_generators_output() -> None:
    assert RULES.read_text() == build_alerts.render(), "stale: run python -m dashboards.alerts"
    assert build_alerts.CHART_OUTPUT.read_text() == build_alerts.render_chart(), (
        "stale: python -m dashboards.alerts"
    )
    # The chart's copy differs only by the placeholders its PrometheusRule fills in.
    chart = build_alerts.CHART_OUTPUT.read_text()
    for placeholder, value in (
        ("__SELECTOR__", build_alerts.SELECTOR),
        ("__OPERATOR_SELECTOR__", build_alerts.OPERATOR_SELECTOR),
        ("__RUNBOOK_BASE__", build_alerts.RUNBOOK_BASE),
    ):
        chart = chart.replace(placeholder, value)
    assert chart == RULES.read_text()


def test_every_selector_is_scoped_and_the_old_cluster_wide_match_is_gone() -> None:
    for rule in alerts():
        assert ".*eventcast.*" not in rule["expr"], rule["alert"]
        assert build_alerts.SELECTOR in rule["expr"] or build_alerts.OPERATOR_SELECTOR in rule["expr"], rule[
            "alert"
        ]


def test_the_generator_prints_rules_for_any_selector() -> None:
    text = build_alerts.render(
        'namespace="prod", job="gw"', 'namespace="prod", job="gw-op"', "https://r.example"
    )
    rules = [r for g in yaml.safe_load(text)["groups"] for r in g["rules"]]
    assert all('namespace="prod", job="gw' in r["expr"] for r in rules)
    assert rules[0]["annotations"]["runbook_url"] == "https://r.example#eventcastdown"


def test_promtool_checks_the_rules() -> None:
    assert f"SUCCESS: {len(alerts())} rules found" in promtool("check", "rules", RULES)


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", RULE_TESTS)


def test_every_alert_has_severity_summary_description_and_a_runbook_that_exists() -> None:
    sections = anchors(RUNBOOKS.read_text())
    for rule in alerts():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == build_alerts.RUNBOOK_BASE and page.startswith("https://"), rule["alert"]  # clickable
        assert anchor == rule["alert"].lower() and anchor in sections, (rule["alert"], anchor)


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert len(names) == len(alerts()), "duplicate alert names"
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet on healthy series"
