"""How the gateway is served: uvicorn's configuration, in one place for `__main__` and the tests.

- Forwarded headers: uvicorn's own proxy-header handling is off. It believes `X-Forwarded-For`
  from any loopback client by default, so anything that reaches the pod over loopback (a mesh
  sidecar, `kubectl port-forward`) could pick its own address: a fresh one per login attempt
  past the rate limit, or one inside the trusted proxies' networks for a SITHS login. The app
  believes those headers only from `SVPL_TRUSTED_PROXIES` (security.ForwardedFor).
- Request headers must arrive within `SVPL_HEADER_READ_TIMEOUT_SECONDS`: uvicorn has no such
  bound, and a client sending half a request held a connection (and its slot) open until it gave
  up itself.
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.gateway.config import GatewaySettings


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers: from the connection
    (or the first byte of the next request on a kept-alive one) to the end of the headers.
    Subclassed because uvicorn offers no setting for it (its keep-alive timeout covers only idle
    connections between requests); the hooks used are the parser callbacks httptools calls."""

    header_timeout: float = 10.0

    # asyncio.Protocol.connection_made takes any BaseTransport; uvicorn's narrows it to a Transport (same ignore).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        deadline: asyncio.TimerHandle | None = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def server_config(app, settings: GatewaySettings, *, port: int | None = None, **extra) -> uvicorn.Config:
    """The gateway's uvicorn configuration (`extra`: tests turn the lifespan off, the app is theirs)."""
    protocol = type("GatewayHttpProtocol", (HeaderTimeoutProtocol,),
                    {"header_timeout": settings.header_read_timeout_seconds})
    return uvicorn.Config(
        app, host=settings.http_host, port=settings.http_port if port is None else port,
        log_config=None, access_log=False, http=protocol, ws="websockets-sansio",
        # Forwarded headers are handled in the app, from the trusted proxies only.
        proxy_headers=False, server_header=False,
        # On SIGTERM: no new connections, then up to the grace for open requests and WebSockets to end.
        # uvicorn annotates this an int, but only hands it to asyncio.wait_for's timeout (a float is fine).
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,  # type: ignore[arg-type]  # uvicorn: int
        **extra,
    )
