"""The 1177 inbox channel: a message in a next of kin's inbox on 1177 e-services.

1177 inbox is fed through Inera's RIV-TA service contract AddMessage 2.0
(urn:riv-application:infrastructure:eservicesupply:patientportal:AddMessage:2:rivtabp21),
a SOAP 1.1 call routed by a LogicalAddress header. This adapter sends that call over
HTTPS with httpx and reads the RIV-TA result (resultCode OK / INFO / ERROR). The
outbox's message id travels as the message's id, so a redelivery is recognised by the
receiver. Retry policy: timeouts, connection errors, 5xx and TECHNICAL_ERROR are
retried by the outbox dispatcher; 4xx and any other ERROR are permanent.
The element layout follows the contract's shape as far as it is published; the
national XSD is not available here (see the report), so the test receiver under
tests/roster/ checks exactly what this module sends.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import httpx

from services.runtime.outbox import OutboxMessage, PermanentDeliveryError, RetryableDeliveryError

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
ADDRESSING_NS = "http://www.w3.org/2005/08/addressing"
CONTRACT_NS = "urn:riv-application:infrastructure:eservicesupply:patientportal:AddMessageResponder:2"
SOAP_ACTION = "urn:riv-application:infrastructure:eservicesupply:patientportal:AddMessageResponder:2:AddMessage"
LOGICAL_ADDRESS = "5565594230"  # Inera's 1177 e-services (the routing address of the producer)


def envelope(message: OutboxMessage, logical_address: str = LOGICAL_ADDRESS) -> bytes:
    p = message.payload
    env = ET.Element(f"{{{SOAP_NS}}}Envelope")
    header = ET.SubElement(env, f"{{{SOAP_NS}}}Header")
    ET.SubElement(header, f"{{{ADDRESSING_NS}}}To").text = logical_address
    body = ET.SubElement(env, f"{{{SOAP_NS}}}Body")
    req = ET.SubElement(body, f"{{{CONTRACT_NS}}}AddMessage")
    ET.SubElement(req, f"{{{CONTRACT_NS}}}messageId").text = message.message_id
    ET.SubElement(req, f"{{{CONTRACT_NS}}}subjectOfCareId").text = p["personnummer"]
    sender = ET.SubElement(req, f"{{{CONTRACT_NS}}}careUnit")
    ET.SubElement(sender, f"{{{CONTRACT_NS}}}careUnitId").text = p.get("care_unit", "")
    ET.SubElement(req, f"{{{CONTRACT_NS}}}subject").text = p["subject"]
    ET.SubElement(req, f"{{{CONTRACT_NS}}}body").text = p["body"]
    ET.SubElement(req, f"{{{CONTRACT_NS}}}replyAllowed").text = "false"
    return ET.tostring(env, encoding="utf-8", xml_declaration=True)


class Inbox1177Adapter:
    """ChannelAdapter for `services.runtime.outbox.Dispatcher`."""

    def __init__(self, url: str, api_key: str = "", timeout: float = 10.0, logical_address: str = LOGICAL_ADDRESS,
                 client: httpx.AsyncClient | None = None) -> None:
        self._url = url
        self._logical_address = logical_address
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": SOAP_ACTION}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = client or httpx.AsyncClient(timeout=timeout, headers=headers)

    async def close(self) -> None:
        await self._client.aclose()

    async def deliver(self, message: OutboxMessage) -> None:
        try:
            reply = await self._client.post(self._url, content=envelope(message, self._logical_address),
                                            headers={"x-request-id": uuid.uuid4().hex})
        except httpx.HTTPError as exc:
            raise RetryableDeliveryError(f"1177 inbox unreachable: {exc.__class__.__name__}") from None
        if reply.status_code >= 500 and not reply.content.strip().startswith(b"<"):
            raise RetryableDeliveryError(f"1177 inbox answered {reply.status_code}")
        if 400 <= reply.status_code < 500:
            raise PermanentDeliveryError(f"1177 inbox refused the message ({reply.status_code})")
        try:
            # The standard parser is safe here: Python 3.11's expat (>= 2.4.1) refuses entity expansion
            # attacks and never fetches external entities (docs.python.org, "XML vulnerabilities").
            root = ET.fromstring(reply.content)  # noqa: S314
        except ET.ParseError:
            raise RetryableDeliveryError("1177 inbox answered with something that is not SOAP") from None
        if root.find(f".//{{{SOAP_NS}}}Fault") is not None:
            raise RetryableDeliveryError("1177 inbox answered with a SOAP fault")
        code = root.findtext(f".//{{{CONTRACT_NS}}}resultCode") or ""
        if code in ("OK", "INFO"):
            return
        error = root.findtext(f".//{{{CONTRACT_NS}}}errorCode") or ""
        text = root.findtext(f".//{{{CONTRACT_NS}}}resultText") or ""
        if error == "TECHNICAL_ERROR" or not code:
            raise RetryableDeliveryError(f"1177 inbox: {error or 'no result'} {text}".strip())
        raise PermanentDeliveryError(f"1177 inbox: {error or code} {text}".strip())
