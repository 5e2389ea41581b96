"""Test certificates made with `cryptography` (for the tests and the benchmarks, never shipped): a
SITHS-like CA and cards, and TLS server certificates for the BankID, OIDC and TURN test servers."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc)
# The test SITHS e-id PKI: issuing CA names as in Inera's test environment ("TEST" + the production
# name), and certificate policy OIDs for LoA 3 / LoA 2 under a private test arc (the identity
# settings in SITHS_SETTINGS make them the configured ones).
PERSON_HSA_ID_CA = "TEST SITHS e-id Person HSA-id 3 CA v1"
REPLACEMENT_CA = "TEST SITHS e-id Person HSA-id 2 CA v1"
PERSON_ID_CA = "TEST SITHS e-id Person ID 3 CA v1"
FUNCTION_CA = "TEST SITHS e-id Function CA v1"
LOA3_POLICY = "1.3.6.1.4.1.4203.666.22.3"
LOA2_POLICY = "1.3.6.1.4.1.4203.666.22.2"
SITHS_SETTINGS = {"siths_person_ca_names": f"{PERSON_HSA_ID_CA},{REPLACEMENT_CA}",
                  "siths_person_id_ca_names": PERSON_ID_CA, "siths_function_ca_names": FUNCTION_CA,
                  "siths_loa3_policy_oids": LOA3_POLICY, "siths_loa2_policy_oids": LOA2_POLICY}


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()

    @property
    def public_pem(self) -> str:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_text(self.pem)
        key.write_text(self.key_pem)
        return cert, key


def _name(cn: str, serial_number: str | None = None, org: str = "Test") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
             x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial_number is not None:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    return x509.Name(attrs)


def make_ca(cn: str = "SITHS e-id Test CA", issuer: Issued | None = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(cn, org="Inera AB (test)")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def make_leaf(ca: Issued, cn: str, *, serial_number: str | None = None, days_valid: tuple[int, int] = (-1, 365),
              digital_signature: bool = True, client_auth: bool = True, server_names: Sequence[str] = (),
              ocsp_url: str | None = None, policies: Sequence[str] | None = None, mutual: bool = False) -> Issued:
    """A certificate issued by `ca`: a client's, or with `server_names` a server's (`mutual`: a service's,
    which is both: it serves and calls, as cert-manager's usages [server auth, client auth]). A client
    certificate names the LoA 3 test policy unless `policies` says otherwise (a server certificate names none)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, serial_number))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days_valid[0]))
        .not_valid_after(NOW + dt.timedelta(days=days_valid[1]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                                     key_encipherment=not digital_signature, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    if server_names:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if mutual else [])
        sans = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n) for n in server_names]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if policies is None:
        policies = [] if server_names or not client_auth else [LOA3_POLICY]
    if policies:
        builder = builder.add_extension(x509.CertificatePolicies(
            [x509.PolicyInformation(x509.ObjectIdentifier(oid), None) for oid in policies]), critical=False)
    if ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def make_ocsp_responder(ca: Issued, cn: str = "SITHS OCSP responder Test", *, ocsp_signing: bool = True) -> Issued:
    """A delegated OCSP responder certificate issued by `ca` (with or without id-kp-OCSPSigning)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.OCSP_SIGNING if ocsp_signing else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org="Inera AB (test)"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def siths_login(ca_certificates: list[x509.Certificate]):
    """A SithsLogin (no directory, no tokens) configured like SITHS_SETTINGS, for chain checks."""
    from services.identity.siths import SithsLogin

    s = SITHS_SETTINGS
    return SithsLogin(ca_certificates, None, None, person_cas=s["siths_person_ca_names"],  # type: ignore[arg-type]
                      person_id_cas=s["siths_person_id_ca_names"], function_cas=s["siths_function_ca_names"],
                      loa3_policies=s["siths_loa3_policy_oids"], loa2_policies=s["siths_loa2_policy_oids"])


def turn_certificate(directory: Path) -> Callable[[str], tuple[str, str, str]]:
    """coturn's TLS certificate for an address, from a fresh test CA: (certificate, key, CA) files in
    `directory` (the network tests and bench/network.py hand it to devstack.netns.https_only)."""
    def make(address: str) -> tuple[str, str, str]:
        ca = make_ca("svpl TURN test CA")
        cert, key = make_leaf(ca, address, server_names=[address]).write(directory, "turn")
        (directory / "ca.pem").write_text(ca.pem)
        return str(cert), str(key), str(directory / "ca.pem")

    return make
