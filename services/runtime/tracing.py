"""OpenTelemetry tracing: one trace follows a request through the gateway (HTTP), every service
(gRPC metadata) and the outbox (the message keeps the W3C traceparent it was written under).

Off unless an OTLP endpoint is configured (SVPL_OTLP_ENDPOINT, or the standard
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): then `setup` installs the SDK's
tracer provider with a batching OTLP/gRPC exporter. The HTTP spans come from OpenTelemetry's FastAPI
instrumentation; the log formatter (logs.py) writes the current trace and span ids.

gRPC: the traceparent goes out with every call's metadata (clients.metadata, which every call
uses) and the server span is opened by the one server interceptor (server.ServiceInterceptor).
Not opentelemetry-instrumentation-grpc (0.66b2): its grpc.aio server interceptor iterates every
server-streaming handler as an async generator, so the library health service's Watch (a coroutine
writing with context.write) fails under it, and its client interceptor turns every server stream
into a bare async generator (no `read()`, and a span open as long as a meeting's watch).

A span carries method names, status codes and ids only: no request body, no personnummer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from services.runtime.config import TracingSettings

log = logging.getLogger("svpl.tracing")

# The key under which an outbox message keeps the carrier of the trace it was written in.
OUTBOX_FIELD = "trace"
_PROPAGATED = ("traceparent", "tracestate")
_tracer = trace.get_tracer("svpl")


def endpoint(settings: TracingSettings) -> str:
    return (settings.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))


def setup(service: str, settings: TracingSettings) -> TracerProvider | None:
    """Install the SDK's tracer provider exporting over OTLP/gRPC, when an endpoint is configured."""
    target = endpoint(settings)
    if not target:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = install(service, settings.trace_sample_ratio)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=target)))
    log.info("tracing to %s", target)
    return provider


def install(service: str, sample_ratio: float = 1.0) -> TracerProvider:
    """The process's tracer provider (once per process: OpenTelemetry refuses a second)."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"svpl-{service}",
                                                        "service.namespace": "svpl"}),
                              sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    trace.set_tracer_provider(provider)
    return provider


def enabled() -> bool:
    """Whether spans are recorded in this process (an SDK provider is installed)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


# The HTTP span attributes that carry the request's query string (older and current conventions).
_URL_ATTRIBUTES = ("http.url", "http.target", "url.full", "url.query")


def without_query(span: trace.Span, scope: Mapping[str, Any]) -> None:
    """An HTTP server span keeps the path, not the query string: a search's query is what a person
    typed (a name, even a personnummer), and the trace backend is no place for it."""
    attributes = getattr(span, "attributes", None) or {}
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            span.set_attribute(key, value.split("?", 1)[0])
        elif key == "url.query" and value:
            span.set_attribute(key, "")


def outgoing() -> tuple[tuple[str, str], ...]:
    """The current trace as gRPC metadata (traceparent, tracestate); nothing outside a recorded span."""
    return tuple(carrier().items())


@contextmanager
def server_span(full_method: str, metadata: Iterable[tuple[str, str | bytes]]) -> Iterator[trace.Span]:
    """The span of one served call, in the trace the caller's traceparent metadata names."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    parent = propagate.extract({k: v for k, v in metadata if k in _PROPAGATED and isinstance(v, str)})
    with _tracer.start_as_current_span(full_method, context=parent, kind=trace.SpanKind.SERVER, attributes={
            "rpc.system": "grpc", "rpc.service": service, "rpc.method": method}) as span:
        yield span


def set_grpc_status(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))


def carrier() -> dict[str, str]:
    """The current trace as W3C headers (traceparent, tracestate), for a message stored for later."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextmanager
def continued(name: str, headers: Mapping[str, Any] | None, **attributes: str) -> Iterator[None]:
    """A span `name` in the trace `headers` (a stored carrier) continues; a new trace without one."""
    parent = propagate.extract(dict(headers or {}))
    with _tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes):
        yield
