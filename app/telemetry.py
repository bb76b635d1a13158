"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` variables (or ``EVENTCAST_OTEL_ENABLED``) turn it on.

Spans:
    ``eventcast.publish``   one per publish request (``POST /events``), child of the producer's ``traceparent``
                            when it sent one. Its W3C trace context is stored in every event it publishes (the
                            ``trace`` field, carried through Redis as the stream field ``trace``).
    ``eventcast.fanout``    on every replica/worker, one per distinct publish span in a fan-out batch, LINKED
                            (not parented: one publish fans out to many replicas at their own time) to the
                            publish span; attributes: subscriber count, event count, replica. No span per delivery.

When tracing is off, ``tracer`` is None and the hot path pays one attribute load and a None check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.protocol import Event, EventIn
from app.settings import Settings

if TYPE_CHECKING:  # the hub imports this module and must not pull in the web framework
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("eventcast.telemetry")

PUBLISH_SPAN = "eventcast.publish"
FANOUT_SPAN = "eventcast.fanout"

#: The tracer in use, or None when tracing is off (the only thing the hot path looks at).
tracer: Tracer | None = None
_provider: TracerProvider | None = None
_owned = False  # set up by ``setup`` (so ``shutdown`` flushes it), not injected by ``install``
_propagator = TraceContextTextMapPropagator()


def enabled(settings: Settings) -> bool:
    if settings.otel_sdk_disabled:
        return False
    exporter = (settings.otel_traces_exporter or "").strip().lower()
    if exporter == "none":
        return False
    return settings.otel_enabled or bool(exporter) or bool(settings.otel_endpoint)


def _exporter(settings: Settings) -> SpanExporter:
    kind = (settings.otel_traces_exporter or "otlp").strip().lower().split(",")[0]
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        log.warning(
            "unknown OTEL_TRACES_EXPORTER %r: using otlp", kind, extra={"event": "telemetry.exporter"}
        )
    # Lazy: the exporter pulls in protobuf and requests, which a gateway without tracing never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout) itself


def setup(settings: Settings) -> None:
    """Turn tracing on for this process when configured; keep a provider already installed (tests)."""
    global _owned
    if tracer is not None or not enabled(settings):
        return
    resource = Resource.create(
        {"service.name": settings.otel_service_name, "service.instance.id": settings.replica}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    install(provider)
    _owned = True
    log.info("tracing on", extra={"event": "telemetry.on"})


def install(provider: TracerProvider) -> None:
    """Use ``provider`` for eventcast's spans (tests inject one with an in-memory exporter)."""
    global tracer, _provider, _owned
    _provider, _owned = provider, False
    tracer = provider.get_tracer("eventcast")


def shutdown() -> None:
    """Flush and stop what ``setup`` started; leave an injected provider alone."""
    global tracer, _provider, _owned
    if _owned and _provider is not None:
        _provider.shutdown()
        tracer, _provider, _owned = None, None, False


def uninstall() -> None:
    global tracer, _provider, _owned
    tracer, _provider, _owned = None, None, False


@contextmanager
def publish_span(events: Sequence[EventIn]) -> Iterator[None]:
    """Span one publish request and stamp its trace context into each event (call only when ``tracer``)."""
    assert tracer is not None  # callers check first: the None check is the whole cost when off
    channels = {event.channel for event in events}
    attributes: dict[str, Any] = {"eventcast.events": len(events), "messaging.system": "eventcast"}
    if len(channels) == 1:
        attributes["messaging.destination.name"] = next(iter(channels))
    with tracer.start_as_current_span(PUBLISH_SPAN, kind=SpanKind.PRODUCER, attributes=attributes):
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        for event in events:
            event.trace = carrier
        yield


def fanout_spans(events: Sequence[Event], subscribers: dict[str, Any], replica: str, started_ns: int) -> None:
    """One fan-out span per publish span seen in this batch, linked to it (call only when ``tracer``)."""
    assert tracer is not None
    groups: dict[str, list[Event]] = {}
    for event in events:
        if event.trace:
            parent = event.trace.get("traceparent")
            if parent:
                groups.setdefault(parent, []).append(event)
    for group in groups.values():
        link_context = trace.get_current_span(_propagator.extract(group[0].trace or {})).get_span_context()
        links = [Link(link_context)] if link_context.is_valid else []
        delivered = sum(len(subscribers.get(event.channel, ())) for event in group)
        span = tracer.start_span(
            FANOUT_SPAN,
            context=otel_context.Context(),  # a new trace: linked to the publish, not its child
            kind=SpanKind.CONSUMER,
            links=links,
            start_time=started_ns,
            attributes={
                "eventcast.subscribers": delivered,
                "eventcast.events": len(group),
                "eventcast.replica": replica,
                "messaging.system": "eventcast",
            },
        )
        span.end()


def now_ns() -> int:
    return time.time_ns()


class TraceContextMiddleware:
    """Makes a producer's ``traceparent`` header the parent of the publish span (installed only when on)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or tracer is None:
            await self.app(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in (b"traceparent", b"tracestate")
        }
        if not carrier:
            await self.app(scope, receive, send)
            return
        token = otel_context.attach(_propagator.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)
