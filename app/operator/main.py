"""Registration only: which kopf handlers the operator has, and how it is started. The work is in handlers.py."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection
from typing import Any

import kopf

from app.operator import constants, handlers
from app.operator.kube import KubeApi
from app.operator.status import Memory, memory_from_status


def configure(settings: kopf.OperatorSettings) -> None:
    """Standalone (one replica, no peering objects), no kopf state written into the objects it watches."""
    settings.peering.standalone = True
    settings.scanning.disabled = (
        True  # the resources are known: no cluster-wide CRD discovery (no RBAC for it)
    )
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="eventcast.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="eventcast.dev")
    settings.posting.level = 20  # INFO: scale and rebalance events, not debug chatter


def build_registry(
    kube: KubeApi, interval: float = constants.DEFAULT_INTERVAL_SECONDS
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)  # type: ignore[misc]
    def login(**kwargs: Any) -> kopf.ConnectionInfo:
        return kube.login(**kwargs)

    @kopf.on.cleanup(registry=registry)  # type: ignore[misc]
    async def close(**_: Any) -> None:
        await kube.close()

    @kopf.timer(  # type: ignore[misc]
        constants.GROUP, constants.VERSION, constants.PLURAL, interval=interval, registry=registry
    )
    async def autoscale(
        body: kopf.Body,
        name: str,
        namespace: str | None,
        spec: kopf.Spec,
        status: kopf.Status,
        memo: kopf.Memo,
        patch: kopf.Patch,
        logger: Any,
        **_: Any,
    ) -> None:
        memory: Memory = memo.get("memory") or memory_from_status(status)
        memo["memory"] = memory
        target = handlers.Target(
            namespace=namespace or "default", name=name, spec=dict(spec), status=dict(status)
        )
        new_status = await handlers.reconcile(
            kube,
            target,
            memory,
            time.time(),
            lambda reason, message: kopf.info(body, reason=reason, message=message),
            logger,
        )
        patch.status.update(new_status)

    _without_finalizers(registry)
    return registry


def _without_finalizers(registry: kopf.OperatorRegistry) -> None:
    """Let autoscalers be deleted without this operator.

    kopf gives every object with a timer its finalizer, so that the timer is stopped before the object goes.
    The timer holds nothing to clean up, while a finalizer would leave an autoscaler (and its namespace)
    stuck in deletion whenever the operator is gone first, as in a ``helm uninstall`` that removes both.
    kopf has no option for this, so its registered timers are marked here (tests/operator checks that no
    finalizer is added).
    """
    spawning = registry._spawning
    spawning._handlers[:] = [dataclasses.replace(h, requires_finalizer=False) for h in spawning._handlers]


def run(namespaces: Collection[str], interval: float, *, liveness: str | None = None) -> None:
    """Run the operator until SIGINT/SIGTERM (the ``eventcast operator`` command)."""
    settings = kopf.OperatorSettings()
    configure(settings)
    kopf.run(
        registry=build_registry(KubeApi(), interval),
        settings=settings,
        standalone=True,
        namespaces=list(namespaces),
        clusterwide=not namespaces,
        liveness_endpoint=liveness,
    )
