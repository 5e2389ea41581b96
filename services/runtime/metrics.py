"""Prometheus metrics: the RPC metrics every service shares, served on a separate port."""

from __future__ import annotations

import jwt
from prometheus_client import Counter, Gauge, Histogram, start_http_server

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

SERVICE_TOKEN_EXPIRY = Gauge(
    "svpl_service_token_expiry_timestamp_seconds",
    "When this process's own service token expires (its exp claim, seconds since the epoch); 0 if it has none.",
)


def observe_service_token(token: str) -> None:
    """Export the service token's expiry, so an alert warns before the calls it makes start to fail.
    Only the exp claim is read (the token is this process's own; identity verifies it on every call)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False}) if token else {}
        SERVICE_TOKEN_EXPIRY.set(float(claims.get("exp", 0)))
    except (jwt.PyJWTError, TypeError, ValueError):
        SERVICE_TOKEN_EXPIRY.set(0)


def start_metrics_server(host: str, port: int) -> int:
    """Serve /metrics; returns the bound port (port 0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_address[1]
