"""A small OCSP responder (RFC 6960 over HTTP POST, `application/ocsp-request`) for the
SITHS revocation tests: a test fixture, never shipped.

It answers for cards of one issuing CA, per serial GOOD (the default), REVOKED or
UNKNOWN, signed by the CA itself or by a delegated responder certificate, and can be
told to misbehave: sign with a key nobody issued (`wrong_key`), sign with a delegated
certificate without id-kp-OCSPSigning (`no_eku`), answer with a nextUpdate that has
passed (`stale`), answer about another serial (`other_serial`), answer too late (`slow`),
or be down (`down`: HTTP 503). It counts the requests per serial.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from fastapi import FastAPI, Request, Response

from devstack.pki import Issued, make_ca, make_ocsp_responder
from tests.identity.tls_app import TlsApp

STATUS = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
          "unknown": ocsp.OCSPCertStatus.UNKNOWN}


class OcspTestResponder:
    def __init__(self, port: int, ca: Issued) -> None:
        self.ca = ca
        self.delegate = make_ocsp_responder(ca)
        self._no_eku = make_ocsp_responder(ca, "Not an OCSP responder", ocsp_signing=False)
        self._stranger = make_ca("Someone else's OCSP responder")
        self.status: dict[int, str] = {}  # serial -> good | revoked | unknown
        self.mode = "ca"  # ca | delegated | wrong_key | no_eku | stale | other_serial | slow | down
        self.requests: Counter[int] = Counter()
        self.url = f"http://127.0.0.1:{port}/ocsp"
        app = FastAPI()
        app.post("/ocsp")(self._answer)
        self._server = TlsApp(app, port, None, None)  # OCSP is plain HTTP; the answers are signed

    async def start(self) -> OcspTestResponder:
        await self._server.start()
        return self

    async def stop(self) -> None:
        await self._server.stop()

    def reset(self) -> None:
        self.status.clear()
        self.requests.clear()
        self.mode = "ca"

    async def _answer(self, request: Request) -> Response:
        if request.headers.get("content-type") != "application/ocsp-request":
            return Response(status_code=415)
        if self.mode == "down":
            return Response(status_code=503)
        if self.mode == "slow":
            await asyncio.sleep(1)  # longer than the client's timeout in the test
        try:
            asked = ocsp.load_der_ocsp_request(await request.body())
        except ValueError:
            return self._der(ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST))
        self.requests[asked.serial_number] += 1
        now = dt.datetime.now(dt.timezone.utc)
        status = STATUS[self.status.get(asked.serial_number, "good")]
        serial = asked.serial_number + (1 if self.mode == "other_serial" else 0)
        next_update = now - dt.timedelta(hours=1) if self.mode == "stale" else now + dt.timedelta(hours=1)
        revoked = status == ocsp.OCSPCertStatus.REVOKED
        signer, chain = {
            "ca": (self.ca, []),
            "slow": (self.ca, []),
            "stale": (self.ca, []),
            "other_serial": (self.ca, []),
            "delegated": (self.delegate, [self.delegate.cert]),
            "no_eku": (self._no_eku, [self._no_eku.cert]),
            "wrong_key": (self._stranger, []),  # then renamed to the CA below
        }[self.mode]
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(asked.issuer_name_hash, asked.issuer_key_hash, serial, asked.hash_algorithm,
                                  status, now - dt.timedelta(minutes=1), next_update,
                                  now - dt.timedelta(days=1) if revoked else None,
                                  x509.ReasonFlags.key_compromise if revoked else None)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
        )
        if chain:
            builder = builder.certificates(chain)
        der = builder.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        if self.mode == "wrong_key":
            # Name the CA as the responder (ResponderID byKey) on an answer another key signed.
            der = der.replace(_key_hash(self._stranger), _key_hash(self.ca))
        return Response(der, media_type="application/ocsp-response")

    @staticmethod
    def _der(response: ocsp.OCSPResponse) -> Response:
        return Response(response.public_bytes(serialization.Encoding.DER), media_type="application/ocsp-response")


def _key_hash(issued: Issued) -> bytes:
    return x509.SubjectKeyIdentifier.from_public_key(issued.cert.public_key()).digest
