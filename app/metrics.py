"""Every Prometheus metric eventcast exports, in one namespace. Names are public: the chart, the operator,
dashboards and alert rules use them. No label takes unbounded values."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NAMESPACE = "eventcast"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CONNECTIONS = Gauge("connections", "Open subscriber connections.", ["transport"], namespace=NAMESPACE)
CONNECTIONS_OPENED = Counter("connections_opened", "Subscriber connections accepted.", namespace=NAMESPACE)
CONNECTIONS_CLOSED = Counter(
    "connections_closed", "Subscriber connections closed, by reason.", ["reason"], namespace=NAMESPACE
)
CONNECT_DURATION = Histogram(
    "connect_duration_seconds",
    "From the upgrade request to the welcome frame queued (includes resume).",
    namespace=NAMESPACE,
    buckets=_LATENCY_BUCKETS,
)
BROADCAST_LATENCY = Histogram(
    "broadcast_latency_seconds",
    "From publish accepted to frame written to the client (sampled).",
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
    "events_published", "Events accepted by the broker from this process.", namespace=NAMESPACE
)
MESSAGES_DELIVERED = Counter("messages_delivered", "Event frames queued to subscribers.", namespace=NAMESPACE)
MESSAGES_DROPPED = Counter(
    "messages_dropped", "Event frames not delivered, by reason.", ["reason"], namespace=NAMESPACE
)
SEND_QUEUE_BYTES = Gauge("send_queue_bytes", "Bytes waiting in outbound queues.", namespace=NAMESPACE)
MEMORY_PER_CONNECTION = Gauge(
    "memory_per_connection_bytes",
    "Process RSS above its idle baseline, per open connection.",
    namespace=NAMESPACE,
)
RECOVERIES = Counter("recoveries", "Resume attempts, by result.", ["result"], namespace=NAMESPACE)
BROKER_UP = Gauge("broker_up", "1 when the broker is reachable.", namespace=NAMESPACE)
BROKER_LAG = Histogram(
    "broker_lag_seconds",
    "From publish accepted to the event reaching this process's fan-out.",
    namespace=NAMESPACE,
    buckets=_LATENCY_BUCKETS,
)
