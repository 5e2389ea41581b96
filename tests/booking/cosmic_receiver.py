"""A secure-messaging (Cosmic Link stand-in) receiver that follows the protocol in
services/booking/messaging.py, for tests only: an HTTP server on loopback that keeps
each message once by message_id (the receiver side of exactly-once), and can be told to
fail (503), or to accept a message and then never answer (a dispatcher killed mid-delivery
sees no answer)."""

from __future__ import annotations

import asyncio
import collections
import contextlib

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devstack.embedded_db import free_port


class CosmicReceiver:
    def __init__(self, token: str = "") -> None:
        self.token = token
        self.accepted: dict[str, dict] = {}  # message_id -> first copy
        self.posts: collections.Counter[str] = collections.Counter()  # every POST, duplicates included
        self.fail_next = 0
        self.hang_after_accepting = False
        self.hanging = asyncio.Event()
        self._release = asyncio.Event()
        self.unknown_recipients: set[str] = set()
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _messages(self, request: Request):
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"title": "unauthorized"}, status_code=401)
        body = await request.json()
        message_id = body.get("message_id", "")
        if not message_id or request.headers.get("idempotency-key") != message_id:
            return JSONResponse({"title": "message_id and Idempotency-Key required"}, status_code=400)
        self.posts[message_id] += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse({"title": "busy"}, status_code=503)
        if body.get("recipient") in self.unknown_recipients:
            return JSONResponse({"title": "unknown recipient"}, status_code=404)
        duplicate = message_id in self.accepted
        self.accepted.setdefault(message_id, body)
        if self.hang_after_accepting:
            self.hanging.set()
            await self._release.wait()  # answered only when the receiver stops
        return JSONResponse({"message_id": message_id, "duplicate": duplicate}, status_code=200 if duplicate else 201)

    async def start(self) -> CosmicReceiver:
        app = Starlette(routes=[Route("/messages", self._messages, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning",
                                access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._server:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._task:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
