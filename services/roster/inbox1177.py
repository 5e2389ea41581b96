"""The 1177 inbox channel: a message in a next of kin's inbox on 1177 e-services.

1177 inbox is fed through Inera's RIV-TA service contract AddMessage 2.0
(urn:riv-application:infrastructure:eservicesupply:patientportal:AddMessage:2:rivtabp21), a SOAP 1.1
call over the national service platform (NTjP, skltp/vp), as the platform requires it:

- mutual TLS: the platform identifies the caller by its TLS client certificate (a SITHS function
  certificate, from files: a Kubernetes Secret), and svpl trusts only the configured CA for the
  platform's server certificate;
- RIV-TA BP 2.1 routing: the producer's logical address in the SOAP header `LogicalAddress`
  (namespace urn:riv:itintegration:registry:1), not WS-Addressing;
- the sending care unit by HSA-id, required (Inera's rules of use): the booking's unit. A message
  without one is a configuration error, never sent.

Outcome, for the outbox dispatcher: the platform's own faults VP002 (no/unknown client
certificate), VP004 (no route for the logical address), VP007 (not authorised for the contract) and
the other configuration faults (see PERMANENT_VP), HTTP 4xx, a missing care unit and a contract
ERROR other than TECHNICAL_ERROR are permanent: the message is parked (failed), the outbox's
fallback gives the coordinator a phone task, and the alert SvplNextOfKinInboxParked fires. Timeouts,
connection errors, 5xx without SOAP, other SOAP faults (VP009: the producer could not be reached …)
and TECHNICAL_ERROR are retried with backoff.

The contract's XSD is not available here. Assumed, and checked by the test producer under
tests/roster/ (docs/INTEGRATIONS.md lists them): the request element `AddMessage` in the Responder
namespace with children messageId, subjectOfCareId, careUnit/careUnitId, subject, body,
replyAllowed; the response `AddMessageResponse` carrying `result` with resultCode / errorCode /
resultText. RIV contracts put ResultType either in the Responder namespace or in the domain's core
namespace (urn:riv-application:infrastructure:eservicesupply:patientportal:2); both are read, and
nothing else.
"""

from __future__ import annotations

import re
import ssl
import uuid
import xml.etree.ElementTree as ET

import httpx

from services.runtime.outbox import OutboxMessage, PermanentDeliveryError, RetryableDeliveryError

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
REGISTRY_NS = "urn:riv:itintegration:registry:1"  # RIV-TA BP 2.1 LogicalAddress header
CONTRACT_NS = "urn:riv-application:infrastructure:eservicesupply:patientportal:AddMessageResponder:2"
CORE_NS = "urn:riv-application:infrastructure:eservicesupply:patientportal:2"
RESULT_NAMESPACES = (CONTRACT_NS, CORE_NS)
SOAP_ACTION = "urn:riv-application:infrastructure:eservicesupply:patientportal:AddMessageResponder:2:AddMessage"
LOGICAL_ADDRESS = "5565594230"  # Inera's 1177 e-services (not verified: configure SVPL_INBOX_1177_LOGICAL_ADDRESS)
# skltp/vp's own fault codes that a retry cannot mend (vp-messages.properties): VP001 bad RIV version,
# VP002 no/unknown client certificate, VP003 no logical address, VP004 no route, VP005 unknown RIV
# version, VP006 several routes, VP007 not authorised, VP011 caller not allowed by IP, VP013 bad header.
PERMANENT_VP = frozenset({"VP001", "VP002", "VP003", "VP004", "VP005", "VP006", "VP007", "VP011", "VP013"})
_VP_CODE = re.compile(r"\bVP0\d\d\b")


def envelope(message: OutboxMessage, logical_address: str = LOGICAL_ADDRESS) -> bytes:
    p = message.payload
    care_unit = str(p.get("care_unit", "")).strip()
    if not care_unit:
        raise PermanentDeliveryError("1177 inbox: no sending care unit (the booking names no unit HSA-id)")
    env = ET.Element(f"{{{SOAP_NS}}}Envelope")
    header = ET.SubElement(env, f"{{{SOAP_NS}}}Header")
    ET.SubElement(header, f"{{{REGISTRY_NS}}}LogicalAddress").text = logical_address
    body = ET.SubElement(env, f"{{{SOAP_NS}}}Body")
    req = ET.SubElement(body, f"{{{CONTRACT_NS}}}AddMessage")
    ET.SubElement(req, f"{{{CONTRACT_NS}}}messageId").text = message.message_id
    ET.SubElement(req, f"{{{CONTRACT_NS}}}subjectOfCareId").text = p["personnummer"]
    sender = ET.SubElement(req, f"{{{CONTRACT_NS}}}careUnit")
    ET.SubElement(sender, f"{{{CONTRACT_NS}}}careUnitId").text = care_unit
    ET.SubElement(req, f"{{{CONTRACT_NS}}}subject").text = p["subject"]
    ET.SubElement(req, f"{{{CONTRACT_NS}}}body").text = p["body"]
    ET.SubElement(req, f"{{{CONTRACT_NS}}}replyAllowed").text = "false"
    return ET.tostring(env, encoding="utf-8", xml_declaration=True)


def tls_context(client_cert: str, client_key: str, ca_file: str = "") -> ssl.SSLContext:
    """Mutual TLS to the platform: our function certificate, and only `ca_file` (or the system
    store) trusted for the platform's certificate."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if client_cert:
        context.load_cert_chain(client_cert, client_key or None)
    return context


def _text(root: ET.Element, name: str) -> str:
    for ns in RESULT_NAMESPACES:
        found = root.find(f".//{{{ns}}}{name}")
        if found is not None:
            return (found.text or "").strip()
    return ""


class Inbox1177Adapter:
    """ChannelAdapter for `services.runtime.outbox.Dispatcher`."""

    def __init__(self, url: str, *, client_cert: str = "", client_key: str = "", ca_file: str = "",
                 timeout: float = 10.0, logical_address: str = LOGICAL_ADDRESS,
                 client: httpx.AsyncClient | None = None) -> None:
        self._url = url
        self._logical_address = logical_address
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION}"'}
        self._client = client or httpx.AsyncClient(timeout=timeout, headers=headers,
                                                   verify=tls_context(client_cert, client_key, ca_file))

    async def close(self) -> None:
        await self._client.aclose()

    async def deliver(self, message: OutboxMessage) -> None:
        request = envelope(message, self._logical_address)
        try:
            reply = await self._client.post(self._url, content=request, headers={"x-request-id": uuid.uuid4().hex})
        except httpx.HTTPError as exc:
            raise RetryableDeliveryError(f"1177 inbox unreachable: {exc.__class__.__name__}") from None
        is_xml = reply.content.strip().startswith(b"<")
        if reply.status_code >= 500 and not is_xml:
            raise RetryableDeliveryError(f"1177 inbox answered {reply.status_code}")
        if 400 <= reply.status_code < 500:
            raise PermanentDeliveryError(f"1177 inbox refused the message (HTTP {reply.status_code})")
        try:
            # The standard parser is safe here: Python 3.11's expat (>= 2.4.1) refuses entity expansion
            # attacks and never fetches external entities (docs.python.org, "XML vulnerabilities").
            root = ET.fromstring(reply.content)  # noqa: S314
        except ET.ParseError:
            raise RetryableDeliveryError("1177 inbox answered with something that is not SOAP") from None
        fault = root.find(f".//{{{SOAP_NS}}}Fault")
        if fault is not None:
            text = " ".join((fault.findtext("faultstring") or "").split())[:300]
            code = next(iter(_VP_CODE.findall(text)), "")
            if code in PERMANENT_VP:
                raise PermanentDeliveryError(f"the national service platform refused the call: {text}")
            raise RetryableDeliveryError(f"1177 inbox answered with a SOAP fault: {text}")
        code = _text(root, "resultCode")
        if code in ("OK", "INFO"):
            return
        error, text = _text(root, "errorCode"), _text(root, "resultText")
        if error == "TECHNICAL_ERROR" or not code:
            raise RetryableDeliveryError(f"1177 inbox: {error or 'no result'} {text}".strip())
        raise PermanentDeliveryError(f"1177 inbox: {error or code} {text}".strip())
