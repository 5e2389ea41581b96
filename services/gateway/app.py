"""The gateway's FastAPI application: the one HTTP entry for frontends.

REST under /api/v1 (one router per API tag, services/gateway/routes/; OpenAPI at
/api/v1/openapi.json, committed as services/gateway/openapi.json), the meeting events WebSocket,
the logins, and the meeting portal's static pages. What the handlers use of the app (`app.state`,
filled here) they get as typed dependencies (services/gateway/dependencies.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway import access, logins, problems, protojson, realtime, routes
from services.gateway.backends import Backends
from services.gateway.config import GatewaySettings
from services.gateway.routes.common import RESPONSE_MESSAGES
from services.gateway.security import (
    BodyLimit,
    CsrfCheck,
    ForwardedFor,
    RateLimiter,
    RequestIdAndHeaders,
    RouteMetrics,
    TrustedProxies,
)
from services.runtime import metrics, tracing

PORTAL = Path(__file__).resolve().parent / "portal"


class GatewayApp(FastAPI):
    """FastAPI, with the gateway's own API description: the contract messages' schemas and problem details."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = get_openapi(title=self.title, version=self.version, description=self.description,
                                 routes=self.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = problems.PROBLEM_SCHEMA
            components.update(protojson.schemas_for(RESPONSE_MESSAGES))
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    # Validation errors are 400 problem details here, not FastAPI's 422.
                    operation.get("responses", {}).pop("422", None)
            self.openapi_schema = schema
        return self.openapi_schema


def create_app(settings: GatewaySettings) -> FastAPI:
    backends = Backends(settings)
    metrics.observe_service_token(settings.service_token)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await backends.close()

    app = GatewayApp(title="svpl gateway", version="1.0.0", openapi_url="/api/v1/openapi.json",
                     docs_url=None, redoc_url=None, lifespan=lifespan,
                     description="The REST API of svpl's meeting portal. Errors are RFC 9457 problem details. "
                                 "State-changing requests need the svpl_csrf cookie's value in X-CSRF-Token.")
    app.state.settings = settings
    app.state.backends = backends
    app.state.login_limiter = RateLimiter(settings.login_rate_per_minute)
    app.state.test_room_limiter = RateLimiter(settings.test_room_rate_per_minute)
    app.state.public_report_limiter = RateLimiter(settings.public_report_rate_per_hour, window=3600.0)
    app.state.trusted_proxies = TrustedProxies(settings.trusted_proxies)
    app.state.event_streams = realtime.EventStreams(settings.event_streams_per_session,
                                                    settings.event_streams_per_meeting)

    # The ignores: starlette types every handler as taking any Exception, though it calls each only with the
    # class it was added for (a TypeVar for that is proposed upstream: Kludex/starlette#2403).
    app.add_exception_handler(problems.Problem, problems.problem_handler)  # type: ignore[arg-type]  # starlette
    app.add_exception_handler(grpc.aio.AioRpcError, problems.rpc_error_handler)  # type: ignore[arg-type]  # starlette
    app.add_exception_handler(RequestValidationError,
                              problems.validation_handler)  # type: ignore[arg-type]  # starlette
    app.add_exception_handler(StarletteHTTPException,
                              problems.http_error_handler)  # type: ignore[arg-type]  # starlette
    app.add_exception_handler(Exception, problems.unhandled_handler)
    # The last added is the outermost. Outermost: the client address is settled before anything
    # logs, limits or routes on it; then every response's headers, the CSRF check, the body limit;
    # innermost the metrics and log line (a request the guards refuse is neither counted nor logged).
    app.add_middleware(RouteMetrics)
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(CsrfCheck)
    app.add_middleware(RequestIdAndHeaders)
    app.add_middleware(ForwardedFor, trusted=settings.trusted_proxies)
    if tracing.enabled():
        # Outermost: the server span (its parent from the request's W3C traceparent, if any) covers the
        # whole request; the gRPC calls made for it and the log lines written in it are in its trace.
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="/healthz,/static/.*",
                                           server_request_hook=tracing.without_query)

    app.include_router(logins.router)
    for router in routes.ROUTERS:
        app.include_router(router)
    app.include_router(realtime.router)

    @app.get("/healthz", include_in_schema=False)
    @access.public
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    @access.public
    async def root():
        return RedirectResponse(f"/auth/{settings.region}/login", status_code=303)

    @app.get("/auth/{region}/login", include_in_schema=False)
    @access.public
    async def login_page(region: logins.Region):
        logins.check_region(settings, region)
        return FileResponse(PORTAL / "login.html", headers={"cache-control": "no-store"})

    @app.get("/auth/{region}/report", include_in_schema=False)
    @access.public
    async def public_report_page(region: logins.Region):
        """Report a fault without logging in (linked from the login page)."""
        logins.check_region(settings, region)
        return FileResponse(PORTAL / "report.html", headers={"cache-control": "no-store"})

    @app.get("/desk/", include_in_schema=False)
    @access.public
    async def desk_page():
        """The support desk's queue and tickets, and a reporter's own reports (the API decides who sees what)."""
        return FileResponse(PORTAL / "desk.html", headers={"cache-control": "no-store"})

    @app.get("/portal/", include_in_schema=False)
    @access.public
    async def portal_page():
        return FileResponse(PORTAL / "index.html", headers={"cache-control": "no-store"})

    app.mount("/static", access.public(StaticFiles(directory=PORTAL / "static")), name="static")

    openapi_route = next(r for r in access.routes(app) if r.path == app.openapi_url)
    access.public(openapi_route.endpoint)  # FastAPI's own route serving the API description
    access.check_declared(app)
    return app
