"""Every Prometheus metric eventcast exports, in one namespace. Names are public: the chart, the operator,
dashboards and alert rules use them. No label takes unbounded values.

Two modes, chosen by prometheus_client itself at import (``PROMETHEUS_MULTIPROC_DIR`` set or not):

- one worker: the plain in-process registry, plus the standard process/platform/gc collectors;
- several workers (``eventcast serve --workers N`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh per-pod
  directory): every worker writes its values to memory-mapped files there and ``/metrics`` on any worker
  merges them, so one scrape reports the whole pod. Counters and histograms are summed; live-state gauges use
  ``livesum`` (``broker_up`` uses ``livemin``: the pod is up only if every worker reaches the broker).

Live-state gauges (connections and their limit, send queue bytes, memory) are never incremented ad hoc:
``refresh(hub)`` sets them from the hub right before each scrape, and in multi-worker mode every worker also refreshes its own files
every ``metrics_refresh_seconds`` so the worker that answers the scrape sees its siblings' current state.

``eventcast_memory_per_connection_bytes`` = sum over the pod's workers of (RSS - RSS at startup baseline)
/ open connections of the pod (0 with no connection). See docs/observability.md.
"""

from __future__ import annotations

import asyncio
import glob
import os
import random
import resource
import time
from collections.abc import Iterable, Iterator
from typing import Protocol

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.registry import Collector

from app import causes


class Observed(Protocol):
    """What a scrape reads from the hub (metrics observe; they import nothing that serves)."""

    @property
    def connections(self) -> Iterable[ObservedConnection]: ...

    @property
    def max_connections(self) -> int: ...


class ObservedConnection(Protocol):
    counted: bool

    @property
    def kind(self) -> str: ...

    @property
    def queued_bytes(self) -> int: ...


NAMESPACE = "eventcast"
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: True when prometheus_client stores values in PROMETHEUS_MULTIPROC_DIR (decided once, at its import).
MULTIPROCESS = values.ValueClass is not values.MutexValue

#: Values of the ``transport`` label; both are exported (as 0) from the start so queries never see a gap.
TRANSPORTS = ("websocket", "sse")

#: Every value of the ``reason`` label of eventcast_connections_closed_total and _refused_total: the close
#: causes' table (app/causes.py) is the one place they are named.
CLOSE_REASONS = causes.CLOSE_LABELS
REFUSAL_REASONS = causes.REFUSAL_LABELS

#: Every value of the ``reason`` label of eventcast_events_quarantined_total (app/data.py, app/quarantine.py).
QUARANTINE_REASONS = (
    "invalid_utf8",  # a log entry's data is not UTF-8
    "invalid_json",  # it starts like a JSON object or array but does not parse
    "too_deep",  # it nests past app.data.MAX_DATA_DEPTH
    "integer_range",  # it holds an integer beyond 64 bits
    "invalid_type",  # its type is not a valid event type name
    "encode_error",  # an encoding failed to build its frame anyway (a bug: the log line says which)
    "other",
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: half the series, and multiprocess mode has none either

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CONNECTIONS = Gauge(
    "connections",
    "Open subscriber connections (the pod's total across workers).",
    ["transport"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
CONNECTIONS_OPENED = Counter("connections_opened", "Subscriber connections accepted.", namespace=NAMESPACE)
CONNECTIONS_CLOSED = Counter(
    "connections_closed", "Subscriber connections closed, by reason.", ["reason"], namespace=NAMESPACE
)
CONNECTIONS_MAX = Gauge(
    "connections_max",
    "Subscriber connections the pod accepts before refusing with 1013 (the per-worker limit times workers).",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
CONNECTIONS_REFUSED = Counter(
    "connections_refused",
    "Subscribers turned away before their welcome frame, by reason.",
    ["reason"],
    namespace=NAMESPACE,
)
CONNECT_DURATION = Histogram(
    "connect_duration_seconds",
    "From the upgrade request to the welcome frame queued (includes resume).",
    namespace=NAMESPACE,
    buckets=_LATENCY_BUCKETS,
)
BROADCAST_LATENCY = Histogram(
    "broadcast_latency_seconds",
    "From publish accepted (the event's ts) to its frame written to the client; sampled, see docs.",
    namespace=NAMESPACE,
    buckets=_LATENCY_BUCKETS,
)
FANOUT_DURATION = Histogram(
    "fanout_duration_seconds",
    "Time to queue one batch of broker events to every local subscriber.",
    namespace=NAMESPACE,
    buckets=_LATENCY_BUCKETS,
)
EVENTS_PUBLISHED = Counter(
    "events_published", "Events accepted by the broker from this pod.", namespace=NAMESPACE
)
MESSAGES_DELIVERED = Counter("messages_delivered", "Event frames queued to subscribers.", namespace=NAMESPACE)
MESSAGES_DROPPED = Counter(
    "messages_dropped", "Event frames not delivered, by reason.", ["reason"], namespace=NAMESPACE
)
SEND_QUEUE_BYTES = Gauge(
    "send_queue_bytes",
    "Bytes waiting in outbound queues (the pod's total).",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
MEMORY_ABOVE_BASELINE = Gauge(
    "memory_above_baseline_bytes",
    "Resident memory above each worker's startup baseline, summed over the pod's workers.",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
#: Computed at scrape time from the two gauges above (pod-wide), so it is not a Gauge object.
MEMORY_PER_CONNECTION = f"{NAMESPACE}_memory_per_connection_bytes"
EVENTS_QUARANTINED = Counter(
    "events_quarantined",
    "Events skipped because some encoding cannot carry them (logged once with their id), by reason.",
    ["reason"],
    namespace=NAMESPACE,
)
BROKER_READER_RESTARTS = Counter(
    "broker_reader_restarts",
    "Times the broker's log reader failed unexpectedly and was restarted (each one is logged).",
    namespace=NAMESPACE,
)
FANOUT_ERRORS = Counter(
    "fanout_errors",
    "Unexpected errors while queueing an event to one subscriber (that subscriber is closed with 1011).",
    namespace=NAMESPACE,
)
RECOVERIES = Counter("recoveries", "Resume attempts, by result.", ["result"], namespace=NAMESPACE)
BROKER_UP = Gauge(
    "broker_up",
    "1 when the broker is reachable (from every worker of the pod).",
    namespace=NAMESPACE,
    multiprocess_mode="livemin",
)
BROKER_LAG = Histogram(
    "broker_lag_seconds",
    "From publish accepted to the event reaching this process's fan-out.",
    namespace=NAMESPACE,
    buckets=_LATENCY_BUCKETS,
)

# Bounded label values known up front are exported as 0 from the start.
for _transport in TRANSPORTS:
    CONNECTIONS.labels(_transport)
MESSAGES_DROPPED.labels("slow_consumer")
for _reason in CLOSE_REASONS:
    CONNECTIONS_CLOSED.labels(_reason)
for _reason in REFUSAL_REASONS:
    CONNECTIONS_REFUSED.labels(_reason)
for _reason in QUARANTINE_REASONS:
    EVENTS_QUARANTINED.labels(_reason)
for _result in ("recovered", "gap"):
    RECOVERIES.labels(_result)

_process = psutil.Process()
_baseline_rss: int | None = None


def take_baseline() -> None:
    """Remember this worker's RSS once it is up and idle: memory per connection is measured above it."""
    global _baseline_rss
    _baseline_rss = _process.memory_info().rss


def memory_above_baseline() -> int:
    if _baseline_rss is None:
        return 0
    return max(0, _process.memory_info().rss - _baseline_rss)


#: Broadcast latency is observed for every Nth live frame of each connection (EVENTCAST_LATENCY_SAMPLE_EVERY).
latency_sample_every = 8


def first_sample_countdown() -> int:
    """A random phase per connection, so samples fall uniformly over frame positions (head and tail of bursts)."""
    return random.randrange(latency_sample_every)


def observe_broadcast(ts_ms: float) -> None:
    """One sample of publish-accepted (``ts``, ms since the epoch) to now (the frame was just written)."""
    BROADCAST_LATENCY.observe(max(0.0, time.time() - ts_ms / 1000.0))


def refresh(hub: Observed) -> int:
    """Set this worker's live-state gauges from the hub (cost: one pass over its connections).

    Returns this worker's open (counted) connections.
    """
    counts = dict.fromkeys(TRANSPORTS, 0)
    queued = 0
    for conn in hub.connections:
        if conn.counted:
            kind = conn.kind
            counts[kind] = counts.get(kind, 0) + 1
        queued += conn.queued_bytes
    for kind, count in counts.items():
        CONNECTIONS.labels(kind).set(count)
    SEND_QUEUE_BYTES.set(queued)
    MEMORY_ABOVE_BASELINE.set(memory_above_baseline())
    CONNECTIONS_MAX.set(hub.max_connections)
    return sum(counts.values())


async def keep_fresh(hub: Observed, interval: float) -> None:
    """Multi-worker mode: keep this worker's live gauges current for scrapes answered by its siblings."""
    while True:
        refresh(hub)
        await asyncio.sleep(interval)


def _workers_registry() -> CollectorRegistry:
    """Every live worker's values, merged from the multiprocess directory."""
    reap_dead_workers()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def render(hub: Observed) -> bytes:
    """The text exposition for one scrape of ``/metrics``."""
    refresh(hub)
    if MULTIPROCESS:
        registry = _workers_registry()
        registry.register(PodProcessCollector())
        PlatformCollector(registry=registry)
        families = list(registry.collect())
    else:
        families = list(REGISTRY.collect())
    families.append(memory_per_connection(families))
    return generate_latest(_Families(families))


def pod_connections(hub: Observed) -> int:
    """Open connections of the whole pod: this worker's, plus, with several workers, what the others last
    published (at most ``metrics_refresh_seconds`` old)."""
    local = refresh(hub)
    if not MULTIPROCESS:
        return local
    return int(_total(_workers_registry().collect(), f"{NAMESPACE}_connections"))


def pod_counts(hub: Observed) -> dict[str, int]:
    """The pod's open connections and its published and delivered totals (the console's live counts)."""
    local = refresh(hub)
    if MULTIPROCESS:
        families = list(_workers_registry().collect())
        connections = int(_total(families, f"{NAMESPACE}_connections"))
    else:
        families = [*EVENTS_PUBLISHED.collect(), *MESSAGES_DELIVERED.collect()]
        connections = local

    def sample_total(name: str) -> int:
        return int(sum(s.value for family in families for s in family.samples if s.name == name))

    return {
        "connections": connections,
        "published": sample_total(f"{NAMESPACE}_events_published_total"),
        "delivered": sample_total(f"{NAMESPACE}_messages_delivered_total"),
    }


def _total(families: Iterable[Metric], name: str) -> float:
    """The sum of every sample of the family ``name`` (0 when absent)."""
    return sum(sample.value for family in families if family.name == name for sample in family.samples)


def memory_per_connection(families: Iterable[Metric]) -> GaugeMetricFamily:
    families = list(families)
    connections = _total(families, f"{NAMESPACE}_connections")
    above = _total(families, f"{NAMESPACE}_memory_above_baseline_bytes")
    return GaugeMetricFamily(
        MEMORY_PER_CONNECTION,
        "Resident memory above the startup baseline per open connection, pod-wide (0 with no connection).",
        value=above / connections if connections else 0.0,
    )


def reap_dead_workers(path: str | None = None) -> None:
    """Drop the live gauges of workers that died (uvicorn restarts them under new pids)."""
    directory = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    pids: set[int] = set()
    for name in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = name.rsplit("_", 1)[-1].removesuffix(".db")
        if pid.isdigit():
            pids.add(int(pid))
    for dead in pids:
        if not psutil.pid_exists(dead):
            multiprocess.mark_process_dead(dead, directory)  # type: ignore[no-untyped-call]


class _Families(Collector):
    """Already collected metric families, handed to ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class PodProcessCollector(Collector):
    """The standard ``process_*`` metrics for the whole pod: the uvicorn supervisor plus its workers.

    In multi-worker mode a scrape lands on one worker; reporting only that worker would make the series jump
    from scrape to scrape, so these are summed over the supervisor (this worker's parent) and its children.
    """

    def collect(self) -> Iterator[Metric]:
        try:
            parent = psutil.Process(os.getppid())
            processes = [parent, *parent.children()]
            start_time = parent.create_time()
        except psutil.Error:
            processes, start_time = [_process], _process.create_time()
        rss = vms = fds = 0
        cpu = 0.0
        for proc in processes:
            try:
                with proc.oneshot():
                    memory = proc.memory_info()
                    times = proc.cpu_times()
                    rss, vms = rss + memory.rss, vms + memory.vms
                    cpu += times.user + times.system
                    fds += proc.num_fds()
            except psutil.Error:  # a worker exiting right now
                continue
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory, pod total.", value=rss)
        yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory, pod total.", value=vms)
        yield CounterMetricFamily("process_cpu_seconds", "User and system CPU time, pod total.", value=cpu)
        yield GaugeMetricFamily("process_open_fds", "Open file descriptors, pod total.", value=fds)
        yield GaugeMetricFamily(
            "process_max_fds",
            "Open file descriptor limit of each process.",
            value=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the pod's supervisor, since the epoch.",
            value=start_time,
        )


#: Labels of every per-autoscaler operator series: bounded by the ConnectionAutoscalers that exist. The
#: namespace is ``autoscaler_namespace`` so that it never collides with the scrape target's own ``namespace``.
OPERATOR_LABELS = ("autoscaler_namespace", "autoscaler")


class OperatorMetrics:
    """The operator's own metrics (``eventcast operator --metrics-port``), in a registry of their own.

    Built only by the operator process, so a gateway never exports ``eventcast_operator_*`` series. The
    ``reason`` label takes the values of ``app.operator.scaling.Reason``; ``result`` is ``ok`` or ``error``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = OPERATOR_LABELS

        def gauge(name: str, doc: str, names: tuple[str, ...] = labels) -> Gauge:
            return Gauge(f"operator_{name}", doc, names, namespace=NAMESPACE, registry=self.registry)

        def counter(name: str, doc: str, names: tuple[str, ...] = labels) -> Counter:
            return Counter(f"operator_{name}", doc, names, namespace=NAMESPACE, registry=self.registry)

        self.leader = gauge(
            "leader", "1 while this replica acts in the namespace (leads kopf's peering), else 0.", labels[:1]
        )
        self.desired_replicas = gauge("desired_replicas", "Replicas the last round chose for the Deployment.")
        self.current_replicas = gauge(
            "current_replicas", "The Deployment's spec.replicas before the last round."
        )
        self.ready_pods = gauge("ready_pods", "Ready pods of the Deployment seen by the last round.")
        self.min_replicas = gauge("min_replicas", "The autoscaler's minReplicas.")
        self.max_replicas = gauge("max_replicas", "The autoscaler's maxReplicas.")
        self.decisions = counter(
            "decisions", "Rounds, by the reason of the replica count chosen.", (*labels, "reason")
        )
        self.sheds = counter(
            "sheds", "POST /admin/shed requests sent to gateway pods, by result.", (*labels, "result")
        )
        self.shed_connections = counter(
            "shed_connections", "Connections the gateway pods closed when asked to shed."
        )
        self.scrape_failures = counter("scrape_failures", "Gateway pod /metrics scrapes that failed.")
        self.reconcile_errors = counter(
            "reconcile_errors", "Rounds of an autoscaler that failed with an error."
        )
        self.round_duration = Histogram(
            "operator_round_duration_seconds",
            "Time of one round over every autoscaler this replica leads.",
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.last_round = Gauge(
            "operator_last_round_timestamp_seconds",
            "When the last round ended (a standby replica keeps counting its rounds too).",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)

    def start(self, namespace: str, name: str, reasons: Iterable[str]) -> None:
        """Every counter of a newly seen autoscaler at 0, so its first shed or failure already shows as a rate."""
        for reason in reasons:
            self.decisions.labels(namespace, name, reason).inc(0)
        for result in ("ok", "error"):
            self.sheds.labels(namespace, name, result).inc(0)
        for counter in (self.shed_connections, self.scrape_failures, self.reconcile_errors):
            counter.labels(namespace, name).inc(0)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the gauges of an autoscaler that is gone (or no longer led here); counters keep their totals."""
        for gauge in (
            self.desired_replicas,
            self.current_replicas,
            self.ready_pods,
            self.min_replicas,
            self.max_replicas,
        ):
            try:
                gauge.remove(namespace, name)
            except KeyError:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
