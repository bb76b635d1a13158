"""app/filters.py: type globs and where equality, their limits, and matching compiled once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.causes import CloseCode, ProtocolError
from app.filters import MAX_GLOBS, MAX_WHERE_FIELDS, MAX_WILDCARDS, EventFilter
from tests.fakes import make_event


def bad_request(exc: pytest.ExceptionInfo[ProtocolError]) -> None:
    assert exc.value.code == CloseCode.BAD_REQUEST == 4400
    assert exc.value.reason


def test_type_globs() -> None:
    f = EventFilter.build(["edge.*"], None)
    assert f.matches(make_event("edge.created"))
    assert f.matches(make_event("edge.deleted.soft"))
    assert not f.matches(make_event("edge"))
    assert not f.matches(make_event("node.created"))
    assert not f.matches(make_event("xedge.created"))  # globs match the whole type
    assert not f.matches(make_event("Edge.created"))  # case-sensitive


def test_several_globs_any_may_match() -> None:
    f = EventFilter.build(["node.created", "edge.*", "user.?"], None)
    assert f.matches(make_event("node.created"))
    assert not f.matches(make_event("node.created.x"))
    assert not f.matches(make_event("node.deleted"))
    assert f.matches(make_event("edge.x"))
    assert f.matches(make_event("user.a"))
    assert not f.matches(make_event("user.ab"))
    assert EventFilter.build(["*"], None).matches(make_event("anything.at:all"))


def test_empty_filter_matches_everything() -> None:
    f = EventFilter.build(None, None)
    assert f.is_empty
    assert f.matches(make_event("x", "not an object"))
    assert EventFilter.build([], {}).is_empty
    assert not EventFilter.build(["a"], None).is_empty
    assert not EventFilter.build(None, {"a": 1}).is_empty


@pytest.mark.parametrize(
    ("expected", "data", "matches"),
    [
        (1, {"n": 1}, True),
        (1, {"n": "1"}, False),
        (1, {"n": True}, False),
        ("1", {"n": "1"}, True),
        ("1", {"n": 1}, False),
        (True, {"n": True}, True),
        (True, {"n": 1}, False),
        (True, {"n": "true"}, False),
        (False, {"n": 0}, False),
        (0, {"n": False}, False),
        (None, {"n": None}, True),
        (None, {}, False),
        (1, {}, False),
        (1, {"n": [1]}, False),
        (1.5, {"n": 1.5}, True),
    ],
)
def test_where_equality_is_type_strict(expected: Any, data: Any, matches: bool) -> None:
    f = EventFilter.build(None, {"n": expected})
    assert f.matches(make_event("t", data)) is matches


def test_where_needs_an_object_and_all_fields() -> None:
    f = EventFilter.build(None, {"kind": "a", "n": 2})
    assert f.matches(make_event("t", {"kind": "a", "n": 2, "other": [1]}))
    assert not f.matches(make_event("t", {"kind": "a", "n": 3}))
    assert not f.matches(make_event("t", {"kind": "a"}))
    assert not f.matches(make_event("t", [{"kind": "a", "n": 2}]))
    assert not f.matches(make_event("t", "kind=a"))
    assert not f.matches(make_event("t", None))
    assert not f.matches(make_event("t", {"nested": {"kind": "a", "n": 2}}))  # top-level only


def test_types_and_where_combine() -> None:
    f = EventFilter.build(["edge.*"], {"n": 1})
    assert f.matches(make_event("edge.x", {"n": 1}))
    assert not f.matches(make_event("node.x", {"n": 1}))
    assert not f.matches(make_event("edge.x", {"n": 2}))


@pytest.mark.parametrize(
    "types", [[""], ["edge.[ab]"], ["a b"], [5], [None], [["edge.*"]], ["x" * 201], ["edge.*", "bad glob"]]
)
def test_invalid_globs_are_rejected(types: list[Any]) -> None:
    with pytest.raises(ProtocolError) as exc:
        EventFilter.build(types, None)
    bad_request(exc)


@pytest.mark.parametrize("where", [{"a b": 1}, {"": 1}, {1: 1}, {"n": {"x": 1}}, {"n": [1]}, {"x" * 101: 1}])
def test_invalid_where_is_rejected(where: dict[Any, Any]) -> None:
    with pytest.raises(ProtocolError) as exc:
        EventFilter.build(None, where)
    bad_request(exc)


def test_filter_from_query() -> None:
    f = EventFilter.from_query("node.created, edge.* ,", ["n=3", "ok=true", "name=bob", "f=1.5", "z=null"])
    assert f.types == ("node.created", "edge.*")
    assert dict(f.where) == {"n": 3, "ok": True, "name": "bob", "f": 1.5, "z": None}
    assert f.matches(make_event("edge.a", {"n": 3, "ok": True, "name": "bob", "f": 1.5, "z": None}))
    assert not f.matches(make_event("edge.a", {"n": "3", "ok": True, "name": "bob", "f": 1.5, "z": None}))
    # Values that are not scalars in JSON compare as the raw string.
    g = EventFilter.from_query(None, ["q=[1,2]", "e=a=b"])
    assert dict(g.where) == {"q": "[1,2]", "e": "a=b"}
    assert EventFilter.from_query(None, []).is_empty
    assert EventFilter.from_query("", []).is_empty


@pytest.mark.parametrize(
    ("types", "where"), [(None, ["novalue"]), (None, ["=v"]), ("edge.[x]", []), (None, ["a b=1"])]
)
def test_filter_from_bad_query(types: str | None, where: list[str]) -> None:
    with pytest.raises(ProtocolError) as exc:
        EventFilter.from_query(types, where)
    bad_request(exc)


# ------------------------------------------------------------------------------------ bounded cost
def test_glob_count_is_bounded() -> None:
    EventFilter.build([f"t{n}.*" for n in range(MAX_GLOBS)], None)
    with pytest.raises(ProtocolError) as exc:
        EventFilter.build([f"t{n}.*" for n in range(MAX_GLOBS + 1)], None)
    bad_request(exc)
    assert "too many type globs" in exc.value.reason


def test_wildcards_per_glob_are_bounded() -> None:
    EventFilter.build(["a*" * (MAX_WILDCARDS // 2) + "?" * (MAX_WILDCARDS // 2)], None)
    with pytest.raises(ProtocolError) as exc:
        EventFilter.build(["a*" * (MAX_WILDCARDS + 1)], None)
    bad_request(exc)
    assert "wildcards" in exc.value.reason


def test_where_fields_and_values_are_bounded() -> None:
    with pytest.raises(ProtocolError):
        EventFilter.build(None, {f"k{n}": n for n in range(MAX_WHERE_FIELDS + 1)})
    with pytest.raises(ProtocolError):
        EventFilter.build(None, {"k": "x" * 1000})


def test_the_same_glob_list_is_compiled_once_for_every_connection() -> None:
    first = EventFilter.build(["edge.*", "node.created"], None)
    second = EventFilter.build(["node.created", "edge.*"], None)  # another order, same set
    assert first._type_re is second._type_re


def test_the_worst_glob_costs_little_and_is_remembered_per_type() -> None:
    """The most backtracking a glob may ask for (the maximum of wildcards in the worst places), against the
    longest type that does not match: each glob is an atomic pattern, so this is linear, not exponential."""
    globs = [("a*" * MAX_WILDCARDS)[:-1] + "b" + str(n) for n in range(MAX_GLOBS)]
    f = EventFilter.build(globs, None)
    worst = make_event("a" * 200)
    started = time.perf_counter()
    assert not f.matches(worst)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(1000):
        assert not f.matches(worst)
    assert time.perf_counter() - started < max(0.05, first * 100)  # remembered: a lookup, not a match
