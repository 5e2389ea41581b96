"""A round-robin HTTP + WebSocket reverse proxy for tests: each request (and each WebSocket) goes to
the next of several gateway replicas, as a Kubernetes Service without session affinity spreads them.
It records which replica served what, so a test can prove that a whole join crossed replicas.

Written here (Starlette + httpx + websockets, all already dependencies) rather than run nginx:
the test needs per-request alternation and a record of it, which a stock proxy does not give."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"content-length",
              b"content-encoding", b"te", b"trailer", b"proxy-connection"}
KINDS = re.compile(r"/api/v1/meetings/[^/]+/(admission|negotiation|tiles|quality|events)$")


def kind_of(path: str) -> str:
    """The join step a path is (admission, negotiation, tiles, quality, events), else the path."""
    match = KINDS.search(path)
    return match[1] if match else path


# Where each join step's turns start: the first admission goes to replica 0 and the negotiation
# after it to replica 1, so even the first join crosses replicas.
FIRST = {"admission": 0, "negotiation": 1, "tiles": 0, "quality": 1, "events": 1}


@dataclass
class RoundRobin:
    """Each join step (kind_of) takes the replicas in turn, from FIRST; any other path too."""

    backends: list[str]  # host:port of each replica
    served: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, replica index, status)
    _turns: dict[str, Iterator[int]] = field(default_factory=dict)

    def _next(self, kind: str) -> int:
        if kind not in self._turns:
            first = FIRST.get(kind, 0)
            self._turns[kind] = itertools.cycle([*range(first, len(self.backends)), *range(first)])
        return next(self._turns[kind])

    def replicas_serving(self, kind: str, ok: bool = True) -> set[int]:
        return {i for k, i, status in self.served if k == kind and (not ok or status < 400)}

    def refused(self, kinds: set[str], statuses: frozenset[int] = frozenset({401, 403, 409})) -> list[tuple[str, int, int]]:
        """What the replicas refused of `kinds` (by default: as not logged in, not yours, not joined)."""
        return [s for s in self.served if s[0] in kinds and s[2] in statuses]

    def app(self) -> Starlette:
        client = httpx.AsyncClient(timeout=30)

        async def http(request: Request) -> Response:
            i = self._next(kind_of(request.url.path))
            headers = [(k, v) for k, v in request.headers.raw if k.lower() not in HOP_BY_HOP]
            upstream = await client.request(request.method, f"http://{self.backends[i]}{request.url.path}",
                                            params=request.url.query, headers=headers, content=await request.body())
            self.served.append((kind_of(request.url.path), i, upstream.status_code))
            response = Response(upstream.content, status_code=upstream.status_code)
            response.raw_headers = [(k, v) for k, v in upstream.headers.raw if k.lower() not in HOP_BY_HOP]
            response.raw_headers.append((b"content-length", str(len(upstream.content)).encode()))
            return response

        async def ws(browser: WebSocket) -> None:
            i = self._next(kind_of(browser.url.path))
            # Cookie and Origin as the page sent them (the replicas know their public URL: the proxy's).
            headers = [(k.decode(), v.decode()) for k, v in browser.headers.raw if k.lower() in (b"cookie", b"origin")]
            url = f"ws://{self.backends[i]}{browser.url.path}"
            async with websockets.connect(url, additional_headers=headers, origin=None) as upstream:
                self.served.append((kind_of(browser.url.path), i, 101))
                await browser.accept()

                async def down() -> None:
                    async for message in upstream:
                        await browser.send_text(message if isinstance(message, str) else message.decode())

                async def up() -> None:
                    with contextlib.suppress(WebSocketDisconnect):
                        while True:
                            await upstream.send(await browser.receive_text())

                tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
                with contextlib.suppress(Exception):
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                code, reason = upstream.close_code or 1000, upstream.close_reason or ""
            with contextlib.suppress(Exception):  # the upstream's close code reaches the page (4403, 4409)
                await browser.close(code=code, reason=reason)

        return Starlette(routes=[WebSocketRoute("/{path:path}", ws),
                                 Route("/{path:path}", http, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])


@contextlib.contextmanager
def serving_in_thread(proxy: RoundRobin, port: int) -> Iterator[str]:
    """The proxy on 127.0.0.1:`port` in a thread of its own (for synchronous callers: Selenium)."""
    server = uvicorn.Server(uvicorn.Config(proxy.app(), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="round-robin-proxy", daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        assert server.started, "the round-robin proxy did not start"
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
