"""A real Prometheus scrapes a running gateway and sees eventcast_connections = open clients."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.clients import Subscriber
from tests.servers import Gateway, free_port, wait_for

OPEN_CLIENTS = 4


def query(base: str, promql: str) -> float | None:
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def start_prometheus(binary: str, config: Path, tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    with (tmp_path / "prometheus.log").open("wb") as log:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
async def test_prometheus_sees_the_open_connections(gateway: Gateway, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is missing: run `make test` (it installs the Debian package)"
    subscribers = [await Subscriber.open(f"{gateway.ws}/ws/events") for _ in range(OPEN_CLIENTS)]
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: eventcast\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{gateway.port}']\n"
    )
    process = start_prometheus(binary, config, tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/-/ready", timeout=1).status_code == 200, 30, "prometheus ready")
        deadline = time.monotonic() + 40
        seen = None
        while time.monotonic() < deadline:
            seen = query(base, 'sum(eventcast_connections{job="eventcast"})')
            if seen == OPEN_CLIENTS:
                break
            await asyncio.sleep(0.5)
        assert seen == OPEN_CLIENTS, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert query(base, 'up{job="eventcast"}') == 1
        assert query(base, "eventcast_connections_opened_total") == OPEN_CLIENTS
    finally:
        process.kill()
        process.wait(10)
        for sub in subscribers:
            await sub.close()
