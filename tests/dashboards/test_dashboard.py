"""dashboards/eventcast.json: generated, well formed, uses only real metric names, and fits Grafana's schema."""

from __future__ import annotations

import json
import re
import subprocess
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from app import metrics
from dashboards import build
from tests import npm
from tests.dashboards.test_alerts import alerts

#: npm packages for the schema check, pinned; installed once into a cache outside the repository.
NPM_PACKAGES = {"@grafana/schema": "13.2.3", "typescript": "5.9.3"}
NPM_DIR = npm.CACHE / "grafana-schema"

TSC_FLAGS = ("--strict", "--noEmit", "--skipLibCheck", "--module", "esnext", "--moduleResolution", "bundler")

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(build.OUTPUT.read_text()))


def exprs(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def annotation_exprs(board: dict[str, Any]) -> list[str]:
    return [annotation["target"]["expr"] for annotation in board["annotations"]["list"]]


def exported_names() -> set[str]:
    """Every series name eventcast exports, from app/metrics.py itself (plus the process collector's)."""
    families = [
        family
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    ]
    families += list(metrics.PodProcessCollector().collect())
    families += [
        family
        for family in metrics.OperatorMetrics().registry.collect()
        if family.name.startswith("eventcast_")
    ]
    names = {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}
    return names | {metrics.MEMORY_PER_CONNECTION}


def used_names(promql: str) -> set[str]:
    return set(re.findall(r"\b(?:eventcast|process)_[a-z_]+\b", promql))


def test_committed_json_is_the_generator_output() -> None:
    assert build.OUTPUT.read_text() == build.render(), "stale: run python -m dashboards.build"


def test_dashboard_and_rules_use_only_metrics_that_exist() -> None:
    exported = exported_names()
    assert "eventcast_broadcast_latency_seconds_bucket" in exported  # the lookup itself works
    queries = exprs(dashboard()) + annotation_exprs(dashboard()) + [rule["expr"] for rule in alerts()]
    queries += [variable["query"]["query"] for variable in dashboard()["templating"]["list"][1:]]
    used = set().union(*map(used_names, queries))
    assert used - exported == set()
    # What kube-state-metrics and cAdvisor serve is named once, in build.EXTERNAL_METRICS, and nothing else.
    foreign = set().union(*(set(re.findall(r"\b(?:kube|container)_[a-z_]+\b", q)) for q in queries))
    assert foreign == set(build.EXTERNAL_METRICS)
    # Every eventcast metric shows somewhere on the dashboard (process_* may be left out).
    shown = set().union(*map(used_names, exprs(dashboard())))
    bases = {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in shown}
    assert {
        re.sub(r"_(bucket|total)$", "", name)
        for name in exported
        if name.startswith("eventcast_") and not name.endswith(("_sum", "_count"))
    } - bases == {"eventcast_memory_above_baseline_bytes"}  # shown through memory per connection


def test_structure_stable_uid_datasource_variable_unique_ids_no_overlap() -> None:
    board = dashboard()
    assert board["uid"] == "eventcast-overview"
    variables = board["templating"]["list"]
    assert [v["name"] for v in variables] == ["datasource", "cluster", "namespace", "job", "pod"]
    assert variables[0] == variables[0] | {"type": "datasource", "query": "prometheus"}
    for variable in variables[1:]:
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    panels = board["panels"]
    assert all(panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for panel in panels)
    for panel in panels:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            expr = target["expr"]
            assert 'cluster=~"$cluster"' in expr, expr  # every query follows the cluster ...
            if "eventcast_operator_round" in expr or "eventcast_operator_last_round" in expr:
                continue  # ... the operator's replica-wide series have nothing else to filter on
            assert 'namespace=~"$namespace"' in expr, expr  # ... and the namespace (or the autoscaler's)
            if "eventcast_operator_" not in expr and "kube_" not in expr and "container_" not in expr:
                for name in ("job", "pod"):  # the gateway's own series: every variable
                    assert f'{name}=~"${name}"' in expr, expr
    for expr in annotation_exprs(board):
        assert 'cluster=~"$cluster"' in expr and "namespace=~" in expr
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    boxes = [panel["gridPos"] for panel in panels]
    assert all(box["x"] >= 0 and box["x"] + box["w"] <= 24 for box in boxes)
    for a, b in combinations(boxes, 2):
        overlap_x = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
        overlap_y = a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
        assert not (overlap_x and overlap_y), (a, b)
    assert sum(1 for panel in panels if panel["type"] != "row") == len(build.QUERIES)


# ------------------------------------------------------------------------------------------------ schema
def npm_schema_dir() -> Path:
    """The pinned npm packages, installed into NPM_DIR on first use (a failed install fails the test)."""
    return npm.installed(NPM_DIR, NPM_PACKAGES)


def tsc(board: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Type-check the dashboard as a literal ``Dashboard`` of @grafana/schema (TOOLBOX: not an imported .json)."""
    npm = npm_schema_dir()
    (tmp_path / "node_modules").symlink_to(npm / "node_modules")
    source = tmp_path / "dashboard.ts"
    board = dict(board)
    annotation_list = (board.get("annotations") or {}).get("list", [])
    board["annotations"] = "__ANNOTATIONS__"  # typed on its own (below), then put back in the same literal
    source.write_text(
        'import type { AnnotationQuery, Dashboard, DataQuery } from "@grafana/schema";\n'
        "// Grafana's Prometheus query (its datasource plugin's PromQuery): annotations are typed by it.\n"
        "interface PromQuery extends DataQuery {\n"
        "  expr: string;\n  interval?: string;\n  legendFormat?: string;\n  titleFormat?: string;\n}\n"
        f"const annotations: AnnotationQuery<PromQuery>[] = {json.dumps(annotation_list, indent=2)};\n"
        "export const dashboard: Dashboard = "
        + json.dumps(board, indent=2).replace('"__ANNOTATIONS__"', "{list: annotations}")
        + ";\n"
    )
    return subprocess.run(
        ["node", str(npm / "node_modules" / "typescript" / "bin" / "tsc"), *TSC_FLAGS, str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_dashboard_type_checks_against_the_grafana_schema(tmp_path: Path) -> None:
    result = tsc(dashboard(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("break_it", "error"),
    [
        (lambda board: board.pop("schemaVersion"), "schemaVersion"),
        (lambda board: board["panels"][1]["gridPos"].update(w="six"), "not assignable to type 'number'"),
        (lambda board: board["panels"][1].pop("type"), "Property 'type' is missing"),
        (lambda board: board["panels"][1].update(titel="typo"), "'\"titel\"' does not exist"),
        (lambda board: board["annotations"]["list"][0]["target"].pop("expr"), "Property 'expr' is missing"),
        (
            lambda board: board["annotations"]["list"][0].update(enable="yes"),
            "not assignable to type 'boolean'",
        ),
    ],
)
def test_the_schema_check_rejects_a_broken_dashboard(break_it: Any, error: str, tmp_path: Path) -> None:
    board = dashboard()
    break_it(board)
    result = tsc(board, tmp_path)
    assert result.returncode != 0 and error in result.stdout, result.stdout
