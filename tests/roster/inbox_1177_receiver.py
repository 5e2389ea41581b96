"""A small 1177 inbox (AddMessage 2.0, SOAP 1.1) receiver for the tests: it parses what roster's
adapter sends, keeps messages by message id (a redelivery is stored once), and can be told
to fail the next requests (HTTP 503, or a RIV-TA TECHNICAL_ERROR / VALIDATION_ERROR)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import uvicorn

from devstack.embedded_db import free_port
from services.roster.inbox1177 import CONTRACT_NS, SOAP_ACTION, SOAP_NS

C = f"{{{CONTRACT_NS}}}"


def _response(code: str, error: str = "", text: str = "") -> bytes:
    extra = f"<errorCode>{error}</errorCode><resultText>{text}</resultText>" if error else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body>'
            f'<AddMessageResponse xmlns="{CONTRACT_NS}"><resultCode>{code}</resultCode>{extra}'
            f"</AddMessageResponse></soap:Body></soap:Envelope>").encode()


@dataclass
class Inbox1177Receiver:
    messages: dict[str, dict] = field(default_factory=dict)
    requests: int = 0
    # What to answer the next requests with: "503", "TECHNICAL_ERROR", "VALIDATION_ERROR", "401".
    failures: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/AddMessage/2/rivtabp21"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        self.requests += 1
        status, reply = 200, _response("OK")
        headers = dict(scope["headers"])
        if scope["method"] != "POST" or headers.get(b"soapaction", b"").decode() != SOAP_ACTION:
            status, reply = 400, b"not an AddMessage call"
        elif self.failures:
            kind = self.failures.pop(0)
            if kind.isdigit():
                status, reply = int(kind), b"unavailable"
            else:
                reply = _response("ERROR", kind, "simulated")
        else:
            req = ET.fromstring(body).find(f".//{C}AddMessage")
            message_id = req.findtext(f"{C}messageId")
            self.messages.setdefault(message_id, {
                "subject_of_care": req.findtext(f"{C}subjectOfCareId"),
                "care_unit": req.findtext(f"{C}careUnit/{C}careUnitId"),
                "subject": req.findtext(f"{C}subject"),
                "body": req.findtext(f"{C}body"),
            })
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/xml; charset=utf-8")]})
        await send({"type": "http.response.body", "body": reply})

    async def start(self) -> Inbox1177Receiver:
        self._server = uvicorn.Server(uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server and self._task:
            self._server.should_exit = True
            await self._task
