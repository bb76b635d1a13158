"""The autoscaling loop: every ``interval`` seconds, reconcile every ConnectionAutoscaler this replica leads.

It runs beside kopf (main.py), not inside a kopf timer: a kopf timer puts kopf's finalizer on every object it
times, which would leave an autoscaler (and its namespace) stuck in deletion whenever the operator is gone
first, and kopf offers no public way to drop it. Here nothing is added to the objects but their status.

A round, per watched namespace (or once for the whole cluster):

1. With peering, read kopf's peering object: act only while this replica leads (peering.py). A replica that
   (re)gains the lead forgets what it remembered and reads the memory back from each status, where the
   previous leader left it.
2. List the autoscalers, reconcile each one (handlers.py) on its own, write its status through the
   ``/status`` subresource, post its Events, and count what it did in the operator's metrics.

One autoscaler failing never stops the others; the error is logged, counted and retried next round.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Collection
from typing import Any

import httpx

from app.metrics import OperatorMetrics
from app.operator import constants, handlers
from app.operator.kube import KubeApi, KubeError, autoscaler_status_path, autoscalers_path, events_path
from app.operator.peering import Peering
from app.operator.scaling import Reason
from app.operator.status import Memory, memory_from_status

logger = logging.getLogger("eventcast.operator")

#: The loop counts as stuck (liveness fails) after this many intervals without a finished round.
STUCK_AFTER_INTERVALS = 5
STUCK_AFTER_MIN_SECONDS = 60.0


class Autoscaling:
    def __init__(
        self,
        kube: KubeApi,
        namespaces: Collection[str],
        interval: float,
        metrics: OperatorMetrics,
        peering: Peering | None = None,
        component: str = "eventcast-operator",
    ) -> None:
        self.kube = kube
        self.scopes: list[str | None] = list(namespaces) or [None]  # None: the whole cluster
        self.interval = interval
        self.metrics = metrics
        self.peering = peering
        self.component = component
        self.memories: dict[tuple[str, str], tuple[str, Memory]] = {}  # (ns, name) -> (uid, memory)
        self.leading: dict[str | None, bool] = {}
        self.last_round: float = time.monotonic()  # a fresh loop is not stuck
        self.rounds = 0

    # ------------------------------------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set; a round that fails as a whole is logged and the loop goes on."""
        async with httpx.AsyncClient(trust_env=False) as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await self.round(http)
                except Exception:  # never let one bad round end the operator
                    logger.exception("autoscaling round failed")
                self.last_round = time.monotonic()
                self.rounds += 1
                self.metrics.round_duration.observe(self.last_round - started)
                self.metrics.last_round.set(time.time())
                try:
                    await asyncio.wait_for(stop.wait(), max(0.0, self.interval - (self.last_round - started)))
                except TimeoutError:
                    pass

    def stuck_for(self) -> float | None:
        """Seconds since the last round when that is too long (for the liveness probe), else None."""
        idle = time.monotonic() - self.last_round
        limit = max(STUCK_AFTER_MIN_SECONDS, STUCK_AFTER_INTERVALS * self.interval)
        return idle if idle > limit else None

    async def round(self, http: httpx.AsyncClient) -> None:
        for scope in self.scopes:
            if await self._leads(scope):
                await self._reconcile_scope(http, scope)

    async def _leads(self, scope: str | None) -> bool:
        label = scope or ""
        if self.peering is None:
            self.metrics.leader.labels(label).set(1)
            return True
        try:
            leads, why = await self.peering.leads(scope, time.time())
        except (KubeError, httpx.HTTPError) as exc:
            leads, why = False, f"cannot read the peering object: {exc}"
        if leads != self.leading.get(scope, False):
            where = f"namespace {scope}" if scope else "the cluster"
            logger.info(
                "now %s in %s%s", "leading" if leads else "standing by", where, f": {why}" if why else ""
            )
            # Whatever was remembered is stale once another replica acted: read it back from the status.
            self._forget_scope(scope)
        self.leading[scope] = leads
        self.metrics.leader.labels(label).set(1 if leads else 0)
        return leads

    def _forget_scope(self, scope: str | None) -> None:
        for key in [k for k in self.memories if scope is None or k[0] == scope]:
            del self.memories[key]
            self.metrics.forget(*key)

    async def _reconcile_scope(self, http: httpx.AsyncClient, scope: str | None) -> None:
        autoscalers = await self.kube.list(autoscalers_path(scope))
        seen: set[tuple[str, str]] = set()
        for body in autoscalers:
            meta = body.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue
            key = (str(meta.get("namespace") or scope), str(meta["name"]))
            seen.add(key)
            if key not in self.memories:
                self.metrics.start(*key, [reason.value for reason in Reason])
            try:
                await self._reconcile_one(http, key, body)
            except Exception:  # one autoscaler's failure must not stop the others
                logger.exception("reconciling %s/%s failed", *key)
                self.metrics.reconcile_errors.labels(*key).inc()
        for gone in [k for k in self.memories if (scope is None or k[0] == scope) and k not in seen]:
            del self.memories[gone]
            self.metrics.forget(*gone)

    # ------------------------------------------------------------------------------------------ one object
    async def _reconcile_one(
        self, http: httpx.AsyncClient, key: tuple[str, str], body: dict[str, Any]
    ) -> None:
        namespace, name = key
        uid = str((body.get("metadata") or {}).get("uid", ""))
        status = body.get("status") or {}
        remembered = self.memories.get(key)
        memory = remembered[1] if remembered and remembered[0] == uid else memory_from_status(status)
        self.memories[key] = (uid, memory)
        events: list[tuple[str, str]] = []
        target = handlers.Target(namespace=namespace, name=name, spec=body.get("spec") or {}, status=status)
        object_logger = logging.LoggerAdapter(logger, {"autoscaler": f"{namespace}/{name}"})
        outcome = await handlers.reconcile(
            self.kube,
            http,
            target,
            memory,
            time.time(),
            lambda reason, message: events.append((reason, message)),
            object_logger,
        )
        if self.peering is not None:
            outcome.status["operator"] = self.peering.identity  # which replica acted
        await self.kube.merge_patch(autoscaler_status_path(namespace, name), {"status": outcome.status})
        for reason, message in events:
            await self._post_event(body, reason, message)
        self._count(key, outcome)

    def _count(self, key: tuple[str, str], outcome: handlers.Outcome) -> None:
        m = self.metrics
        if outcome.reason is None or outcome.desired is None or outcome.current is None:
            m.forget(*key)
            return
        m.decisions.labels(*key, outcome.reason.value).inc()
        m.desired_replicas.labels(*key).set(outcome.desired)
        m.current_replicas.labels(*key).set(outcome.current)
        m.ready_pods.labels(*key).set(outcome.ready_pods)
        if outcome.bounds is not None:
            m.min_replicas.labels(*key).set(outcome.bounds[0])
            m.max_replicas.labels(*key).set(outcome.bounds[1])
        if outcome.scrape_failures:
            m.scrape_failures.labels(*key).inc(outcome.scrape_failures)
        for row in outcome.sheds:
            m.sheds.labels(*key, "error" if "error" in row else "ok").inc()
            m.shed_connections.labels(*key).inc(row.get("shed", 0))

    async def _post_event(self, body: dict[str, Any], reason: str, message: str) -> None:
        """A core/v1 Event on the autoscaler, as ``kubectl describe`` shows them."""
        meta = body.get("metadata") or {}
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            # Named as Kubernetes names its own Events: the object, then a unique hexadecimal suffix.
            "metadata": {
                "name": f"{meta.get('name')}.{time.time_ns():x}",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": constants.API_VERSION,
                "kind": constants.KIND,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Normal",
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.peering.identity if self.peering else self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.post(events_path(str(meta.get("namespace"))), event)
        except (KubeError, httpx.HTTPError) as exc:  # an Event is informative: never fail a round on it
            logger.warning("could not post event %s: %s", reason, exc)
