"""The gateway's HTTP hardening: security headers (strict CSP), request body limit, CSRF
double-submit check, login rate limits, and the session cookie.

Written as small pure-ASGI middleware, one job each, because they must also guard requests that
no route matches (and must stop an oversized body while it streams, before any handler reads it).
`create_app` stacks them, outermost first: ForwardedFor (the client address), RequestIdAndHeaders
(request id, security headers, the CSRF cookie), CsrfCheck, BodyLimit, RouteMetrics (metrics and
the log line by route template).
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, cast

from fastapi import Request
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from services.gateway.problems import Problem
from services.runtime import auth, logs

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

log = logging.getLogger("svpl.gateway")

HTTP_REQUESTS = Counter("svpl_http_requests_total", "Gateway HTTP requests, by route template, method and status.",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("svpl_http_request_seconds", "Gateway HTTP request handling time, by route template.",
                         ["route", "method"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

SESSION_COOKIE = "svpl_session"
CSRF_COOKIE = "svpl_csrf"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; font-src 'self'; "
    "manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(self), microphone=(self), geolocation=(), payment=(), usb=()"),
]


def cookie_header(name: str, value: str, *, http_only: bool = True, max_age: int | None = None,
                  path: str = "/") -> str:
    """Every gateway cookie is Secure and SameSite=Strict; the session cookie is also HttpOnly."""
    parts = [f"{name}={value}", f"Path={path}", "Secure", "SameSite=Strict"]
    if http_only:
        parts.append("HttpOnly")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


def _cookies(scope: Scope) -> dict[str, str]:
    jar = SimpleCookie()
    for key, value in scope.get("headers", ()):
        if key == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001, S110 - a malformed cookie header is ignored
                pass
    return {k: m.value for k, m in jar.items()}


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


class TrustedProxies:
    """The networks of the TLS terminators / ingress whose forwarded headers are believed."""

    def __init__(self, networks: list[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __contains__(self, host: object) -> bool:
        try:
            address = ipaddress.ip_address(str(host))
        except ValueError:
            return False
        return any(address in network for network in self.networks)


# The scope key holding the TCP peer's address, before any forwarded header was applied.
PEER = "svpl.peer"


class ForwardedFor:
    """X-Forwarded-For and -Proto are believed only when the TCP peer is a trusted proxy: then the
    client address (rate limits, BankID's end-user IP) is the rightmost address in X-Forwarded-For
    that is not itself a trusted proxy. The parsing is uvicorn's ProxyHeadersMiddleware; this keeps
    the peer it replaces (`scope[PEER]`), since a SITHS login must know it came through the TLS
    terminator, not merely from someone claiming to be behind it."""

    def __init__(self, app: ASGIApp, trusted: list[str]) -> None:
        self.app = app
        # uvicorn types an ASGI app's scope and messages as its own TypedDicts, starlette as plain mappings:
        # the same interface, which neither library's types convert to the other's.
        self.proxied: ASGIApp = cast(
            ASGIApp, ProxyHeadersMiddleware(cast("ASGI3Application", app), trusted_hosts=trusted)
        ) if trusted else app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            scope[PEER] = client[0] if client else ""
        await self.proxied(scope, receive, send)


def peer(request: Request) -> str:
    """The address of the TCP peer (a trusted proxy, or the client itself)."""
    return request.scope.get(PEER, "")


def client_address(request: Request) -> str:
    """The client's address: the peer's, or the one a trusted proxy reported."""
    return request.client.host if request.client else ""


class RequestIdAndHeaders:
    """The request id (X-Request-Id, else a new one) for the logs and problem details of the request,
    or of the WebSocket; on every HTTP response the security headers, the request id, no-store for
    the API, and a new CSRF cookie when the browser has none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = _header(scope, b"x-request-id")[:64] or uuid.uuid4().hex
        logs.request_id_var.set(rid)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        new_csrf = "" if _cookies(scope).get(CSRF_COOKIE) else secrets.token_urlsafe(32)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS + [(b"x-request-id", rid.encode())]
                if scope["path"].startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                if new_csrf:
                    headers.append((b"set-cookie", cookie_header(CSRF_COOKIE, new_csrf, http_only=False).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _refuse(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
    await problem.response(scope["path"])(scope, receive, send)


class CsrfCheck:
    """A state-changing API request must carry the svpl_csrf cookie's value in X-CSRF-Token
    (double submit): 403 before anything else reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS and scope["path"].startswith("/api/"):
            sent = _header(scope, CSRF_HEADER.encode())
            expected = _cookies(scope).get(CSRF_COOKIE, "")
            if not expected or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
                await _refuse(Problem(403, "CSRF-token saknas eller är fel: skicka kakan svpl_csrf:s värde "
                                           "i huvudet X-CSRF-Token", reason="CSRF"), scope, receive, send)
                return
        await self.app(scope, receive, send)


class _TooLarge(StarletteHTTPException):
    """Raised by a body read over the limit. An HTTPException, so FastAPI's body parsing passes it
    on (instead of answering 400) and the app answers 413 itself."""


class BodyLimit:
    """Requests larger than `max_body_bytes` are refused with 413: by their content-length before
    any handler runs; a streamed state-changing body of unknown length is read (up to the limit)
    before any handler runs; and any body read past the limit answers 413, whatever the framework
    made of the failed read."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    def _too_large(self) -> Problem:
        return Problem(413, f"begäran är större än {self.max_body} byte")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length:
            if not length.isdigit():
                await _refuse(Problem(400, "content-length: inte ett tal"), scope, receive, send)
                return
            if int(length) > self.max_body:
                await _refuse(self._too_large(), scope, receive, send)
                return
        elif scope["method"] in UNSAFE_METHODS:
            # A streamed body of unknown length: read it (up to the limit) before any handler runs, so a
            # route that never reads its body (logout, open, start) cannot act on an oversized request.
            body = await self._read_within_limit(receive)
            if body is None:
                return  # the client went away
            if len(body) > self.max_body:
                await _refuse(self._too_large(), scope, receive, send)
                return
            receive = _buffered(body, receive)
        await self._limit_reads(scope, receive, send)

    async def _read_within_limit(self, receive: Receive) -> bytes | None:
        """The whole body, or its first chunks past the limit; None when the client went away."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body:
                break
        return b"".join(chunks)

    async def _limit_reads(self, scope: Scope, receive: Receive, send: Send) -> None:
        received, too_large, started, swallow = 0, False, False, False

        async def receive_limited() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True
                    raise _TooLarge(413, self._too_large().detail)
            return message

        async def send_checked(message: Message) -> None:
            nonlocal started, swallow
            if swallow:
                return
            if message["type"] == "http.response.start":
                if too_large:
                    # Whatever the app answers to a failed body read, the truth is 413.
                    swallow = True
                    await _refuse(self._too_large(), scope, receive, send)
                    return
                started = True
            await send(message)

        try:
            await self.app(scope, receive_limited, send_checked)
        except _TooLarge:
            if not started and not swallow:
                await _refuse(self._too_large(), scope, receive, send)


def _buffered(body: bytes, receive: Receive) -> Receive:
    """The body read ahead first, then the real channel (for the disconnect)."""
    buffered: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return buffered.pop() if buffered else await receive()

    return replay


class RouteMetrics:
    """Metrics by route template (never the raw path: ids would explode the label set), one log line
    per request. Inside the guards above: a request they refuse is neither counted nor logged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, began = 0, time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self._observe(scope, status, time.perf_counter() - began)

    @staticmethod
    def _observe(scope: Scope, status: int, seconds: float) -> None:
        # The router records the matched route in the scope (the same dict) while it handles the request.
        route = getattr(scope.get("route"), "path", "") or "unmatched"
        HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
        HTTP_LATENCY.labels(route, scope["method"]).observe(seconds)
        log.info("%s %s %s", scope["method"], route, status,
                 extra={"svpl_status": status, "svpl_ms": round(seconds * 1000, 1)})


class RateLimiter:
    """At most `limit` events per key in any `window` seconds (sliding window, in memory).

    Hand-written: a dozen lines; the libraries for this pull in storage backends the gateway
    does not need. Per gateway replica, which is what a login brute-force limit needs."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, collections.deque] = {}

    def hit(self, key: str) -> float:
        """Record an attempt; 0 when allowed, else the seconds to wait."""
        now = time.monotonic()
        events = self._events.setdefault(key, collections.deque())
        while events and now - events[0] >= self.window:
            events.popleft()
        if len(events) >= self.limit:
            return self.window - (now - events[0])
        events.append(now)
        if len(self._events) > 100_000:  # bound memory under a flood of addresses
            self._events = {k: v for k, v in self._events.items() if v and now - v[-1] < self.window}
        return 0.0


@dataclass(frozen=True)
class Session:
    token: str
    caller: auth.Caller
    expires_at: int = 0  # the token's exp (seconds since the epoch)


async def session_from(conn, keys: auth.KeySet) -> Session:
    """The person behind the session cookie, verified locally with identity's public keys and the
    revoked sessions this process follows (auth.Revocations: a logout anywhere reaches it within
    SVPL_REVOCATION_POLL_SECONDS). As a FastAPI dependency: dependencies.Me."""
    token = conn.cookies.get(SESSION_COOKIE, "")
    if not token:
        raise Problem(401, "logga in först")
    try:
        claims = await auth.decode_token(keys, token, typ=auth.SESSION)
    except Exception as exc:
        from services.runtime.errors import Unauthenticated, Unavailable

        if isinstance(exc, Unauthenticated):
            raise Problem(401, f"inloggningen gäller inte: {exc.message}") from None
        if isinstance(exc, Unavailable):  # identity's keys not fetched yet and identity away: retry
            raise Problem(503, "en tjänst är tillfälligt otillgänglig: försök igen om en stund") from None
        raise
    return Session(token, auth.caller_from_claims(claims, token), int(claims["exp"]))
