"""Who is calling, and the one declaration of who may call what.

Every request carries `authorization: Bearer <jwt>` metadata: a person's session
token (relayed by the gateway) or a service's own token. Tokens are Ed25519 JWTs
signed by identity; they are verified here, locally, against identity's public keys
(JWKS, fetched once and refreshed when an unknown key id appears).

Each servicer module declares ACCESS: {method name: Rule}. The shared interceptor
refuses a call whose caller the rule does not admit, before the servicer runs; the
domain then checks what only it can (for example "the coordinator of *this* meeting").
A service whose ACCESS lacks a method of its contract does not start.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import jwt
from jwt.algorithms import AllowedPublicKeys

from services.runtime.errors import PermissionDenied, Unauthenticated, Unavailable
from services.runtime.tasks import cancel_and_wait

log = logging.getLogger("svpl.auth")

ISSUER = "svpl-identity"
AUDIENCE = "svpl"
MEDIA_AUDIENCE = "svpl-media"
ALGORITHM = "EdDSA"

# Token "typ" claims.
SESSION = "session"
JOIN = "join"
SERVICE = "service"

# Roles a person can hold (from the directory, or "citizen" for BankID / 1177).
ROLE_STAFF = "staff"
ROLE_REGION_STAFF = "region_staff"
ROLE_MUNICIPALITY_STAFF = "municipality_staff"
ROLE_COORDINATOR = "coordinator"
ROLE_SUPPORT_DESK = "support_desk"
ROLE_ACCESS_LOG = "access_log"
ROLE_CITIZEN = "citizen"


@dataclass(frozen=True)
class Caller:
    kind: str = "anonymous"  # anonymous | person | service
    id: str = ""  # HSA-id, personnummer (12 digits) or service name
    id_kind: str = ""  # hsa_id | personnummer | service
    name: str = ""
    method: str = ""  # siths | bankid | e_services_1177 | development
    assurance: str = ""
    roles: frozenset[str] = frozenset()
    organization: str = ""
    unit: str = ""
    token: str = field(default="", repr=False)
    token_id: str = ""

    @property
    def is_person(self) -> bool:
        return self.kind == "person"

    @property
    def is_service(self) -> bool:
        return self.kind == "service"

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    def actor(self) -> str:
        """How the access log names this caller (a personnummer is kept, the log is patient data)."""
        return f"service:{self.id}" if self.is_service else (self.id or "anonymous")


ANONYMOUS = Caller()
current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("svpl_caller", default=ANONYMOUS)


def caller() -> Caller:
    return current_caller.get()


@dataclass(frozen=True)
class Rule:
    """Who may call a method. persons: None = no person; empty = any logged-in person;
    otherwise a person holding one of these roles. services: service names allowed."""

    persons: frozenset[str] | None = None
    services: frozenset[str] = frozenset()
    anonymous: bool = False

    def __or__(self, other: Rule) -> Rule:
        if self.persons is None:
            persons = other.persons
        elif other.persons is None:
            persons = self.persons
        elif not self.persons or not other.persons:
            persons = frozenset()
        else:
            persons = self.persons | other.persons
        return Rule(persons, self.services | other.services, self.anonymous or other.anonymous)

    def admits(self, who: Caller) -> bool:
        if self.anonymous:
            return True
        if who.is_service:
            return who.id in self.services
        if who.is_person and self.persons is not None:
            return not self.persons or who.has_role(*self.persons)
        return False

    def check(self, who: Caller, method: str) -> None:
        if self.admits(who):
            return
        if who.kind == "anonymous":
            raise Unauthenticated("log in first: this call needs a valid session token")
        raise PermissionDenied(f"{who.kind} {who.actor() if who.is_service else ''}".strip() + f" may not call {method}")


ANYONE = Rule(anonymous=True)
LOGGED_IN = Rule(persons=frozenset())


def persons_with(*roles: str) -> Rule:
    return Rule(persons=frozenset(roles))


def services(*names: str) -> Rule:
    return Rule(services=frozenset(names))


# ---------------------------------------------------------------- verification

JwksFetcher = Callable[[], Awaitable[str]]


# (cursor) -> (revoked session token ids with their expiry in seconds since the epoch, next cursor)
RevocationFetcher = Callable[[str], Awaitable[tuple[list[tuple[str, float]], str]]]


class Revocations:
    """Session tokens revoked at identity (logout), followed by every process that verifies tokens
    locally, so a logout reaches every service within `poll` seconds.

    Chosen over short-lived access tokens refreshed by the gateway: a person's token is relayed
    from the gateway through services to services (support → roster), so every hop would need the
    refresh; and the list is small (revoked, unexpired sessions), read incrementally with a cursor.
    When the list could not be fetched for `max_staleness` seconds (identity away), session tokens
    are refused as UNAVAILABLE (retryable) rather than believed: failing closed, bounded by that."""

    def __init__(self, fetch: RevocationFetcher, poll: float = 2.0, max_staleness: float = 30.0) -> None:
        self._fetch = fetch
        self.poll = poll
        self.max_staleness = max_staleness
        self._revoked: dict[str, float] = {}  # token id -> its expiry (epoch seconds)
        self._cursor = ""
        self._synced_at = 0.0  # monotonic time of the last successful fetch
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None

    async def _sync(self) -> None:
        revoked, cursor = await self._fetch(self._cursor)
        now = time.time()
        self._revoked.update((tid, exp) for tid, exp in revoked if exp > now)
        self._revoked = {tid: exp for tid, exp in self._revoked.items() if exp > now}
        self._cursor = cursor
        self._synced_at = time.monotonic()

    async def _follow(self) -> None:
        failing = False
        while True:
            try:
                await self._sync()
                if failing:
                    log.info("revocation list reachable again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - identity away: keep the last list, retry
                if not failing:
                    log.warning("revocation list unreachable (%s): keeping the last one for at most %.0fs",
                                exc.__class__.__name__, self.max_staleness)
                failing = True
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            await asyncio.sleep(self.poll)

    async def start(self) -> None:
        """Start following (idempotent); returns after the first fetch was tried."""
        if self._task is None:
            self._first = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._follow(), name="svpl-revocations")
        await asyncio.shield(cast(asyncio.Future[None], self._first))  # set with the task

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task, "svpl-revocations")
            self._task = None

    def add(self, token_id: str, expires_at: float) -> None:
        """A revocation this process made itself (the gateway's logout): effective here at once."""
        self._revoked[token_id] = expires_at

    def is_revoked(self, token_id: str) -> bool:
        return token_id in self._revoked

    async def check(self, token_id: str) -> None:
        """Unauthenticated when the session token is revoked; Unavailable when the list is too old."""
        if self._first is None or not self._first.done():  # once started, every call skips this
            await self.start()
        if token_id in self._revoked:
            raise Unauthenticated("token has been revoked (logged out): log in again")
        if time.monotonic() - self._synced_at > self.max_staleness:
            raise Unavailable("cannot confirm that the session is still valid (identity unreachable); try again")


class KeySet:
    """Identity's public keys by key id; refreshed (at most every `min_refresh` s) on an unknown kid.
    With `revocations`, session tokens are also checked against the revocation list."""

    def __init__(self, fetch: JwksFetcher, min_refresh: float = 5.0, revocations: Revocations | None = None) -> None:
        self._fetch = fetch
        self._keys: dict[str | None, AllowedPublicKeys] = {}  # a key without a kid is kept under None
        self._fetched_at = 0.0
        self._min_refresh = min_refresh
        self._lock = asyncio.Lock()
        self.revocations = revocations

    async def close(self) -> None:
        if self.revocations is not None:
            await self.revocations.close()

    @classmethod
    def static(cls, jwks_json: str) -> KeySet:
        async def fetch() -> str:
            return jwks_json

        return cls(fetch)

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._min_refresh and self._keys:
                return
            jwks = jwt.PyJWKSet.from_json(await self._fetch())
            self._keys = {k.key_id: k.key for k in jwks.keys}
            self._fetched_at = time.monotonic()

    async def key(self, kid: str) -> AllowedPublicKeys:
        if kid not in self._keys:
            await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthenticated("token signed with an unknown key") from None


async def decode_token(keys: KeySet, token: str, audience: str = AUDIENCE, typ: str | None = None) -> dict[str, Any]:
    """Verify signature, issuer, audience, expiry and type; return the claims."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthenticated("token is malformed") from None
    if header.get("alg") != ALGORITHM or not header.get("kid"):
        raise Unauthenticated("token is not an svpl token")
    key = await keys.key(header["kid"])
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "jti", "sub", "typ"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token has expired: log in again") from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"token is invalid ({exc.__class__.__name__})") from None
    if typ is not None and claims.get("typ") != typ:
        raise Unauthenticated(f"expected a {typ} token")
    if claims.get("typ") == SESSION and keys.revocations is not None:
        await keys.revocations.check(claims["jti"])
    return claims


def caller_from_claims(claims: dict[str, Any], token: str) -> Caller:
    if claims["typ"] == SERVICE:
        return Caller(kind="service", id=claims["sub"].removeprefix("service:"), id_kind="service",
                      token=token, token_id=claims["jti"])
    if claims["typ"] == SESSION:
        return Caller(
            kind="person",
            id=claims["sub"],
            id_kind=claims.get("idk", ""),
            name=claims.get("name", ""),
            method=claims.get("amr", ""),
            assurance=claims.get("acr", ""),
            roles=frozenset(claims.get("roles", ())),
            organization=claims.get("org", ""),
            unit=claims.get("unit", ""),
            token=token,
            token_id=claims["jti"],
        )
    raise Unauthenticated("this token cannot be used to call services")


async def authenticate(keys: KeySet | None, metadata: Iterable[tuple[str, str | bytes]]) -> Caller:
    """The caller named by the request's bearer token, or ANONYMOUS when there is none."""
    token = ""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            token = value[7:].strip()
    if not token or keys is None:
        return ANONYMOUS
    claims = await decode_token(keys, token)
    return caller_from_claims(claims, token)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata that carries a token."""
    return (("authorization", f"Bearer {token}"),) if token else ()
