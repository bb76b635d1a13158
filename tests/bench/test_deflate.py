"""eventcast bench --deflate: a small real run, and the section it rewrites."""

from __future__ import annotations

from app.bench import deflate


async def test_a_small_run_compares_the_two_modes_and_every_client_gets_every_event() -> None:
    report = await deflate.execute(runs=1, clients=60, broadcasts=2, cpus=None)
    plain, compressed = report["results"]["plain"][0], report["results"]["deflate"][0]
    assert plain["errors"] == [] and compressed["errors"] == []
    assert plain["negotiated"] == 0 and compressed["negotiated"] == 60
    for result in (plain, compressed):
        assert result["memory_per_connection"] is not None and result["to_last_ms"] is not None
    table = deflate.markdown(report)
    assert (
        "| memory per idle connection (KB) |" in table and "| server CPU per single broadcast (ms) |" in table
    )


def test_the_doc_section_is_rewritten_in_place() -> None:
    document = f"# Benchmarks\n\nbefore\n{deflate.SECTION_START}\nold\n{deflate.SECTION_END}\nafter\n"
    rewritten = deflate.rewrite_section(document, "new table\n")
    assert (
        rewritten
        == f"# Benchmarks\n\nbefore\n{deflate.SECTION_START}\nnew table\n{deflate.SECTION_END}\nafter\n"
    )
    appended = deflate.rewrite_section("# Benchmarks\n", "t\n")
    assert appended.endswith(f"{deflate.SECTION_START}\nt\n{deflate.SECTION_END}\n")
