"""Scrape and read eventcast's /metrics in tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[str, Samples]:
    """The raw text of ``url`` (a /metrics endpoint) and its samples by (name, labels)."""
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_until(url: str, check: Callable[[Samples], bool], timeout: float = 15) -> tuple[str, Samples]:
    """Scrape until ``check`` holds (closes and cross-worker refreshes land a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        text, samples = scrape(url)
        if check(samples) or time.monotonic() > deadline:
            return text, samples
        time.sleep(0.1)


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: run `make test` (it installs the prometheus package)"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def connections_per_worker(metrics_dir: Path) -> dict[int, float]:
    """Open connections each worker last published in the multiprocess directory (pid -> count)."""
    counts: dict[int, float] = {}
    for path in metrics_dir.glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, val, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "eventcast_connections":
                counts[pid] = counts.get(pid, 0.0) + val
    return counts
