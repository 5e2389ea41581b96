"""SITHS login: the gateway terminates mutual TLS and forwards the client certificate
chain; identity verifies it against the configured SITHS CA certificates (path
validation with `cryptography.x509.verification`: signatures, validity period, CA
constraints, client-auth extended key usage) and that the card's key may sign
(key usage digitalSignature), then reads the HSA-id from the subject serialNumber
(OID 2.5.4.5) and the person's roles from the HSA directory.

Which certificate, and how sure (Inera, "SITHS e-id" PKI; docs/INTEGRATIONS.md): a SITHS e-id card
holds two login certificates, one naming the HSA-id (issued by a "Person HSA-id" CA) and one
naming the personnummer (a "Person ID" CA); function certificates (the "Function" CA) name a
system, not a person. Only certificates from the configured "Person HSA-id" issuing CAs log in; the
personnummer-based card certificate and function certificates are refused with a message telling
the person to pick the other certificate. The assurance level is read from the card's certificate
policies (configured OIDs: LoA 3 = eIDAS substantial for regular cards, LoA 2 = low for
replacement cards); a card naming neither is refused.

Revocation (a lost or stolen card) is checked by OCSP (RFC 6960) at every login that
is not answered from the cache: the responder is the one the card names in its
Authority Information Access extension (or the configured `siths_ocsp_url`). The
answer must be SUCCESSFUL, be about this very card (issuer name/key hash + serial),
be signed by the issuing CA or by a responder certificate that CA issued for
id-kp-OCSPSigning, be current (thisUpdate not in the future, nextUpdate not passed),
and say GOOD. It fails closed: a responder that cannot be reached or answers
something unusable refuses the login (UNAVAILABLE, try again); REVOKED and UNKNOWN
refuse it (UNAUTHENTICATED). GOOD answers are cached per (issuer, serial) until
min(nextUpdate, the configured max age); failures are never cached.
`siths_revocation=off` turns this off (only the local development stack may).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from services.identity import hsa_id as hsa
from services.identity import personnummer as pnr
from services.identity.directory import Directory
from services.identity.metrics import SITHS_REVOCATION
from services.identity.token_service import SITHS, Session, TokenService, staff_principal
from services.runtime.errors import InvalidArgument, PermissionDenied, Unauthenticated, Unavailable

log = logging.getLogger("svpl.identity.siths")
LOA3 = "substantial"  # SITHS e-id regular and Mobilt SITHS cards: LoA 3, eIDAS substantial
LOA2 = "low"  # SITHS e-id replacement cards: LoA 2
PERSON_HSA_ID_CAS = ("SITHS e-id Person HSA-id 3 CA v1", "SITHS e-id Person HSA-id 2 CA v1")
PERSON_ID_CAS = ("SITHS e-id Person ID 3 CA v1", "SITHS e-id Person ID 2 CA v1", "SITHS e-id Person ID Mobile CA v1")
FUNCTION_CAS = ("SITHS e-id Function CA v1",)
PICK_HSA_ID = ("Välj certifikatet med ditt HSA-id när webbläsaren frågar (SITHS-kortet har två; "
               "stäng webbläsaren och försök igen).")
FUNCTION_CERTIFICATE = ("Det valda certifikatet är ett funktionscertifikat, som inte får användas för att "
                        "logga in en person. " + PICK_HSA_ID)
PERSONNUMMER_CERTIFICATE = "Det valda certifikatet bygger på ditt personnummer. " + PICK_HSA_ID
NOT_A_PERSON_HSA_ID_CA = "Certifikatet är inte utfärdat av en SITHS-CA för inloggning med HSA-id. " + PICK_HSA_ID
NO_KNOWN_POLICY = "Certifikatet anger ingen känd tillitsnivå för SITHS; det kan inte användas för inloggning."
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


class OcspError(Exception):
    """An OCSP answer that cannot be used (the detail goes to the log, not the caller)."""


UNCHECKED = "the revocation status of the card certificate could not be checked; try again"
MAX_OCSP_RESPONSE = 64 * 1024
CLOCK_SKEW = dt.timedelta(minutes=5)


def _verify_signature(public_key, signature: bytes, data: bytes, hash_algorithm) -> None:
    # cryptography verifies an OCSP response's signature only by hand (no OCSP
    # validation API); this is the one dispatch on the responder's key type.
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
    elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        public_key.verify(signature, data)
    else:
        raise OcspError(f"unsupported responder key type {type(public_key).__name__}")


def _key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey bits (ResponderID byKey, RFC 6960 4.2.1)."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def ocsp_url(cert: x509.Certificate) -> str | None:
    """The http(s) OCSP responder the certificate names in Authority Information Access."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for d in aia:
        if (d.access_method == AuthorityInformationAccessOID.OCSP
                and isinstance(d.access_location, x509.UniformResourceIdentifier)
                and d.access_location.value.lower().startswith(("http://", "https://"))):
            return d.access_location.value
    return None


class OcspChecker:
    """Revocation status of a card certificate by OCSP (RFC 6960), failing closed."""

    def __init__(self, *, url_override: str = "", timeout_seconds: float = 5.0, cache_seconds: float = 300,
                 cache_size: int = 10_000, http: httpx.AsyncClient | None = None) -> None:
        self._url_override = url_override
        self._http = http or httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False)
        self._max_age = dt.timedelta(seconds=cache_seconds)
        self._cache_size = cache_size
        # (issuer name hash, issuer key hash, serial) -> GOOD until; least recently used first.
        self._good: OrderedDict[tuple[bytes, bytes, int], dt.datetime] = OrderedDict()

    async def close(self) -> None:
        await self._http.aclose()

    async def check(self, leaf: x509.Certificate, issuer: x509.Certificate, hsa_id: str,
                    now: dt.datetime | None = None) -> None:
        """Returns if the card is GOOD; raises Unauthenticated (revoked/unknown) or Unavailable."""
        now = now or dt.datetime.now(dt.timezone.utc)
        # SHA-1 names the certificate in the OCSP CertID (RFC 6960 / 5019: what responders index by);
        # it is an identifier here, not a signature or an integrity check.
        request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()  # noqa: S303
        key = (request.issuer_name_hash, request.issuer_key_hash, request.serial_number)
        until = self._good.get(key)
        if until is not None:
            if now < until:
                self._good.move_to_end(key)
                SITHS_REVOCATION.labels("cached").inc()
                return
            del self._good[key]
        url = self._url_override or ocsp_url(leaf)
        if not url:
            log.error("SITHS card names no OCSP responder and none is configured", extra={"svpl_hsa_id": hsa_id})
            SITHS_REVOCATION.labels("unavailable").inc()
            raise Unavailable(UNCHECKED)
        try:
            response = await self._fetch(url, request)
            single = self._validate(response, leaf, issuer, now)
        except (OcspError, httpx.HTTPError, ValueError, UnsupportedAlgorithm) as exc:
            log.warning("SITHS OCSP check failed (%s: %s) at %s", type(exc).__name__, exc, url,
                        extra={"svpl_hsa_id": hsa_id})
            SITHS_REVOCATION.labels("unavailable").inc()
            raise Unavailable(UNCHECKED) from None
        status = single.certificate_status
        if status == ocsp.OCSPCertStatus.REVOKED:
            reason = single.revocation_reason.value if single.revocation_reason else "unspecified"
            log.warning("SITHS card certificate revoked (reason %s, since %s)", reason, single.revocation_time_utc,
                        extra={"svpl_hsa_id": hsa_id, "svpl_revocation_reason": reason})
            SITHS_REVOCATION.labels("revoked").inc()
            raise Unauthenticated("the card certificate has been revoked")
        if status != ocsp.OCSPCertStatus.GOOD:
            log.warning("SITHS OCSP responder does not know the card certificate", extra={"svpl_hsa_id": hsa_id})
            SITHS_REVOCATION.labels("unknown").inc()
            raise Unauthenticated("the card certificate's revocation status is unknown to its CA's OCSP responder")
        SITHS_REVOCATION.labels("good").inc()
        until = now + self._max_age
        if single.next_update_utc is not None:
            until = min(until, single.next_update_utc)
        self._good[key] = until
        while len(self._good) > self._cache_size:
            self._good.popitem(last=False)

    async def _fetch(self, url: str, request: ocsp.OCSPRequest) -> ocsp.OCSPResponse:
        body = request.public_bytes(serialization.Encoding.DER)
        async with self._http.stream("POST", url, content=body,
                                     headers={"content-type": "application/ocsp-request"}) as r:
            if r.status_code != 200:
                raise OcspError(f"HTTP {r.status_code}")
            data = b""
            async for chunk in r.aiter_bytes():
                data += chunk
                if len(data) > MAX_OCSP_RESPONSE:
                    raise OcspError("response too large")
        return ocsp.load_der_ocsp_response(data)

    def _validate(self, response: ocsp.OCSPResponse, leaf: x509.Certificate, issuer: x509.Certificate,
                  now: dt.datetime) -> ocsp.OCSPSingleResponse:
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise OcspError(f"response status {response.response_status.name}")
        signer = self._signer(response, issuer, now)
        try:
            _verify_signature(signer.public_key(), response.signature, response.tbs_response_bytes,
                              response.signature_hash_algorithm)
        except InvalidSignature:
            raise OcspError("bad signature on the response") from None
        for single in response.responses:
            try:
                want = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, single.hash_algorithm).build()
            except (ValueError, UnsupportedAlgorithm):
                continue
            if (single.serial_number, single.issuer_name_hash, single.issuer_key_hash) == (
                    want.serial_number, want.issuer_name_hash, want.issuer_key_hash):
                break
        else:
            raise OcspError("the response is not about this card certificate")
        if single.this_update_utc > now + CLOCK_SKEW:
            raise OcspError(f"thisUpdate {single.this_update_utc} is in the future")
        if single.next_update_utc is not None and single.next_update_utc < now - CLOCK_SKEW:
            raise OcspError(f"stale: nextUpdate {single.next_update_utc} has passed")
        return single

    @staticmethod
    def _signer(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime) -> x509.Certificate:
        """The issuing CA itself, or a delegated responder it issued for id-kp-OCSPSigning."""
        def named(cert: x509.Certificate) -> bool:
            if response.responder_name is not None:
                return cert.subject == response.responder_name
            return _key_hash(cert) == response.responder_key_hash

        if named(issuer):
            return issuer
        for cert in response.certificates:
            if not named(cert):
                continue
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise OcspError(f"the responder certificate is not issued by the card's CA ({exc})") from None
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise OcspError("the responder certificate is not valid now")
            try:
                eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                raise OcspError("the responder certificate has no extended key usage") from None
            if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                raise OcspError("the responder certificate is not for OCSP signing")
            return cert
        raise OcspError("signed by neither the card's CA nor a responder certificate it issued")


def _names(value: str | tuple[str, ...]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    return tuple(v.strip() for v in items if v.strip())


class SithsLogin:
    def __init__(self, ca_certificates: list[x509.Certificate], directory: Directory, tokens: TokenService,
                 revocation: OcspChecker | None = None, *, person_cas: str | tuple[str, ...] = PERSON_HSA_ID_CAS,
                 person_id_cas: str | tuple[str, ...] = PERSON_ID_CAS,
                 function_cas: str | tuple[str, ...] = FUNCTION_CAS, loa3_policies: str | tuple[str, ...] = (),
                 loa2_policies: str | tuple[str, ...] = (), test_environment: bool = False) -> None:
        self._store = Store(ca_certificates) if ca_certificates else None
        self._directory = directory
        self._tokens = tokens
        self._revocation = revocation
        self._person_cas = _names(person_cas)
        self._person_id_cas = _names(person_id_cas)
        self._function_cas = _names(function_cas)
        self._loa = {oid: LOA2 for oid in _names(loa2_policies)} | {oid: LOA3 for oid in _names(loa3_policies)}
        self._test_environment = test_environment

    def _which_certificate(self, leaf: x509.Certificate, issuer: x509.Certificate, serial: str) -> None:
        """Refuses anything but a card's HSA-id certificate, saying which certificate to pick instead."""
        names = issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        issuer_name = str(names[0].value) if names else ""
        if issuer_name in self._function_cas:
            raise Unauthenticated(FUNCTION_CERTIFICATE)
        if issuer_name in self._person_id_cas or pnr.is_valid(serial):
            raise Unauthenticated(PERSONNUMMER_CERTIFICATE)
        if issuer_name not in self._person_cas:
            log.info("SITHS certificate from an issuing CA that is not a Person HSA-id CA: %s", issuer_name)
            raise Unauthenticated(NOT_A_PERSON_HSA_ID_CA)

    def assurance(self, leaf: x509.Certificate) -> str:
        """LoA by the card's certificate policies: LoA 3 (substantial) wins over LoA 2 (low)."""
        try:
            policies = leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value
        except x509.ExtensionNotFound:
            policies = x509.CertificatePolicies([])
        levels = {self._loa.get(p.policy_identifier.dotted_string) for p in policies} - {None}
        if LOA3 in levels:
            return LOA3
        if LOA2 in levels:
            return LOA2
        raise Unauthenticated(NO_KNOWN_POLICY)

    def verify_chain(self, chain_pem: str, now: dt.datetime | None = None
                     ) -> tuple[str, x509.Certificate, x509.Certificate]:
        """(HSA-id, card certificate, its issuing CA) of a valid chain; revocation is not checked."""
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
            verified = verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            log.info("SITHS certificate refused: %s", exc)
            raise Unauthenticated("the card certificate is not issued by a trusted SITHS CA") from None
        if len(verified.chain) < 2:
            raise Unauthenticated("the card certificate is not issued by a trusted SITHS CA")
        serials = leaf.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        serial = str(serials[0].value) if serials else ""
        self._which_certificate(leaf, verified.chain[1], serial)
        if not serials:
            raise Unauthenticated("the card certificate carries no HSA-id (subject serialNumber)")
        try:
            hsa_id = hsa.parse(serial, test_environment=self._test_environment).normalized
        except InvalidArgument:
            raise Unauthenticated("the card certificate's serialNumber is not an HSA-id") from None
        return hsa_id, leaf, verified.chain[1]

    async def login(self, chain_pem: str) -> Session:
        hsa_id, leaf, issuer = self.verify_chain(chain_pem)
        assurance = self.assurance(leaf)
        if self._revocation is not None:
            await self._revocation.check(leaf, issuer, hsa_id)
        person = await self._directory.lookup(hsa_id)
        if person is None:
            raise PermissionDenied(f"{hsa_id} is not in the HSA directory", reason="NOT_IN_DIRECTORY")
        log.info("SITHS login", extra={"svpl_hsa_id": hsa_id, "svpl_assurance": assurance})
        return self._tokens.issue_session(staff_principal(person, SITHS, assurance))
