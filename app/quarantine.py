"""Events that cannot be delivered: logged once with their id, counted, skipped; everything else flows.

An event lands here when it breaks a rule of app/data.py on its way out of the log (a direct producer
wrote it), or when an encoding fails to build its frame anyway. It is skipped for the subscribers it
could not reach; the metric eventcast_events_quarantined_total{reason} counts it and the log names its id,
once per process, so that a producer's mistake can be found and fixed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from app import metrics

log = logging.getLogger("eventcast.quarantine")

#: How many recent (id, reason) pairs are remembered so each is logged and counted once.
_REMEMBERED = 4096
_seen: OrderedDict[tuple[str, str], None] = OrderedDict()


def report(event_id: str, reason: str, detail: str = "") -> None:
    """Quarantine one event: a warning with its id and a count under ``reason`` (metrics.QUARANTINE_REASONS)."""
    key = (event_id, reason)
    if key in _seen:
        return
    _seen[key] = None
    if len(_seen) > _REMEMBERED:
        _seen.popitem(last=False)
    label = reason if reason in metrics.QUARANTINE_REASONS else "other"
    metrics.EVENTS_QUARANTINED.labels(label).inc()
    log.warning(
        "event quarantined: %s",
        reason,
        extra={"event": "event.quarantined", "id": event_id, "reason": reason, "detail": detail[:200]},
    )
