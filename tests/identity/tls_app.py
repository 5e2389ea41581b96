"""An ASGI app served by uvicorn over real TLS inside the test event loop (the login test servers)."""

from __future__ import annotations

import asyncio

import uvicorn


class TlsApp:
    def __init__(self, app, port: int, certfile: str | None, keyfile: str | None, **ssl_options) -> None:
        self.port = port
        self._server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=port, ssl_certfile=certfile, ssl_keyfile=keyfile, log_level="warning",
            access_log=False, lifespan="off", **ssl_options))
        self._task: asyncio.Task | None = None

    async def start(self):
        """Serve until stop(); polls (10 ms) until uvicorn says it is listening."""
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                return self
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError(f"{type(self).__name__} did not start")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task:
            await self._task
