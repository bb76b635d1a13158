"""Limits with clear answers: token-bucket rates (publish per key, connect per IP) and the Origin allow-list.

Pure and clock-injectable: nothing here does I/O, so tests can drive it with a fake clock.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """One token bucket per key: ``rate`` tokens a second, holding at most ``burst``. ``rate`` 0 is off.

    Memory is bounded: past ``max_keys`` buckets, the ones that have refilled completely (idle keys, which
    behave exactly like fresh ones) are forgotten.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 0,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst) if burst > 0 else max(1.0, rate)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0 when allowed, else the seconds to wait before asking again."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_idle(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < full_after}
        if len(self._buckets) >= self.max_keys:  # everyone is busy: drop the oldest half
            ordered = sorted(self._buckets.items(), key=lambda item: item[1].updated)
            self._buckets = dict(ordered[len(ordered) // 2 :])


class FrameBudget:
    """One connection's token bucket for what its client sends (frames of any kind, filter updates).

    ``rate`` tokens a second, at most ``burst``; ``take`` is False once the client outruns it. Kept apart
    from RateLimiter: one per connection, so no dictionary and no key.
    """

    __slots__ = ("_clock", "burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self.updated = clock()

    def take(self, cost: float = 1.0) -> bool:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds; never answer 0, which invites an immediate retry."""
    return str(max(1, math.ceil(seconds)))


class OriginPolicy:
    """The browser ``Origin`` allow-list: globs such as ``https://app.example.com`` or ``https://*.example.com``.

    An empty list allows every origin. Requests without an ``Origin`` header (non-browser clients) pass:
    the check exists to stop other sites' pages from using a visitor's browser against the gateway. With a
    list, an Origin must be a serialised origin (``scheme://host[:port]``, as browsers send it) and match a
    glob, where ``*`` and ``?`` never match a ``/``; ``null`` passes only when listed.
    """

    def __init__(self, allowed: str) -> None:
        self.allowed = tuple(o.strip().rstrip("/").lower() for o in allowed.split(",") if o.strip())
        self._pattern = (
            re.compile("|".join(_origin_glob(glob) for glob in self.allowed)) if self.allowed else None
        )

    def allows(self, origin: str | None) -> bool:
        if self._pattern is None or origin is None:
            return True
        origin = origin.strip().lower()
        if origin != "null" and not _ORIGIN_RE.fullmatch(origin):
            return False
        return self._pattern.fullmatch(origin) is not None


#: A serialised origin (RFC 6454 6.1): scheme, host (a name, IPv4 or [IPv6]) and an optional port.
_ORIGIN_RE = re.compile(r"[a-z][a-z0-9+.-]*://(?:[a-z0-9._~%!$&'()*+,;=-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


def _origin_glob(glob: str) -> str:
    """A glob of the allow-list as a regular expression: ``*`` and ``?`` stay within one path segment
    (``*`` alone allows every well-formed origin)."""
    if glob == "*":
        return "(?!null$).*"
    parts = []
    for char in glob:
        if char == "*":
            parts.append("[^/]*")
        elif char == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(char))
    return "(?:" + "".join(parts) + ")"
