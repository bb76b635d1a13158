"""Limits with clear answers: token-bucket rates (publish per key, connect per IP) and the Origin allow-list.

Pure and clock-injectable: nothing here does I/O, so tests can drive it with a fake clock.
"""

from __future__ import annotations

import fnmatch
import math
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


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds; never answer 0, which invites an immediate retry."""
    return str(max(1, math.ceil(seconds)))


class OriginPolicy:
    """The browser ``Origin`` allow-list: globs such as ``https://app.example.com`` or ``https://*.example.com``.

    An empty list allows every origin. Requests without an ``Origin`` header (non-browser clients) pass:
    the check exists to stop other sites' pages from using a visitor's browser against the gateway.
    """

    def __init__(self, allowed: str) -> None:
        self.allowed = tuple(o.strip().rstrip("/").lower() for o in allowed.split(",") if o.strip())

    def allows(self, origin: str | None) -> bool:
        if not self.allowed or origin is None:
            return True
        origin = origin.strip().rstrip("/").lower()
        return any(fnmatch.fnmatchcase(origin, glob) for glob in self.allowed)
