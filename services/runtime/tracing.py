"""OpenTelemetry tracing: one trace follows a request through the gateway (HTTP), every service
(gRPC metadata) and the outbox (the message keeps the W3C traceparent it was written under).

Off unless an OTLP endpoint is configured (SVPL_OTLP_ENDPOINT, or the standard
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): then `setup` installs the SDK's
tracer provider with a batching OTLP/gRPC exporter. The gRPC spans come from the
opentelemetry-instrumentation-grpc package's grpc.aio interceptors, the HTTP spans from its FastAPI
instrumentation; the log formatter (logs.py) writes the current trace and span ids.

A span carries method names, status codes and ids only: no request body, no personnummer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
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


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The gRPC server span per call, its parent taken from the caller's traceparent metadata."""
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]  # the instrumentation is untyped


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The gRPC client span per call, with the traceparent added to the call's metadata."""
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]  # the instrumentation is untyped


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
