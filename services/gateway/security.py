"""The gateway's HTTP hardening: security headers (strict CSP), request body limit, CSRF
double-submit check, login rate limits, and the session cookie.

Written as small pure-ASGI middleware because they must also guard requests that no route
matches (and must stop an oversized body while it streams, before any handler reads it).
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

from fastapi import Request
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from services.gateway.problems import Problem
from services.runtime import auth, logs

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
            except Exception:  # noqa: BLE001 - a malformed cookie header is ignored
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
        self.proxied = ProxyHeadersMiddleware(app, trusted_hosts=trusted) if trusted else app

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


class _TooLarge(Exception):
    pass


class HardeningMiddleware:
    """Request id, security headers, the CSRF cookie, the CSRF check and the body size limit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = _header(scope, b"x-request-id")[:64] or uuid.uuid4().hex
        logs.request_id_var.set(rid)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        cookies = _cookies(scope)
        new_csrf = "" if cookies.get(CSRF_COOKIE) else secrets.token_urlsafe(32)
        started = too_large = swallow = False
        status, began = 0, time.perf_counter()

        async def emit(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                headers = list(message.get("headers", [])) + SECURITY_HEADERS + [(b"x-request-id", rid.encode())]
                if scope["path"].startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                if new_csrf:
                    headers.append((b"set-cookie", cookie_header(CSRF_COOKIE, new_csrf, http_only=False).encode()))
                message = {**message, "headers": headers}
            await send(message)

        async def reply(problem: Problem) -> None:
            await problem.response(scope["path"])(scope, receive, emit)

        def too_large_problem() -> Problem:
            return Problem(413, f"begäran är större än {self.max_body} byte")

        async def send_wrapped(message: Message) -> None:
            nonlocal swallow
            if swallow:
                return
            if message["type"] == "http.response.start" and too_large:
                # The framework turns a failed body read into its own error; the truth is 413.
                swallow = True
                await reply(too_large_problem())
                return
            await emit(message)

        if scope["method"] in UNSAFE_METHODS and scope["path"].startswith("/api/"):
            sent = _header(scope, CSRF_HEADER.encode())
            expected = cookies.get(CSRF_COOKIE, "")
            if not expected or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
                await reply(Problem(403, "CSRF-token saknas eller är fel: skicka kakan svpl_csrf:s värde "
                                         "i huvudet X-CSRF-Token", reason="CSRF"))
                return
        length = _header(scope, b"content-length")
        if length:
            if not length.isdigit():
                await reply(Problem(400, "content-length: inte ett tal"))
                return
            if int(length) > self.max_body:
                await reply(too_large_problem())
                return
        elif scope["method"] in UNSAFE_METHODS:
            # A streamed body of unknown length: read it (up to the limit) before any handler runs, so a
            # route that never reads its body (logout, open, start) cannot act on an oversized request.
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.max_body:
                    await reply(too_large_problem())
                    return
            buffered: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
            upstream = receive

            async def receive() -> Message:  # noqa: F811 - the buffered body first, then the real channel
                return buffered.pop() if buffered else await upstream()

        received = 0

        async def receive_limited() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True
                    raise _TooLarge
            return message

        try:
            await self.app(scope, receive_limited, send_wrapped)
        except _TooLarge:
            if not started:
                await reply(too_large_problem())
        finally:
            self._observe(scope, status, time.perf_counter() - began)

    @staticmethod
    def _observe(scope: Scope, status: int, seconds: float) -> None:
        """Metrics by route template (never the raw path: ids would explode the label set), one log line."""
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


async def session_from(conn) -> Session:
    """The person behind the session cookie, verified locally with identity's public keys and the
    revoked sessions this process follows (auth.Revocations: a logout anywhere reaches it within
    SVPL_REVOCATION_POLL_SECONDS)."""
    token = conn.cookies.get(SESSION_COOKIE, "")
    if not token:
        raise Problem(401, "logga in först")
    keys = conn.app.state.backends.keys
    try:
        claims = await auth.decode_token(keys, token, typ=auth.SESSION)
    except Exception as exc:  # noqa: BLE001 - Unauthenticated, or identity unreachable for the keys
        from services.runtime.errors import Unauthenticated, Unavailable

        if isinstance(exc, Unauthenticated):
            raise Problem(401, f"inloggningen gäller inte: {exc.message}") from None
        if isinstance(exc, Unavailable):  # identity's keys not fetched yet and identity away: retry
            raise Problem(503, "en tjänst är tillfälligt otillgänglig: försök igen om en stund") from None
        raise
    return Session(token, auth.caller_from_claims(claims, token), int(claims["exp"]))


async def current_session(request: Request) -> Session:
    """FastAPI dependency: the logged-in person of this request (401 problem otherwise)."""
    return await session_from(request)
