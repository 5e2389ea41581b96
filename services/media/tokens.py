"""Join and session tokens, verified by identity (signature, expiry, revocation) before any peer connection."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import grpc
from svpl.identity.v1 import identity_pb2, identity_pb2_grpc

from services.runtime import clients
from services.runtime.errors import Unauthenticated, Unavailable

_REFUSED = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
}


@dataclass(frozen=True)
class JoinGrant:
    meeting_id: str
    participant_id: str
    media_instance: str
    token_id: str
    expires_at: dt.datetime


class TokenVerifier:
    def __init__(self, channel: grpc.aio.Channel, service_token: str) -> None:
        self._stub = identity_pb2_grpc.IdentityServiceStub(channel)
        self._token = service_token

    async def _verify(self, token: str, kind: identity_pb2.TokenKind, what: str) -> identity_pb2.VerifyTokenResponse:
        if not token:
            raise Unauthenticated(f"a {what} token is required")
        try:
            return await self._stub.VerifyToken(
                identity_pb2.VerifyTokenRequest(token=token, expected_kind=kind),
                metadata=clients.metadata(self._token), timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _REFUSED:
                raise Unauthenticated(f"{what} token refused: {exc.details()}") from None
            raise Unavailable(f"cannot verify the {what} token now (identity: {exc.code().name}); try again") from None

    async def join(self, token: str) -> JoinGrant:
        r = await self._verify(token, identity_pb2.TOKEN_KIND_JOIN, "join")
        if r.kind != identity_pb2.TOKEN_KIND_JOIN or not r.meeting_id or not r.participant_id:
            raise Unauthenticated("not a join token")
        if not r.token_id or not r.HasField("expires_at"):
            raise Unauthenticated("join token lacks an id or an expiry")
        return JoinGrant(r.meeting_id, r.participant_id, r.media_instance, r.token_id,
                         r.expires_at.ToDatetime(dt.timezone.utc))

    async def session(self, token: str) -> str:
        """The person a valid session token names (its subject), as a pseudonymous key: a hash of the
        id kind and id, so what media keeps in memory (and could ever log) is no personnummer. The same
        person gets the same key from every session (logging in again does not make a new person)."""
        r = await self._verify(token, identity_pb2.TOKEN_KIND_SESSION, "session")
        if r.kind != identity_pb2.TOKEN_KIND_SESSION:
            raise Unauthenticated("not a session token")
        person = r.principal.person
        if not person.id:
            raise Unauthenticated("the session token names no person")
        return hashlib.sha256(f"svpl-media-person:{person.id_kind}:{person.id}".encode()).hexdigest()
