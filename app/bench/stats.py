"""Mergeable latency histograms and percentile helpers (pure, no I/O).

Latencies are bucketed on a log scale (about 1 % wide buckets from 1 us to ~20 min), so a worker
process can record millions of samples in a fixed few kilobytes and the parent can add the workers'
histograms together before reading percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Bucket i holds latencies in [GROWTH**i, GROWTH**(i+1)) microseconds; bucket 0 also holds everything below 1 us.
GROWTH = 1.01
_LOG_GROWTH = math.log(GROWTH)
BUCKETS = 2100  # 1.01**2100 us ~ 1.2e9 us ~ 20 minutes
PERCENTILES = (50.0, 95.0, 99.0)


def bucket_of(latency_ms: float) -> int:
    """Index of the bucket holding `latency_ms` (clamped to the histogram's range)."""
    micros = latency_ms * 1000.0
    if micros <= 1.0:
        return 0
    index = int(math.log(micros) / _LOG_GROWTH)
    return index if index < BUCKETS else BUCKETS - 1


def bucket_upper_ms(index: int) -> float:
    """Upper edge of a bucket in milliseconds: what a percentile read from the histogram reports."""
    return float(GROWTH ** (index + 1)) / 1000.0


def new_counts() -> list[int]:
    return [0] * BUCKETS


def merge_counts(histograms: Iterable[Sequence[int]]) -> list[int]:
    total = new_counts()
    for counts in histograms:
        for index, count in enumerate(counts):
            if count:
                total[index] += count
    return total


@dataclass(frozen=True)
class Summary:
    """Distribution summary in milliseconds; every field is None when there were no samples."""

    count: int
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "mean_ms": _round(self.mean_ms),
            "p50_ms": _round(self.p50_ms),
            "p95_ms": _round(self.p95_ms),
            "p99_ms": _round(self.p99_ms),
            "max_ms": _round(self.max_ms),
        }


EMPTY = Summary(0, None, None, None, None, None)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summarize_samples(samples_ms: Sequence[float]) -> Summary:
    """Exact percentiles (nearest rank) of raw samples."""
    if not samples_ms:
        return EMPTY
    ordered = sorted(samples_ms)
    count = len(ordered)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100.0 * count) - 1)]

    return Summary(count, sum(ordered) / count, rank(50.0), rank(95.0), rank(99.0), ordered[-1])


def summarize_histogram(counts: Sequence[int], max_ms: float | None, sum_ms: float) -> Summary:
    """Percentiles read from a histogram (upper bucket edge, capped by the exact maximum)."""
    count = sum(counts)
    if count == 0:
        return EMPTY

    def rank(p: float) -> float:
        wanted = max(1, math.ceil(p / 100.0 * count))
        seen = 0
        for index, bucket_count in enumerate(counts):
            seen += bucket_count
            if seen >= wanted:
                edge = bucket_upper_ms(index)
                return min(edge, max_ms) if max_ms is not None else edge
        return max_ms if max_ms is not None else bucket_upper_ms(len(counts) - 1)

    return Summary(count, sum_ms / count, rank(50.0), rank(95.0), rank(99.0), max_ms)


def thin_samples(samples: Sequence[float], keep: int) -> list[float]:
    """At most `keep` evenly spaced order statistics of `samples` (sorted; the min and max always kept)."""
    ordered = sorted(samples)
    if len(ordered) <= keep:
        return ordered
    if keep <= 1:
        return ordered[-1:] if keep == 1 else []
    last = len(ordered) - 1
    return [ordered[round(i * last / (keep - 1))] for i in range(keep)]


def cdf_points(counts: Sequence[int]) -> list[tuple[float, float]]:
    """(latency ms, cumulative fraction) for every non-empty bucket: what the CDF chart draws."""
    total = sum(counts)
    points: list[tuple[float, float]] = []
    if total == 0:
        return points
    seen = 0
    for index, count in enumerate(counts):
        if count:
            seen += count
            points.append((bucket_upper_ms(index), seen / total))
    return points


def compress_counts(counts: Sequence[int]) -> dict[str, int]:
    """Sparse form for JSON: {bucket index: count} for the non-empty buckets."""
    return {str(index): count for index, count in enumerate(counts) if count}
