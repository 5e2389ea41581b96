"""What the gateway's handlers use of the app, as typed FastAPI dependencies: a handler names what it
needs in its signature (`backends: BackendsDep`, `me: Me`), HTTP routes and the events WebSocket
alike. This is the one module that reads `app.state`; `create_app` fills it.

The in-process state of one feature has its alias next to its class (realtime.EventStreamsDep), since
that module uses the aliases below too. Nothing here is state a second replica would lack for
correctness: rate limits and stream caps are per process; who is admitted where is roster's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from services.gateway.backends import Backends
from services.gateway.config import GatewaySettings
from services.gateway.security import RateLimiter, Session, TrustedProxies, session_from

if TYPE_CHECKING:
    from services.gateway.realtime import EventStreams


def get_settings(conn: HTTPConnection) -> GatewaySettings:
    return conn.app.state.settings


def get_backends(conn: HTTPConnection) -> Backends:
    return conn.app.state.backends


def get_login_limiter(conn: HTTPConnection) -> RateLimiter:
    """Login attempts per client address."""
    return conn.app.state.login_limiter


def get_test_room_limiter(conn: HTTPConnection) -> RateLimiter:
    """Echo test room negotiations per person."""
    return conn.app.state.test_room_limiter


def get_public_report_limiter(conn: HTTPConnection) -> RateLimiter:
    """Fault reports without a login per client address."""
    return conn.app.state.public_report_limiter


def get_trusted_proxies(conn: HTTPConnection) -> TrustedProxies:
    return conn.app.state.trusted_proxies


def get_event_streams(conn: HTTPConnection) -> EventStreams:
    return conn.app.state.event_streams


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
BackendsDep = Annotated[Backends, Depends(get_backends)]
LoginLimiterDep = Annotated[RateLimiter, Depends(get_login_limiter)]
TestRoomLimiterDep = Annotated[RateLimiter, Depends(get_test_room_limiter)]
PublicReportLimiterDep = Annotated[RateLimiter, Depends(get_public_report_limiter)]
TrustedProxiesDep = Annotated[TrustedProxies, Depends(get_trusted_proxies)]


async def current_session(request: Request, backends: BackendsDep) -> Session:
    """The logged-in person of this request (401 problem otherwise)."""
    return await session_from(request, backends.keys)


Me = Annotated[Session, Depends(current_session)]
