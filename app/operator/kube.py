"""The few Kubernetes API calls the operator makes, over httpx, with the credentials kopf logged in with.

kopf keeps the operator's peering keep-alives (and its liveness endpoint); everything else goes through this
client: listing the autoscalers and writing their status, the Deployment, its pods, the admin-token Secret,
Events, and reading the peering object. It takes its server and credentials from the same login function
kopf uses, so a test points both at one emulated API.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import kopf

from app.operator import constants

LoginFn = Callable[..., "kopf.ConnectionInfo | None"]
API_TIMEOUT_SECONDS = 10.0
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class NotFound(KubeError):
    pass


def default_login(**kwargs: Any) -> kopf.ConnectionInfo:
    """In a pod: its service account; elsewhere: the current kubeconfig context."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        raise kopf.LoginError("no service account token and no kubeconfig: cannot reach the Kubernetes API")
    return info


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def pod_path(namespace: str, name: str) -> str:
    return f"{pods_path(namespace)}/{name}"


def secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets/{name}"


def autoscalers_path(namespace: str | None) -> str:
    """Every ConnectionAutoscaler of a namespace, or of the cluster with None."""
    base = f"/apis/{constants.GROUP}/{constants.VERSION}"
    return f"{base}/namespaces/{namespace}/{constants.PLURAL}" if namespace else f"{base}/{constants.PLURAL}"


def autoscaler_status_path(namespace: str, name: str) -> str:
    return f"{autoscalers_path(namespace)}/{name}/status"


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/events"


def peering_path(namespace: str | None, name: str) -> str:
    """kopf's KopfPeering in a namespace, or its ClusterKopfPeering with None."""
    base = f"/apis/{constants.PEERING_GROUP}/{constants.PEERING_VERSION}"
    if namespace:
        return f"{base}/namespaces/{namespace}/{constants.PEERING_PLURAL}/{name}"
    return f"{base}/{constants.CLUSTER_PEERING_PLURAL}/{name}"


class KubeApi:
    """Get, list and merge-patch, re-logging in once when the API answers 401 (e.g. a rotated token)."""

    def __init__(self, login: LoginFn = default_login) -> None:
        self._login = login
        self._login_kwargs: dict[str, Any] = {}
        self._client: httpx.AsyncClient | None = None
        self._retired: list[httpx.AsyncClient] = []  # replaced by a re-login; closed in close()

    def login(self, **kwargs: Any) -> kopf.ConnectionInfo:
        """The operator's ``@kopf.on.login`` handler: kopf and this client share the result."""
        self._login_kwargs = kwargs
        info = self._login(**kwargs)
        if info is None:
            raise kopf.LoginError("the login function found no credentials")
        previous, self._client = self._client, self._make_client(info)
        if previous is not None:
            self._retired.append(previous)
        return info

    @staticmethod
    def _make_client(info: kopf.ConnectionInfo) -> httpx.AsyncClient:
        verify: Any = False if info.insecure else info.as_ssl_context()
        return httpx.AsyncClient(
            base_url=info.server.rstrip("/"),
            headers=info.as_http_headers(),
            verify=verify,
            timeout=API_TIMEOUT_SECONDS,
        )

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, json: Any = None
    ) -> dict[str, Any]:
        for attempt in (1, 2):
            if self._client is None:
                self.login(**self._login_kwargs)
            assert self._client is not None
            # httpx only sets a content-type that was not given, so a PATCH goes as a JSON merge patch.
            headers = {"content-type": MERGE_PATCH} if method == "PATCH" else {}
            response = await self._client.request(method, path, params=params, json=json, headers=headers)
            if response.status_code == 401 and attempt == 1:
                self._retired.append(self._client)
                self._client = None
                continue
            break
        if response.status_code == 404:
            raise NotFound(404, f"{method} {path}: not found")
        if response.status_code >= 400:
            raise KubeError(response.status_code, f"{method} {path}: {response.text[:300]}")
        body: dict[str, Any] = response.json()
        return body

    async def get(self, path: str) -> dict[str, Any]:
        return await self.request("GET", path)

    async def list(self, path: str, *, label_selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        items: list[dict[str, Any]] = (await self.request("GET", path, params=params)).get("items") or []
        return items

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, json=patch)

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, json=body)

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        secret = await self.get(secret_path(namespace, name))
        data = (secret.get("data") or {}).get(key)
        if data is None:
            string = (secret.get("stringData") or {}).get(key)
            if string is None:
                raise NotFound(404, f"secret {name} has no key {key!r}")
            return str(string)
        return base64.b64decode(data).decode().strip()

    async def close(self) -> None:
        for client in [*self._retired, *([self._client] if self._client else [])]:
            await client.aclose()
        self._retired.clear()
        self._client = None
