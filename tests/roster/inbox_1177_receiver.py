"""A stand-in for the 1177 inbox behind the national service platform (NTjP), for the tests only.

It behaves as skltp/vp and the producer do, as published (docs/INTEGRATIONS.md): HTTPS that asks
for a client certificate; without one the platform answers SOAP fault VP002, for a caller it has
not authorised (the certificate's subject serialNumber) VP007, for a request without the RIV-TA
BP 2.1 LogicalAddress header VP003 and for a logical address it has no route to VP004. The
producer keeps messages by messageId (a redelivery is stored once), refuses one without a sending
care unit (VALIDATION_ERROR) and answers AddMessageResponse with its result in the domain's core
namespace. It can be told to fail the next requests: "503" (HTTP), "TECHNICAL_ERROR" /
"VALIDATION_ERROR" (a contract ERROR) or a platform fault ("VP009", "VP007", ...).

Served by the standard library's HTTP server over `ssl` in a thread, because the platform's
behaviour depends on the client certificate, which an ASGI server does not show its app.
"""

from __future__ import annotations

import http.server
import ssl
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from devstack.embedded_db import free_port
from services.roster.inbox1177 import CONTRACT_NS, CORE_NS, REGISTRY_NS, SOAP_ACTION, SOAP_NS

C = f"{{{CONTRACT_NS}}}"
FAULT_TEXTS = {
    "VP002": "VP002 [NTjP] No certificate found in the request",
    "VP003": "VP003 [NTjP] No receiver (LogicalAddress) in the request header",
    "VP004": "VP004 [NTjP] No route found for the logical address",
    "VP007": "VP007 [NTjP] The caller is not authorised for the service contract",
    "VP009": "VP009 [NTjP] Error connecting to the producer",
}


def _fault(code: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body><soap:Fault>'
            f"<faultcode>soap:Server</faultcode><faultstring>{FAULT_TEXTS.get(code, code)}</faultstring>"
            f"</soap:Fault></soap:Body></soap:Envelope>").encode()


def _response(code: str, error: str = "", text: str = "") -> bytes:
    extra = f"<core:errorCode>{error}</core:errorCode><core:resultText>{text}</core:resultText>" if error else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body>'
            f'<r:AddMessageResponse xmlns:r="{CONTRACT_NS}" xmlns:core="{CORE_NS}"><r:result>'
            f"<core:resultCode>{code}</core:resultCode>{extra}</r:result></r:AddMessageResponse>"
            f"</soap:Body></soap:Envelope>").encode()


@dataclass
class Inbox1177Receiver:
    certfile: str
    keyfile: str
    client_ca: str  # the CA of callers' function certificates
    authorized: set[str] = field(default_factory=set)  # callers (certificate serialNumber) allowed
    logical_address: str = "5565594230"
    messages: dict[str, dict] = field(default_factory=dict)
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/vp/AddMessage/2/rivtabp21"

    def answer(self, peer: dict | None, soap_action: str, body: bytes) -> tuple[int, bytes]:
        self.requests += 1
        if not peer:
            return 500, _fault("VP002")
        serial = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "serialNumber"), "")
        if serial not in self.authorized:
            return 500, _fault("VP007")
        if soap_action.strip('"') != SOAP_ACTION:
            return 400, b"not an AddMessage call"
        envelope = ET.fromstring(body)
        address = envelope.findtext(f"{{{SOAP_NS}}}Header/{{{REGISTRY_NS}}}LogicalAddress")
        if not address:
            return 500, _fault("VP003")
        if address != self.logical_address:
            return 500, _fault("VP004")
        if self.failures:
            kind = self.failures.pop(0)
            if kind.isdigit():
                return int(kind), b"unavailable"
            if kind.startswith("VP"):
                return 500, _fault(kind)
            return 200, _response("ERROR", kind, "simulated")
        req = envelope.find(f".//{C}AddMessage")
        if req is None:
            return 500, _fault("not an AddMessage request")
        care_unit = req.findtext(f"{C}careUnit/{C}careUnitId") or ""
        if not care_unit:
            return 200, _response("ERROR", "VALIDATION_ERROR", "careUnitId is required")
        self.messages.setdefault(req.findtext(f"{C}messageId") or "", {
            "subject_of_care": req.findtext(f"{C}subjectOfCareId"), "care_unit": care_unit,
            "subject": req.findtext(f"{C}subject"), "body": req.findtext(f"{C}body"), "caller": serial,
        })
        return 200, _response("OK")

    def start(self) -> Inbox1177Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
                status, reply = receiver.answer(peer, self.headers.get("soapaction", ""), body)
                self.send_response(status)
                self.send_header("content-type", "text/xml; charset=utf-8")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.client_ca)
        context.load_cert_chain(self.certfile, self.keyfile)
        context.verify_mode = ssl.CERT_OPTIONAL  # the platform answers VP002 itself when none comes
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True, name="ntjp-test-producer").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def write_pki(directory: Path) -> dict[str, str]:
    """TLS for the producer (a server CA, a 127.0.0.1 certificate), a platform client CA, svpl's
    function certificate (serialNumber = its HSA-id) and one the platform does not know."""
    from devstack.pki import make_ca, make_leaf

    server_ca, client_ca = make_ca("Test NTjP server CA"), make_ca("TEST SITHS e-id Function CA v1")
    files = {"server_ca": directory / "ntjp-ca.pem", "client_ca": directory / "function-ca.pem"}
    files["server_ca"].write_text(server_ca.pem)
    files["client_ca"].write_text(client_ca.pem)
    files["server_cert"], files["server_key"] = make_leaf(server_ca, "127.0.0.1", server_names=["127.0.0.1"]).write(
        directory, "ntjp")
    files["svpl_cert"], files["svpl_key"] = make_leaf(client_ca, "svpl", serial_number="SE2321000057-SVPL",
                                                      policies=[]).write(directory, "svpl-function")
    files["other_cert"], files["other_key"] = make_leaf(client_ca, "someone", serial_number="SE2321000057-OTHER",
                                                        policies=[]).write(directory, "other-function")
    return {k: str(v) for k, v in files.items()}
