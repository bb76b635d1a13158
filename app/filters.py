"""Server-side filters (``/ws/events/filtered``, SSE, the in-band ``{"op": "filter"}``), with a bounded cost.

A filter is type globs (any may match) and equality on top-level fields of ``data``. A client chooses it,
so what it may cost the gateway is bounded up front and refused with 4400 beyond:

- at most ``MAX_GLOBS`` globs, each at most 200 characters of ``A-Z a-z 0-9 _ . : / @ - * ?`` with at most
  ``MAX_WILDCARDS`` wildcards;
- at most ``MAX_WHERE_FIELDS`` where fields, each value a scalar (strings at most ``MAX_WHERE_VALUE_CHARS``).

Matching never backtracks without bound: each glob becomes the regular expression ``fnmatch.translate``
builds (every ``*`` an atomic group, so a glob costs at most its length times the type's), compiled once per
distinct glob list and shared by every connection that uses the same list. A filter also remembers its
answer per event type (a stream has few), so a fan-out mostly costs one dictionary lookup per subscriber.
How often a client may replace its filter is bounded per connection (app/gateway.py).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.causes import Cause, ProtocolError

MAX_GLOBS = 32
MAX_WILDCARDS = 8
MAX_WHERE_FIELDS = 32
MAX_WHERE_VALUE_CHARS = 256
#: Event types whose answer one filter remembers; past it the memory starts over.
_MEMO_TYPES = 256

_GLOB_RE = re.compile(r"[A-Za-z0-9_.:/@*?-]{1,200}")
_FIELD_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class Filterable(Protocol):
    """What a filter reads of an event."""

    @property
    def type(self) -> str: ...

    @property
    def data(self) -> Any: ...


@functools.lru_cache(maxsize=1024)
def _compile(globs: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(glob) for glob in globs))


def _bad(reason: str) -> ProtocolError:
    return ProtocolError(Cause.BAD_QUERY, reason)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A validated filter; build it with ``build`` or ``from_query``."""

    types: tuple[str, ...] = ()
    where: tuple[tuple[str, Any], ...] = ()
    _type_re: re.Pattern[str] | None = None
    _memo: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, types: Iterable[Any] | None, where: Mapping[Any, Any] | None) -> EventFilter:
        """Check and compile; raises ProtocolError (4400) with the first problem found."""
        globs: list[str] = []
        for glob in types or ():
            if len(globs) == MAX_GLOBS:
                raise _bad(f"too many type globs: at most {MAX_GLOBS}")
            if not isinstance(glob, str) or not _GLOB_RE.fullmatch(glob):
                raise _bad(f"bad glob {str(glob)[:40]!r} in types")
            if glob.count("*") + glob.count("?") > MAX_WILDCARDS:
                raise _bad(f"glob {glob[:40]!r} has more than {MAX_WILDCARDS} wildcards")
            if glob not in globs:
                globs.append(glob)
        pairs: list[tuple[str, Any]] = []
        for key, value in (where or {}).items():
            if len(pairs) == MAX_WHERE_FIELDS:
                raise _bad(f"too many where fields: at most {MAX_WHERE_FIELDS}")
            if not isinstance(key, str) or not _FIELD_RE.fullmatch(key):
                raise _bad(f"bad where field {str(key)[:40]!r}")
            if isinstance(value, dict | list):
                raise _bad(f"where {key}: only scalar values compare")
            if isinstance(value, str) and len(value) > MAX_WHERE_VALUE_CHARS:
                raise _bad(f"where {key}: values are at most {MAX_WHERE_VALUE_CHARS} characters")
            pairs.append((key, value))
        key_globs = tuple(sorted(globs))
        return cls(tuple(globs), tuple(pairs), _compile(key_globs) if globs else None)

    @classmethod
    def from_query(cls, types: str | None, where: list[str]) -> EventFilter:
        """From ``types=a.*,b`` and repeated ``where=key=value`` query parameters."""
        globs = [g.strip() for g in types.split(",") if g.strip()] if types else []
        pairs: dict[str, Any] = {}
        for item in where:
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise _bad("bad where: use where=key=value")
            pairs[key] = _query_value(value)
        return cls.build(globs, pairs)

    @property
    def is_empty(self) -> bool:
        return not self.types and not self.where

    def matches(self, event: Filterable) -> bool:
        pattern = self._type_re
        if pattern is not None:
            type_ = event.type
            memo = self._memo
            known = memo.get(type_)
            if known is None:
                if len(memo) >= _MEMO_TYPES:
                    memo.clear()
                known = memo[type_] = pattern.match(type_) is not None
            if not known:
                return False
        if self.where:
            data = event.data
            if not isinstance(data, dict):
                return False
            for key, value in self.where:
                if key not in data or data[key] != value or type(data[key]) is not type(value):
                    return False
        return True


def _query_value(text: str) -> Any:
    """``where=n=3`` compares with the number 3, ``where=ok=true`` with true, anything else as a string."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool) or value is None else text
