"""SITHS login: the gateway terminates mutual TLS and forwards the client certificate
chain; identity verifies it against the configured SITHS CA certificates (path
validation with `cryptography.x509.verification`: signatures, validity period, CA
constraints, client-auth extended key usage) and that the card's key may sign
(key usage digitalSignature), then reads the HSA-id from the subject serialNumber
(OID 2.5.4.5) and the person's roles from the HSA directory.

Revocation (OCSP / CRL) is not checked here: SITHS publishes OCSP responders that
this environment cannot reach (see the report).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from services.identity import hsa_id as hsa
from services.identity.directory import Directory
from services.identity.token_service import SITHS, Session, TokenService, staff_principal
from services.runtime.errors import InvalidArgument, PermissionDenied, Unauthenticated

log = logging.getLogger("svpl.identity.siths")
ASSURANCE = "high"  # SITHS e-id: eIDAS high / LoA 3
MAX_CHAIN_PEM = 64 * 1024
# The Web PKI end-entity profile, except that a card names its holder in the subject
# (serialNumber = HSA-id) and need not carry a subjectAltName.
_CARD_POLICY = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)


def load_ca_certificates(paths: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for path in (p.strip() for p in paths.split(",") if p.strip()):
        certs += x509.load_pem_x509_certificates(Path(path).read_bytes())
    return certs


class SithsLogin:
    def __init__(self, ca_certificates: list[x509.Certificate], directory: Directory, tokens: TokenService) -> None:
        self._store = Store(ca_certificates) if ca_certificates else None
        self._directory = directory
        self._tokens = tokens

    def verify(self, chain_pem: str, now: dt.datetime | None = None) -> str:
        """The HSA-id of a valid SITHS card certificate chain (leaf first, PEM)."""
        if self._store is None:
            raise Unauthenticated("SITHS login is not configured (no SITHS CA certificates)")
        if not chain_pem.strip():
            raise InvalidArgument("client_certificate_pem", "is required: the client certificate chain, PEM")
        if len(chain_pem) > MAX_CHAIN_PEM:
            raise InvalidArgument("client_certificate_pem", f"at most {MAX_CHAIN_PEM} characters")
        try:
            chain = x509.load_pem_x509_certificates(chain_pem.encode())
        except ValueError:
            raise InvalidArgument("client_certificate_pem", "not a PEM certificate chain") from None
        leaf, intermediates = chain[0], chain[1:]
        now = now or dt.datetime.now(dt.timezone.utc)
        if now < leaf.not_valid_before_utc:
            raise Unauthenticated("the card certificate is not valid yet")
        if now > leaf.not_valid_after_utc:
            raise Unauthenticated("the card certificate has expired")
        try:
            key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            raise Unauthenticated("the card certificate has no key usage") from None
        if not key_usage.digital_signature:
            raise Unauthenticated("the card certificate's key may not be used for signing (authentication)")
        verifier = (PolicyBuilder().store(self._store).time(now)
                    .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_CARD_POLICY)
                    .build_client_verifier())
        try:
            verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            log.info("SITHS certificate refused: %s", exc)
            raise Unauthenticated("the card certificate is not issued by a trusted SITHS CA") from None
        serials = leaf.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        if not serials:
            raise Unauthenticated("the card certificate carries no HSA-id (subject serialNumber)")
        try:
            return hsa.parse(str(serials[0].value)).normalized
        except InvalidArgument:
            raise Unauthenticated("the card certificate's serialNumber is not an HSA-id") from None

    async def login(self, chain_pem: str) -> Session:
        hsa_id = self.verify(chain_pem)
        person = await self._directory.lookup(hsa_id)
        if person is None:
            raise PermissionDenied(f"{hsa_id} is not in the HSA directory", reason="NOT_IN_DIRECTORY")
        log.info("SITHS login", extra={"svpl_hsa_id": hsa_id})
        return self._tokens.issue_session(staff_principal(person, SITHS, ASSURANCE))
