"""Tokens: session tokens at login, join tokens for roster, verification with the
revocation list, and revocation (durable, in identity's own database).

Revocation scopes (one document each, `_id` = the scope): a single token id
(`jti:<id>`), every join token of a meeting (`meeting:<id>`), and every join token of
one participant in a meeting (`participant:<meeting>:<participant>`). A revoked scope
stays revoked: a closed room never opens again and a removed participant never gets
back in, so issuing a join token into a revoked scope is refused too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import jwt
from pymongo.errors import DuplicateKeyError

from services.identity.tokens import KeyRing
from services.runtime import auth, names
from services.runtime.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from services.runtime.mongo import DURABLE

# Login methods as token "amr" claims.
SITHS = "siths"
BANKID = "bankid"
E_SERVICES_1177 = "e_services_1177"
DEVELOPMENT = "development"

HSA_ID = "hsa_id"
PERSONNUMMER = "personnummer"

# How far behind its cursor a revoked-sessions answer looks again (writes in flight when it was read).
REVOCATION_OVERLAP = dt.timedelta(seconds=30)


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Principal:
    person_id: str  # HSA-id, or personnummer normalised to 12 digits
    id_kind: str  # HSA_ID | PERSONNUMMER
    name: str
    method: str  # SITHS | BANKID | E_SERVICES_1177 (a development login names the method it pretends)
    assurance: str  # eIDAS level: "high" | "substantial" | "low", or "development"
    roles: tuple[str, ...] = ()
    organization: str = ""
    unit: str = ""


@dataclass(frozen=True)
class Session:
    token: str
    token_id: str
    expires_at: dt.datetime
    principal: Principal


@dataclass(frozen=True)
class Verified:
    kind: str  # auth.SESSION | auth.JOIN | auth.SERVICE
    token_id: str
    expires_at: dt.datetime
    principal: Principal | None = None
    meeting_id: str = ""
    participant_id: str = ""
    media_instance: str = ""
    service: str = ""
    claims: dict = field(default_factory=dict, repr=False)


def _scopes(claims: dict) -> list[str]:
    scopes = [f"jti:{claims['jti']}"]
    if claims.get("typ") == auth.JOIN:
        scopes += [f"meeting:{claims.get('mid', '')}", f"participant:{claims.get('mid', '')}:{claims.get('pid', '')}"]
    return scopes


class TokenService:
    def __init__(self, keys: KeyRing, db, session_ttl: dt.timedelta, join_default_ttl: dt.timedelta,
                 join_max_ttl: dt.timedelta) -> None:
        self._keys = keys
        self._keyset = keys.keyset()
        self._revocations = db.get_collection("revocations", write_concern=DURABLE)
        self._session_ttl = session_ttl
        self._join_default_ttl = join_default_ttl
        self._join_max_ttl = join_max_ttl

    async def ensure_indexes(self) -> None:
        await self._revocations.create_index("at")

    # ------------------------------------------------------------------ issue

    def issue_session(self, principal: Principal) -> Session:
        token, jti, expires = self._keys.issue_session_token(
            person_id=principal.person_id, id_kind=principal.id_kind, name=principal.name,
            method=principal.method, assurance=principal.assurance, roles=list(principal.roles),
            organization=principal.organization, unit=principal.unit, ttl=self._session_ttl,
        )
        return Session(token, jti, expires, principal)

    async def issue_join(self, *, meeting_id: str, participant_id: str, media_instance: str,
                         ttl_seconds: int) -> tuple[str, str, dt.datetime]:
        for name, value in (("meeting_id", meeting_id), ("participant_id", participant_id),
                            ("media_instance", media_instance)):
            if not value.strip():
                raise InvalidArgument(name, "is required")
        if ttl_seconds < 0:
            raise InvalidArgument("ttl_seconds", "must not be negative (0 means the default)")
        ttl = dt.timedelta(seconds=ttl_seconds) if ttl_seconds else self._join_default_ttl
        if ttl > self._join_max_ttl:
            raise InvalidArgument("ttl_seconds", f"at most {int(self._join_max_ttl.total_seconds())} seconds")
        revoked = await self._revocations.find_one(
            {"_id": {"$in": [f"meeting:{meeting_id}", f"participant:{meeting_id}:{participant_id}"]}}
        )
        if revoked:
            what = "the meeting's" if revoked["_id"].startswith("meeting:") else "this participant's"
            raise FailedPrecondition(f"{what} join tokens are revoked: no new join token", reason="REVOKED")
        return self._keys.issue_join_token(
            meeting_id=meeting_id, participant_id=participant_id, media_instance=media_instance, ttl=ttl
        )

    # ------------------------------------------------------------------ verify

    async def verify(self, token: str, expected_kind: str | None = None) -> Verified:
        token = (token or "").strip()
        if not token:
            raise InvalidArgument("token", "is required")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthenticated("token is malformed") from None
        kind = unverified.get("typ")
        audience = auth.MEDIA_AUDIENCE if kind == auth.JOIN else auth.AUDIENCE
        claims = await auth.decode_token(self._keyset, token, audience=audience)
        if expected_kind and claims["typ"] != expected_kind:
            raise Unauthenticated(f"expected a {expected_kind} token, got a {claims['typ']} token")
        revoked = await self._revocations.find_one({"_id": {"$in": _scopes(claims)}}, {"_id": 1})
        if revoked:
            raise Unauthenticated("token has been revoked")
        expires = dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc)
        verified = Verified(kind=claims["typ"], token_id=claims["jti"], expires_at=expires, claims=claims)
        if claims["typ"] == auth.SESSION:
            principal = Principal(
                person_id=claims["sub"], id_kind=claims.get("idk", ""), name=claims.get("name", ""),
                method=claims.get("amr", ""), assurance=claims.get("acr", ""), roles=tuple(claims.get("roles", ())),
                organization=claims.get("org", ""), unit=claims.get("unit", ""),
            )
            return Verified(**{**verified.__dict__, "principal": principal})
        if claims["typ"] == auth.JOIN:
            return Verified(**{**verified.__dict__, "meeting_id": claims.get("mid", ""),
                               "participant_id": claims.get("pid", ""), "media_instance": claims.get("inst", "")})
        if claims["typ"] == auth.SERVICE:
            return Verified(**{**verified.__dict__, "service": claims["sub"].removeprefix("service:")})
        raise Unauthenticated("unknown token type")

    # ------------------------------------------------------------------ revoked sessions

    async def revoked_sessions(self, cursor: str = "") -> tuple[list[tuple[str, dt.datetime]], str]:
        """(token id, expiry) of the session tokens revoked since the cursor, and the next cursor.

        A revoked token's expiry is bounded by its revocation time plus the session lifetime (it was
        issued before it was revoked). The window reaches REVOCATION_OVERLAP behind the cursor, so a
        revocation written while the previous answer was read is not missed."""
        now = dt.datetime.now(dt.timezone.utc)
        since = now - self._session_ttl
        if cursor:
            try:
                since = max(since, dt.datetime.fromisoformat(cursor) - REVOCATION_OVERLAP)
            except ValueError:
                raise InvalidArgument("cursor", "not a cursor this service gave") from None
        found = self._revocations.find({"_id": {"$gt": "jti:", "$lt": "jti;"}, "at": {"$gte": since}},
                                       {"_id": 1, "at": 1})
        sessions = [(doc["_id"].removeprefix("jti:"), _aware(doc["at"]) + self._session_ttl)
                    async for doc in found]
        return sessions, now.isoformat()

    # ------------------------------------------------------------------ revoke

    async def revoke(self, *, token_id: str = "", meeting_id: str = "", participant_id: str = "",
                     reason: str = "", actor: str = "") -> str:
        token_id, meeting_id, participant_id = token_id.strip(), meeting_id.strip(), participant_id.strip()
        if token_id and (meeting_id or participant_id):
            raise InvalidArgument("token_id", "give either token_id, or meeting_id (with an optional participant_id)")
        if participant_id and not meeting_id:
            raise InvalidArgument("meeting_id", "is required with participant_id")
        if token_id:
            scope = f"jti:{token_id}"
        elif participant_id:
            scope = f"participant:{meeting_id}:{participant_id}"
        elif meeting_id:
            scope = f"meeting:{meeting_id}"
        else:
            raise InvalidArgument("token_id", "give token_id, or meeting_id (with an optional participant_id)")
        doc = {"_id": scope, "reason": reason[:500], "actor": actor, "at": dt.datetime.now(dt.timezone.utc)}
        try:
            await self._revocations.insert_one(doc)
        except DuplicateKeyError:
            pass  # already revoked: revoking again changes nothing
        return scope


def staff_principal(person, method: str, assurance: str) -> Principal:
    """A staff member's principal from their directory entry (services.identity.directory.DirectoryPerson)."""
    return Principal(person_id=person.hsa_id, id_kind=HSA_ID, name=person.name, method=method, assurance=assurance,
                     roles=tuple(person.roles()), organization=person.organization, unit=person.unit)


def citizen_principal(personnummer: str, name: str, method: str, assurance: str) -> Principal:
    return Principal(person_id=personnummer, id_kind=PERSONNUMMER, name=names.displayable(name), method=method,
                     assurance=assurance,
                     roles=(auth.ROLE_CITIZEN,))
