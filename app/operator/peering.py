"""Which operator replica acts: kopf's peering, read back.

Every replica runs kopf with peering on: kopf writes a keep-alive for it into the peering object
(``KopfPeering`` in each watched namespace, ``ClusterKopfPeering`` when it watches the whole cluster),
``status: {<identity>: {priority, lifetime, lastseen}}``, renewed a few seconds before ``lifetime`` runs
out, and removed when the replica stops cleanly. A replica that dies keeps its entry until ``lifetime``
has passed since ``lastseen``.

The autoscaling loop acts in a namespace only while this replica is the *leader* there: the live peer with
the highest priority (ties broken by identity, so two replicas never both act and never both wait). That is
kopf's own rule for which operator runs and which pauses, with the tie made harmless. A replica's priority
is the negated time it started (``default_priority``): the oldest live replica leads, so a new replica of a
rolling update does not take over from a working one, and leadership moves only when the leader goes.

``leader`` is pure; ``Peering`` reads the object with the operator's own client.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.operator.kube import KubeApi, NotFound, peering_path


@dataclass(frozen=True, slots=True)
class Peer:
    identity: str
    priority: int
    deadline: float  # lastseen + lifetime, epoch seconds


def default_identity() -> str:
    """The pod name (a pod's hostname) and this process, unique among the replicas."""
    return f"{socket.gethostname()}/{os.getpid()}"


def default_priority(started: float | None = None) -> int:
    """Older replicas first: minus the start time in milliseconds."""
    return -int((time.time() if started is None else started) * 1000)


def _epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def peers(status: Mapping[str, Any]) -> list[Peer]:
    """The peering object's ``status`` as peers; entries that cannot be read are skipped."""
    found = []
    for identity, info in status.items():
        if not isinstance(info, Mapping):
            continue  # kopf writes null to remove an entry; a merge may leave one behind
        try:
            lastseen = _epoch(str(info["lastseen"]))
            found.append(
                Peer(identity, int(info.get("priority", 0)), lastseen + int(info.get("lifetime", 60)))
            )
        except (KeyError, TypeError, ValueError):
            continue
    return found


def leader(status: Mapping[str, Any], now: float) -> str | None:
    """The live peer with the highest (priority, identity), or None when no peer is alive."""
    alive = [peer for peer in peers(status) if peer.deadline > now]
    if not alive:
        return None
    return max(alive, key=lambda peer: (peer.priority, peer.identity)).identity


class Peering:
    """Reads the peering object of a namespace (or the cluster) and says whether this replica leads there."""

    def __init__(self, kube: KubeApi, name: str, identity: str) -> None:
        self.name = name
        self.identity = identity
        self._kube = kube

    async def leads(self, namespace: str | None, now: float) -> tuple[bool, str]:
        """(True, "") when this replica leads ``namespace``; else (False, who leads or why nobody does)."""
        try:
            body = await self._kube.get(peering_path(namespace, self.name))
        except NotFound:
            where = f"namespace {namespace}" if namespace else "the cluster"
            return False, f"no peering object {self.name!r} in {where}: create it (docs/operator.md)"
        status = body.get("status") or {}
        found = leader(status, now)
        if found == self.identity:
            return True, ""
        if found is None:
            return False, "no live peer yet (kopf has not written this replica's keep-alive)"
        return False, f"standby: {found} leads"
