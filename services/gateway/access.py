"""What each gateway route may do, declared once, next to the route, and used by the code.

The gateway holds no access rules of its own: a route either relays the person's own token to
one gRPC method (that service's ACCESS rule, enforced by its interceptor, decides), calls one
method with the gateway's service token behind a gate of its own (a logged-in person holding a
join token the gateway issued), needs only a logged-in person, or is public (logins, pages).

`call()` (routes/common.py) and the events WebSocket take the method to call from the route's
declaration, so a route cannot relay to a method it did not declare; `check_declared()` refuses to
build an app with an undeclared route, like the gRPC interceptor refuses a service with an
undeclared method. tests/access/test_gateway_matrix.py derives every route × role expectation from this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

ATTRIBUTE = "__svpl_access__"

Kind = Literal["relay", "gateway", "login", "session", "public"]


@dataclass(frozen=True)
class RouteAccess:
    """relay: the person's own token to service.rpc (its ACCESS rule decides).
    gateway: the gateway's own token to service.rpc, after `gate` (every such gate needs a session);
      `relaying`: more methods ((service, rpc), ...) the route calls with the person's own token.
    login: no session needed; the gateway's own token to service.rpc (identity does every check; the
      public fault report and its contact details use it too, support doing every check).
    session: any logged-in person; calls no service as them.  public: no session needed."""

    kind: Kind
    service: str = ""
    rpc: str = ""
    gate: str = ""
    relaying: tuple[tuple[str, str], ...] = ()


def _declare(access: RouteAccess) -> Callable:
    def mark(target):
        setattr(target, ATTRIBUTE, access)
        return target

    return mark


def relays(service: str, rpc: str) -> Callable:
    """The route relays the person's own token to `service.rpc`: that method's ACCESS rule decides."""
    return _declare(RouteAccess("relay", service, rpc))


def as_gateway(service: str, rpc: str, gate: str, relaying: tuple[tuple[str, str], ...] = ()) -> Callable:
    """The route calls `service.rpc` with the gateway's token, for a logged-in person past `gate`;
    with `relaying=((service, rpc), ...)` it also calls those methods with the person's own token (their
    ACCESS rules and domain rules decide too: e.g. the person's own admission, names they may see)."""
    return _declare(RouteAccess("gateway", service, rpc, gate, relaying))


def login(service: str, rpc: str) -> Callable:
    """A login step: open to anyone; `service.rpc` is called with the gateway's token."""
    return _declare(RouteAccess("login", service, rpc))


def session_only(target):
    """Any logged-in person; no service is called as them."""
    return _declare(RouteAccess("session"))(target)


def public(target):
    """No session needed: logins, the portal's pages and files, the API description, health."""
    return _declare(RouteAccess("public"))(target)


def routes(app) -> list:
    """Every route the app serves (routers included), each with its full path, methods and endpoint."""
    return list(iter_route_contexts(app.routes))


def access_of(route) -> RouteAccess | None:
    original = getattr(route, "original_route", route)
    target = original.app if isinstance(original, Mount) else getattr(route, "endpoint", None)
    return getattr(target, ATTRIBUTE, None)


def check_declared(app) -> None:
    missing = [route.path for route in routes(app) if access_of(route) is None]
    if missing:
        raise RuntimeError(f"gateway routes without an access declaration (services/gateway/access.py): {missing}")


def declared(conn) -> RouteAccess:
    """The declaration of the route serving this request or WebSocket."""
    access = getattr(conn.scope.get("endpoint"), ATTRIBUTE, None)
    if access is None or not access.rpc:
        raise RuntimeError(f"{conn.url.path}: the route declares no method to call")
    return access


def stub_method(conn, stub):
    """The declared method on `stub` (which must be the declared service's)."""
    access = declared(conn)
    service = type(stub).__name__.removesuffix("ServiceStub").lower()
    if service != access.service:
        raise RuntimeError(f"{conn.url.path} declares {access.service}.{access.rpc}, not a {service} call")
    method = getattr(stub, access.rpc)

    def checked(message, **options):
        if message.DESCRIPTOR.name != f"{access.rpc}Request":
            raise RuntimeError(f"{conn.url.path}: a {message.DESCRIPTOR.name} is not what {service}.{access.rpc} takes")
        return method(message, **options)

    return checked
