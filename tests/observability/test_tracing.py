"""Traces: a publish span on the replica that took the request, and on every replica a fan-out span linked to
it, the trace context travelling inside the event through a shared Redis. Two gateways run in this process so
an in-memory exporter sees the spans of both."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator, Iterator

import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import telemetry
from app.main import create_app
from app.settings import Settings
from tests.clients import Subscriber, batch, publish
from tests.servers import RedisServer, free_port

PRODUCER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"


class QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # pytest owns the signals


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    telemetry.install(provider)
    yield memory
    telemetry.uninstall()


@contextlib.asynccontextmanager
async def replica(name: str, broker: str) -> AsyncIterator[str]:
    port = free_port()
    settings = Settings(broker_url=broker, replica=name, port=port)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "replica did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


async def test_publish_and_fanout_spans_are_linked_across_replicas(
    redis_server: RedisServer, exporter: InMemorySpanExporter
) -> None:
    async with replica("a", redis_server.url) as a, replica("b", redis_server.url) as b:
        on_a = [await Subscriber.open(f"ws://{a}/ws/events?channels=t")]
        on_b = [await Subscriber.open(f"ws://{b}/ws/events?channels=t") for _ in range(2)]
        headers = {"traceparent": f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"}
        response = await publish(f"http://{a}", batch("t", 3), headers=headers)
        assert response.status_code == 202
        await asyncio.gather(*(sub.collect(3) for sub in on_a + on_b))
        for sub in on_a + on_b:
            await sub.close()

    spans = exporter.get_finished_spans()
    [published] = by_name(spans, telemetry.PUBLISH_SPAN)
    assert published.context is not None and published.parent is not None
    assert f"{published.context.trace_id:032x}" == PRODUCER_TRACE  # child of the producer's span
    assert f"{published.parent.span_id:016x}" == PRODUCER_SPAN
    assert published.attributes is not None and published.attributes["eventcast.events"] == 3

    fanouts = by_name(spans, telemetry.FANOUT_SPAN)
    seen: dict[str, int] = {}
    for span in fanouts:
        assert span.attributes is not None
        [link] = span.links
        assert link.context.trace_id == published.context.trace_id
        assert link.context.span_id == published.context.span_id
        assert span.parent is None  # linked, not a child: each replica fans out on its own time
        name = str(span.attributes["eventcast.replica"])
        seen[name] = seen.get(name, 0) + int(str(span.attributes["eventcast.subscribers"]))
    # Every replica fanned the 3 events out to its own subscribers: 1 on a, 2 on b; no span per delivery.
    assert seen == {"a": 3, "b": 6}
    assert len(fanouts) <= 6


async def test_no_tracer_means_no_trace_in_events(redis_server: RedisServer) -> None:
    assert telemetry.tracer is None
    async with replica("solo", redis_server.url) as a:
        sub = await Subscriber.open(f"ws://{a}/ws/events?channels=q")
        assert (await publish(f"http://{a}", batch("q", 1))).status_code == 202
        await sub.collect(1)
        await sub.close()
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    entries = client.xrange("eventcast:log")
    assert entries and all(not fields.get("trace") for _id, fields in entries)


def test_tracing_is_off_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not telemetry.enabled(Settings())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert telemetry.enabled(Settings())
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not telemetry.enabled(Settings())
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert telemetry.enabled(Settings())
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not telemetry.enabled(Settings())
