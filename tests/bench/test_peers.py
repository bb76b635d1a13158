"""`eventcast bench --peers` end to end: a real gateway and a real nginx + nchan, 50 clients, one run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from app.bench import compare
from app.bench.server import nchan_missing, socketio_missing


@pytest.fixture(scope="module")
def peers_report() -> dict[str, Any]:
    missing = nchan_missing() or socketio_missing()
    if missing and os.environ.get("CI") != "true":
        pytest.skip(missing)  # in CI `make system-deps` installs them, and a gap fails below
    pinning = ("pinned",) if len(os.sched_getaffinity(0)) >= 2 else ("unpinned",)
    options = compare.PeerOptions(
        clients=50,
        storm_clients=20,
        events=5,
        runs=1,
        pinning=pinning,
        step_s=0.5,
        search_steps=4,
        processes=1,
    )
    import asyncio

    return asyncio.run(compare.execute(options))


def test_both_servers_get_every_figure_from_the_same_run(peers_report: dict[str, Any]) -> None:
    runs = {run["label"]: run for run in peers_report["runs"]}
    assert set(runs) == {"eventcast", "nginx+nchan", "socket.io"}
    for label, run in runs.items():
        assert run["error"] is None, (label, run["error"])
        assert run["connected"] == 50 and run["connect_failed"] == 0 and run["storm_failed"] == 0
        assert run["broadcast_delivery"] == 1.0  # every single broadcast reached every client
        broadcast = run["detail"]["broadcast"]
        delivery = broadcast["delivery"]
        assert delivery["lost"] == delivery["duplicated"] == delivery["out_of_order"] == 0
        assert delivery["delivered"] == delivery["expected"] == 5 * 50
        assert broadcast["time_to_last"]["complete_events"] == 5
        assert 0 < run["time_to_first_ms"] <= run["time_to_last_ms"]
        assert run["memory_per_idle_kb"] is not None and run["memory_per_idle_kb"] > 0
        assert run["connect_all_s"] > 0 and run["storm_p99_ms"] > 0
        assert (
            run["server_user_ms_per_broadcast"] is not None and run["server_sys_ms_per_broadcast"] is not None
        )
        sustained = run["detail"]["sustained"]
        assert 1 <= len(sustained["steps"]) <= 4  # bounded
        for step in sustained["steps"]:  # every step is counted per client and per event
            assert step["expected"] % step["clients"] == 0 and step["clients"] == 50
            if step["failure"] is None:
                assert step["delivered"] == step["expected"] and step["lost"] == 0 and step["p99_ms"] <= 150
        if sustained["best"] is not None:
            assert run["sustained_deliveries_per_s"] == sustained["best"]["rate"] * 50


def test_the_table_goes_into_the_doc_between_its_markers(
    peers_report: dict[str, Any], tmp_path: Path
) -> None:
    text = compare.markdown(peers_report)
    assert (
        "| figure | eventcast | nginx+nchan | socket.io | eventcast / nginx+nchan | eventcast / socket.io |"
        in text
    )
    assert "memory per idle connection" in text and "50 clients connected and welcomed" in text
    assert "issue" not in text.lower()
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nintro, naming `{compare.SECTION_START}` in prose\n")
    compare.write_doc(doc, peers_report)
    first = doc.read_text()
    assert first.startswith("# Benchmarks\n\nintro, naming")
    assert first.count(f"\n{compare.SECTION_START}\n") == 1 and "| figure |" in first
    doc.write_text(first + "\nafter\n")
    compare.write_doc(doc, peers_report)  # rewritten in place, what is around it kept
    second = doc.read_text()
    assert second.count(f"\n{compare.SECTION_START}\n") == second.count(f"\n{compare.SECTION_END}\n") == 1
    assert second.endswith("\nafter\n") and second.startswith("# Benchmarks\n\nintro, naming")
    assert second == first + "\nafter\n"  # the prose that names the marker is left alone


def test_summary_gives_median_and_spread() -> None:
    runs = [
        compare.PeerRun("eventcast", "unpinned", i, None, None, memory_per_idle_kb=value)
        for i, value in enumerate((4.0, 5.0, 4.5))
    ]
    runs[2].busy["memory_per_idle_kb"] = True
    options = compare.PeerOptions(runs=3, pinning=("unpinned",))
    figure = compare.summarize(runs, options)["unpinned"]["eventcast"]["figures"]["memory_per_idle_kb"]
    assert figure == {"median": 4.5, "min": 4.0, "max": 5.0, "runs": 3, "busy_runs": 1}
    row = next(row for row in compare.ROWS if row.field == "memory_per_idle_kb")
    assert compare._cell(figure, row) == "4.50 KB (4.00-5.00) [load busy in 1]"


def test_rewriting_the_real_doc_changes_only_its_section() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "benchmarks.md").read_text()
    rewritten = compare.rewrite_section(doc, "| new | table |\n")
    before, after = doc.split(f"\n{compare.SECTION_START}\n")[0], doc.split(f"\n{compare.SECTION_END}\n")[1]
    assert rewritten == f"{before}\n{compare.SECTION_START}\n| new | table |\n{compare.SECTION_END}\n{after}"
    assert compare.rewrite_section(rewritten, "| new | table |") == rewritten
    with pytest.raises(ValueError):
        compare.rewrite_section(f"{compare.SECTION_END}\n{compare.SECTION_START}\n", "x")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--peers", "haproxy"], "unknown peer(s) ['haproxy']"),
        (["--peers", "nchan", "--pinning", "sometimes"], "--pinning must be pinned, unpinned or both"),
        (["--client", "curl"], "--client must be one of raw, picows, websockets"),
        (["--peers", "nchan", "--runs", "0"], "--runs"),
    ],
)
def test_bad_peer_options_are_refused_before_anything_runs(arguments: list[str], message: str) -> None:
    import typer
    from typer.testing import CliRunner

    from app.bench.command import bench

    app = typer.Typer()
    app.command()(bench)
    done = CliRunner().invoke(app, arguments)
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.replace("│", " ").split())
