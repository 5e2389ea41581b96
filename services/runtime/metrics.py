"""Prometheus metrics: the RPC metrics every service shares, served on a separate port."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPC_HANDLED = Counter(
    "svpl_grpc_server_handled_total",
    "RPCs completed, by service, method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_LATENCY = Histogram(
    "svpl_grpc_server_handling_seconds",
    "RPC handling time, by service and method.",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def start_metrics_server(host: str, port: int) -> int:
    """Serve /metrics; returns the bound port (port 0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_address[1]
