"""Read a pod's open connections from its /metrics (the ``eventcast_connections`` gauge, summed over transports).

A pod that does not answer, answers with an error, or serves no such gauge is reported with the reason, never
raised: the reconciliation goes on with the pods that did answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.operator import constants


@dataclass(frozen=True, slots=True)
class Scrape:
    pod: str
    connections: int | None  # None when the scrape failed
    error: str | None = None


def parse_connections(text: str) -> int:
    """Sum every sample of ``eventcast_connections`` (one per transport) in a Prometheus text exposition."""
    total = 0.0
    seen = False
    for family in text_string_to_metric_families(text):
        if family.name != constants.CONNECTIONS_METRIC:
            continue
        for sample in family.samples:
            if sample.name == constants.CONNECTIONS_METRIC:
                total += sample.value
                seen = True
    if not seen:
        raise ValueError(f"no {constants.CONNECTIONS_METRIC} gauge in the scrape")
    return round(total)


def metrics_url(pod_ip: str, port: int) -> str:
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip  # IPv6 pod addresses
    return f"http://{host}:{port}{constants.METRICS_PATH}"


def admin_url(pod_ip: str, port: int, path: str) -> str:
    return metrics_url(pod_ip, port).removesuffix(constants.METRICS_PATH) + path


async def scrape_pod(client: httpx.AsyncClient, pod: str, url: str, timeout: float) -> Scrape:
    try:
        response = await client.get(url, timeout=timeout)
        response.raise_for_status()
        return Scrape(pod, parse_connections(response.text))
    except httpx.HTTPStatusError as exc:
        return Scrape(pod, None, f"{url}: HTTP {exc.response.status_code}")
    except httpx.HTTPError as exc:
        return Scrape(pod, None, f"{url}: {type(exc).__name__} {exc}".strip())
    except ValueError as exc:
        return Scrape(pod, None, f"{url}: {exc}")


async def scrape_pods(
    client: httpx.AsyncClient, urls: Mapping[str, str], timeout: float = constants.SCRAPE_TIMEOUT_SECONDS
) -> dict[str, Scrape]:
    """Scrape every pod at once; pod name -> what it said (or why it did not)."""
    results = await asyncio.gather(*(scrape_pod(client, pod, url, timeout) for pod, url in urls.items()))
    return {result.pod: result for result in results}
