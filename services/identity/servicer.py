"""IdentityService: thin gRPC layer (decode, call the domain, encode)."""

from __future__ import annotations

from svpl.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity.tokens import KeyRing
from services.runtime import auth
from services.runtime.auth import ANYONE, LOGGED_IN, persons_with, services

STAFF = persons_with(auth.ROLE_STAFF)

ACCESS = {
    "ValidatePersonnummer": LOGGED_IN | services("booking", "roster", "support", "gateway"),
    "ValidateHsaId": LOGGED_IN | services("booking", "roster", "support", "gateway"),
    "LookupPerson": STAFF | services("booking", "roster", "support"),
    "SearchDirectory": STAFF,
    "LoginSiths": services("gateway"),
    "StartBankIdLogin": services("gateway"),
    "GetBankIdQr": services("gateway"),
    "CollectBankIdLogin": services("gateway"),
    "CancelBankIdLogin": services("gateway"),
    "Start1177Login": services("gateway"),
    "Complete1177Login": services("gateway"),
    "DevelopmentLogin": services("gateway"),
    "IssueJoinToken": services("roster"),
    "VerifyToken": services("booking", "roster", "media", "support", "gateway"),
    "RevokeTokens": services("roster"),
    "GetSigningKeys": ANYONE,
    "ListAccessRecords": persons_with(auth.ROLE_ACCESS_LOG),
}


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def GetSigningKeys(self, request, context):
        return identity_pb2.GetSigningKeysResponse(jwks_json=self._keys.jwks_json())
