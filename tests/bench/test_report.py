"""The report modules (figures, checks, console, markdown) on a stored result: the same tables as before
they were split out of one module, and no issue numbers in anything they write."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from app.bench.checks import FAIL, PASS, first_targets, performance_targets, server_checks
from app.bench.console import render
from app.bench.figures import comparison, key_figures, scenario, servers_of
from app.bench.markdown import markdown_report
from app.bench.run import to_json

FIXTURES = Path(__file__).with_name("fixtures")


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    """A full `make bench` result (eventcast and the baseline, every scenario), latency histograms left out."""
    loaded: dict[str, Any] = json.loads((FIXTURES / "result.json").read_text())
    return loaded


def test_markdown_tables_are_the_stored_ones(result: dict[str, Any]) -> None:
    assert markdown_report(result) == (FIXTURES / "tables.md").read_text()


def test_console_tables_are_the_stored_ones(result: dict[str, Any]) -> None:
    console = Console(record=True, width=240, color_system=None, force_terminal=False, file=io.StringIO())
    render(result, console)
    assert console.export_text() == (FIXTURES / "console.txt").read_text()


def test_no_output_names_an_issue(result: dict[str, Any]) -> None:
    console = Console(record=True, width=240, color_system=None, file=io.StringIO())
    render(result, console)
    for text in (markdown_report(result), console.export_text()):
        assert "issue" not in text.lower()


def test_stored_json_parts_are_what_the_typed_results_give(result: dict[str, Any]) -> None:
    """The JSON keeps its schema: checks, comparison and key figures serialise the typed rows."""
    ours, theirs = servers_of(result)
    assert ours is not None and theirs is not None
    assert [row.as_dict() for row in comparison(ours, theirs)] == result["comparison"]
    assert [row.as_dict() for row in key_figures(result)] == result["key_figures"]
    assert [check.as_dict() for check in performance_targets(result)] == result["performance_targets"]
    for server in result["servers"]:
        assert [check.first_target_dict() for check in server_checks(server)] == server["checks"]
    assert json.loads(to_json(result)) == result


def test_one_target_system_judges_both_groups(result: dict[str, Any]) -> None:
    ours, _ = servers_of(result)
    targets = scenario(ours, "targets")
    assert targets is not None
    first = first_targets(targets)
    per_core = performance_targets(result)
    assert {type(check) for check in first + per_core} == {type(first[0])}
    assert all(
        check.passed == (check.status.startswith(PASS) or check.status == "MIN") for check in first + per_core
    )
    rows = {check.key: check for check in per_core}
    assert rows["storm_1000_connect_p99"].status == FAIL and rows["storm_1000_connect_p99"].value == 166.2961
    assert rows["memory_per_idle_connection"].passed
