"""A small BankID Relying Party API v6 test server (a test fixture, never shipped).

It follows the published interface: POST /rp/v6.0/auth, /collect, /cancel with JSON,
over TLS that requires the relying party's client certificate. Each order plays a
script of collect answers chosen by the test (orders that complete, fail, expire, get
cancelled, or answer with hint codes the client has never heard of).
"""

from __future__ import annotations

import secrets
import ssl
import uuid
from collections import deque
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.identity.tls_app import TlsApp

USER = {"personalNumber": "191212121212", "name": "Tolvan Tolvansson", "givenName": "Tolvan",
        "surname": "Tolvansson"}

SCRIPTS = {
    "complete": [("pending", "outstandingTransaction"), ("pending", "started"), ("pending", "userSign"),
                 ("complete", "")],
    "user_cancel": [("pending", "started"), ("failed", "userCancel")],
    "expire": [("pending", "outstandingTransaction"), ("failed", "expiredTransaction")],
    "unknown_hints": [("pending", "brandNewHint"), ("failed", "anotherNewHint")],
    "bad_personal_number": [("complete", "")],
}


@dataclass
class Order:
    ref: str
    script: list
    user: dict
    qr_start_token: str = field(default_factory=lambda: str(uuid.uuid4()))
    qr_start_secret: str = field(default_factory=lambda: str(uuid.uuid4()))
    step: int = 0
    cancelled: bool = False


class BankIdTestServer(TlsApp):
    def __init__(self, port: int, certfile: str, keyfile: str, client_ca: str) -> None:
        self.orders: dict[str, Order] = {}
        self.next_scripts: deque[tuple[str, dict]] = deque()
        self.fail_auth_with: tuple[int, str] | None = None
        self.requests: list[tuple[str, dict]] = []
        app = FastAPI()
        app.post("/rp/v6.0/auth")(self._auth)
        app.post("/rp/v6.0/collect")(self._collect)
        app.post("/rp/v6.0/cancel")(self._cancel)
        super().__init__(app, port, certfile, keyfile, ssl_ca_certs=client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/rp/v6.0"

    def script_next(self, name: str, user: dict | None = None) -> None:
        self.next_scripts.append((name, user or USER))

    @staticmethod
    def _error(status: int, code: str, details: str = "") -> JSONResponse:
        return JSONResponse({"errorCode": code, "details": details}, status_code=status)

    async def _body(self, request: Request, path: str) -> dict | None:
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return None
        try:
            body = await request.json()
        except ValueError:
            return None
        self.requests.append((path, body))
        return body if isinstance(body, dict) else None

    async def _auth(self, request: Request):
        body = await self._body(request, "auth")
        if body is None or not body.get("endUserIp"):
            return self._error(400, "invalidParameters", "endUserIp is required")
        if self.fail_auth_with:
            return self._error(*self.fail_auth_with)
        name, user = self.next_scripts.popleft() if self.next_scripts else ("complete", USER)
        order = Order(str(uuid.uuid4()), SCRIPTS[name], user)
        self.orders[order.ref] = order
        return {"orderRef": order.ref, "autoStartToken": str(uuid.uuid4()), "qrStartToken": order.qr_start_token,
                "qrStartSecret": order.qr_start_secret}

    async def _collect(self, request: Request):
        body = await self._body(request, "collect")
        order = self.orders.get((body or {}).get("orderRef", ""))
        if order is None or order.cancelled:
            return self._error(400, "invalidParameters", "No such order")
        status, hint = order.script[min(order.step, len(order.script) - 1)]
        order.step += 1
        answer = {"orderRef": order.ref, "status": status}
        if status == "complete":
            answer["completionData"] = {
                "user": order.user, "device": {"ipAddress": "192.0.2.10", "uhi": secrets.token_hex(8)},
                "bankIdIssueDate": "2024-01-01", "signature": "PHNpZ25hdHVyZS8+", "ocspResponse": "b2NzcA==",
            }
        else:
            answer["hintCode"] = hint
        return answer

    async def _cancel(self, request: Request):
        body = await self._body(request, "cancel")
        order = self.orders.get((body or {}).get("orderRef", ""))
        if order is None or order.cancelled:
            return self._error(400, "invalidParameters", "No such order")
        order.cancelled = True
        return {}
