"""The gateway wired to the real services, in-process: the app is driven through httpx's ASGI
transport (cookies as a browser keeps them), the services run on the real database."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings

ALL = ["identity", "media", "roster", "booking", "support"]

COORDINATOR = "SE2321000057-1001"
REGION_STAFF = "SE2321000057-2001"
MUNICIPALITY_STAFF = "SE2120000829-3001"
PATIENT = "191212121212"
NEXT_OF_KIN = "198112289874"


def gateway_settings(system, **extra) -> GatewaySettings:
    values = dict(
        service_token=system.tokens["gateway"],
        development_login=True,
        login_rate_per_minute=1000,
        public_report_rate_per_hour=1000,
        **{f"{name}_address": system.address(name) for name in ALL},
    )
    values.update(extra)
    return GatewaySettings(**values)


class Browser:
    """One person's browser: its own cookies, the CSRF header sent like the portal sends it."""

    def __init__(self, app, peer: str = "127.0.0.1") -> None:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 40000)),
                                      base_url="https://gateway.test")

    async def prime(self) -> None:
        await self.http.get("/api/v1/openapi.json")

    def csrf(self) -> dict:
        return {"x-csrf-token": self.http.cookies.get("svpl_csrf", "")}

    async def get(self, path: str, **kw) -> httpx.Response:
        return await self.http.get(path, **kw)

    async def post(self, path: str, json=None, **kw) -> httpx.Response:
        if "svpl_csrf" not in self.http.cookies:
            await self.prime()
        headers = {**self.csrf(), **kw.pop("headers", {})}
        return await self.http.post(path, json=json, headers=headers, **kw)

    async def login(self, person_id: str, method: str | None = None) -> dict:
        body = {"person_id": person_id}
        if method:
            body["method"] = method
        response = await self.post("/api/v1/auth/development", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def close(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def gateway(system_factory):
    """(app, system, new_browser) with every service running."""
    system = await system_factory(ALL, overrides={"identity": {"development_login": True}})
    app = create_app(gateway_settings(system))
    browsers: list[Browser] = []

    def new_browser(peer: str = "127.0.0.1") -> Browser:
        browser = Browser(app, peer)
        browsers.append(browser)
        return browser

    yield app, system, new_browser
    for browser in browsers:
        await browser.close()
    await app.state.backends.close()


@contextlib.asynccontextmanager
async def serving(app, lifespan: str = "off"):
    """`app` served by uvicorn as production serves it (forwarded headers, header timeout) on a
    loopback port; yields the address. `lifespan="on"`: uvicorn runs the app's start and stop too."""
    import uvicorn

    from devstack.embedded_db import free_port
    from services.gateway.serving import server_config

    port = free_port()
    server = uvicorn.Server(server_config(app, app.state.settings, port=port, lifespan=lifespan))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def served(gateway):
    """The same gateway app served by uvicorn on a loopback port (for WebSocket and plain HTTP clients)."""
    app, system, new_browser = gateway
    async with serving(app) as address:
        yield address, app, system, new_browser


# The identity tests' BankID (RP API v6, mutual TLS) and 1177 (OpenID Connect) test servers.
from tests.identity.conftest import bankid_server, oidc_provider, tls_files  # noqa: E402,F401
