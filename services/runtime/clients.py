"""Channels to other svpl services, through their contracts only.

Calls carry a bearer token: the person's own (relayed) or this service's, the request id and,
when tracing is on, the W3C traceparent. Transient UNAVAILABLE is retried by gRPC's own retry
policy. With TLS configured a channel is mutually authenticated and follows certificate rotation
(services/runtime/tls.py).
"""

from __future__ import annotations

import json

import grpc

from services.runtime import auth, errors, logs, tracing
from services.runtime.config import ServiceSettings
from services.runtime.tls import ClientTls, ReloadingChannel

_RETRY_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def channel(address: str, tls: ClientTls | None = None, *, server_name: str = "",
            max_message_bytes: int = 4 * 1024 * 1024) -> grpc.aio.Channel:
    """A channel to `address`: mutual TLS with `tls` (verifying `server_name` where given, else the
    address's host), plaintext without (`make run` and tests only)."""
    options: list[tuple[str, str | int]] = [
        ("grpc.service_config", _RETRY_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return ReloadingChannel(tls, lambda credentials: grpc.aio.secure_channel(address, credentials, options=options))


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Bearer token, the current request id and trace (W3C traceparent), for an outgoing call."""
    rid = logs.request_id_var.get()
    return auth.bearer(token) + ((("x-request-id", rid),) if rid else ()) + tracing.outgoing()


def as_caller() -> tuple[tuple[str, str], ...]:
    """Relay the current caller's own token (a person acting through this service)."""
    return metadata(auth.caller().token)


def service_keyset(settings: ServiceSettings, identity_channel: grpc.aio.Channel) -> auth.KeySet:
    """What a service verifies callers with: identity's keys and the revoked sessions, as configured."""
    return identity_keyset(identity_channel, settings.service_token, poll=settings.revocation_poll_seconds,
                           max_staleness=settings.revocation_max_staleness_seconds)


def identity_keyset(identity_channel: grpc.aio.Channel, service_token: str = "", *, poll: float = 2.0,
                    max_staleness: float = 30.0) -> auth.KeySet:
    """Identity's public keys, fetched over its contract; with this service's token, also the revoked
    session tokens (ListRevokedSessions), followed every `poll` seconds."""
    from svpl.identity.v1 import identity_pb2, identity_pb2_grpc

    # identity_pb2_grpc.py is generated without annotations (and has no .pyi): its constructor is untyped.
    stub = identity_pb2_grpc.IdentityServiceStub(identity_channel)  # type: ignore[no-untyped-call]  # - generated

    async def fetch_revoked(cursor: str) -> tuple[list[tuple[str, float]], str]:
        answer: identity_pb2.ListRevokedSessionsResponse = await stub.ListRevokedSessions(
            identity_pb2.ListRevokedSessionsRequest(cursor=cursor), metadata=auth.bearer(service_token), timeout=5)
        return [(s.token_id, s.expires_at.ToSeconds()) for s in answer.sessions], answer.cursor

    async def fetch() -> str:
        try:
            response: identity_pb2.GetSigningKeysResponse = await stub.GetSigningKeys(
                identity_pb2.GetSigningKeysRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            # Identity away (restarting): the caller may retry, so UNAVAILABLE, not an unhandled INTERNAL.
            raise errors.Unavailable(f"identity's signing keys are unreachable ({exc.code().name}); "
                                     "try again") from None
        return response.jwks_json

    revocations = auth.Revocations(fetch_revoked, poll, max_staleness) if service_token else None
    return auth.KeySet(fetch, revocations=revocations)
