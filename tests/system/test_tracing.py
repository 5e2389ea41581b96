"""Tracing: one booking made through the gateway's HTTP API is one trace across the gateway,
booking and roster (W3C traceparent over HTTP and gRPC metadata), its log lines carry the trace id,
and an outbox message is delivered in the trace it was written in."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.gateway.app import create_app
from services.runtime import logs, tracing
from services.runtime import mongo as runtime_mongo
from services.runtime.outbox import Dispatcher, Outbox, OutboxMessage
from tests.gateway.conftest import COORDINATOR, PATIENT, Browser, gateway_settings
from tests.gateway.flow import book_video_meeting
from tests.polling import poll


@pytest.fixture
def spans():
    """Every span this process records from here on, in memory (the tracer provider is the process's
    one: OpenTelemetry installs it once; the exporter stops keeping spans after the test)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = tracing.install("test")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@pytest.fixture
def json_logs():
    """The JSON log lines written meanwhile, as the services write them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("test"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    root.removeHandler(handler)
    root.setLevel(level)


def server_spans(found: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in found if s.kind == trace.SpanKind.SERVER and s.name.startswith(prefix)]


async def test_one_booking_through_the_gateway_is_one_trace_across_the_services(spans, json_logs, system_factory):
    system = await system_factory(["identity", "roster", "booking"], overrides={"identity": {"development_login": True}})
    app = create_app(gateway_settings(system))
    browser = Browser(app)
    try:
        await browser.login(COORDINATOR)
        booking = await book_video_meeting(browser, PATIENT)
        # What a person types into a search stays out of the spans (the query string is dropped).
        assert (await browser.get("/api/v1/directory/people", params={"name": PATIENT})).status_code < 500
    finally:
        await browser.close()
        await app.state.backends.close()

    def booking_trace() -> list[ReadableSpan]:
        done = spans.get_finished_spans()
        http = [s for s in done if s.kind == trace.SpanKind.SERVER and s.name == "POST /api/v1/bookings"]
        if not http:
            return []
        return [s for s in done if s.context.trace_id == http[0].context.trace_id]

    found = await poll(booking_trace, timeout=10, what="the booking's spans",
                       until=lambda f: server_spans(f, "/svpl.roster.v1.RosterService/"))
    roots = [s for s in found if s.parent is None]
    assert [r.name for r in roots] == ["POST /api/v1/bookings"], "one trace, started by the HTTP request"
    assert server_spans(found, "/svpl.booking.v1.BookingService/CreateBooking")
    assert server_spans(found, "/svpl.roster.v1.RosterService/")
    # Each gRPC server span's parent is a span of the same trace (the caller's client span).
    ids = {s.context.span_id for s in found}
    assert all(s.parent.span_id in ids for s in found if s.parent is not None)
    assert booking["meeting_id"]
    recorded = " ".join(f"{s.name} {dict(s.attributes or {})}" for s in spans.get_finished_spans())
    assert "/api/v1/directory/people" in recorded and PATIENT not in recorded, "no personnummer in any span"

    trace_id = trace.format_trace_id(roots[0].context.trace_id)
    lines = [line for line in json_logs() if line.get("trace_id") == trace_id]
    assert lines and all(line["span_id"] for line in lines), "a log line written in the request carries its trace"


async def test_an_outbox_message_is_delivered_in_the_trace_it_was_written_in(spans, mongo):
    client = runtime_mongo.connect(mongo.uri)
    name = "t_trace_outbox_" + uuid.uuid4().hex[:8]
    delivered: list[trace.SpanContext] = []

    class Receiver:
        async def deliver(self, message: OutboxMessage) -> None:
            delivered.append(trace.get_current_span().get_span_context())

    try:
        outbox = Outbox(client[name])
        with trace.get_tracer("test").start_as_current_span("a booking") as writer:
            await outbox.add(None, "test", {"n": 1})
        await Dispatcher(outbox, {"test": Receiver()}).run_once()  # outside any span, later
    finally:
        await client.drop_database(name)
        await client.close()
    assert delivered[0].trace_id == writer.get_span_context().trace_id
    delivery = next(s for s in spans.get_finished_spans() if s.name == "outbox deliver test")
    assert delivery.parent is not None and delivery.parent.span_id == writer.get_span_context().span_id
