"""A SAML 2.0 identity provider standing in for Inera's citizen IdP (a test fixture, never shipped):
pysaml2's own IdP side, with metadata for both parties. It reads the AuthnRequest svpl's browser
redirect carries and answers with an assertion it signs: the person and the LoA the test chose,
`Subject_SerialNumber` / `personalIdentityNumber` as Inera's IdP names them."""

from __future__ import annotations

import base64
import datetime as dt
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
    from saml2.config import IdPConfig, SPConfig
    from saml2.metadata import create_metadata_string
    from saml2.saml import NAMEID_FORMAT_TRANSIENT, NameID
    from saml2.server import Server

IDP = "https://idp.test.invanar-idp.example:443/saml/citizen"
SP = "https://portal.example/saml/svpl"
LOA2, LOA3 = "http://id.sambi.se/loa/loa2", "http://id.sambi.se/loa/loa3"


def key_and_certificate(directory: Path, name: str) -> tuple[str, str]:
    """An RSA key and a self-signed certificate (SAML metadata certificates are self-signed)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    key_file, cert_file = directory / f"{name}.key", directory / f"{name}.crt"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_file), str(cert_file)


class SamlTestIdp:
    def __init__(self, directory: Path, acs_url: str) -> None:
        self.sp_key, self.sp_cert = key_and_certificate(directory, "sp")
        idp_key, idp_cert = key_and_certificate(directory, "idp")
        sp = {"entityid": SP, "key_file": self.sp_key, "cert_file": self.sp_cert,
              "service": {"sp": {"endpoints": {"assertion_consumer_service": [(acs_url, BINDING_HTTP_POST)]},
                                 "authn_requests_signed": True, "want_assertions_signed": True}}}
        idp = {"entityid": IDP, "key_file": idp_key, "cert_file": idp_cert,
               "service": {"idp": {"endpoints": {"single_sign_on_service": [(
                   "https://idp.test.invanar-idp.example/sso", BINDING_HTTP_REDIRECT)]},
                   "policy": {"default": {"sign_assertion": True, "sign_response": False}}}}}
        self.idp_metadata = directory / "idp-metadata.xml"
        self.idp_metadata.write_text(create_metadata_string(None, config=_loaded(IdPConfig, idp)).decode())
        sp_metadata = directory / "sp-metadata.xml"
        sp_metadata.write_text(create_metadata_string(None, config=_loaded(SPConfig, sp)).decode())
        self.server = Server(config=_loaded(IdPConfig, {**idp, "metadata": {"local": [str(sp_metadata)]}}))
        # Another IdP's key (for forged answers): same entityID, a key svpl does not know.
        self.forger = Server(config=_loaded(IdPConfig, {**idp, "key_file": key_and_certificate(directory, "x")[0],
                                                        "metadata": {"local": [str(sp_metadata)]}}))

    def request(self, url: str):
        """The AuthnRequest (and RelayState) the browser carries to the IdP."""
        q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        return self.server.parse_authn_request(q["SAMLRequest"], BINDING_HTTP_REDIRECT).message, q["RelayState"]

    def answer(self, request, number: str, loa: str, *, forged: bool = False,
               attribute: str = "Subject_SerialNumber") -> str:
        """The SAMLResponse (base64) the IdP posts back for `request`."""
        server = self.forger if forged else self.server
        response = server.create_authn_response(
            {attribute: [number], "displayName": ["Nils Närstående"]}, in_response_to=request.id,
            destination=request.assertion_consumer_service_url, sp_entity_id=SP,
            name_id=NameID(format=NAMEID_FORMAT_TRANSIENT, text="t-1"),
            authn={"class_ref": loa, "authn_auth": IDP}, sign_assertion=True)
        return base64.b64encode(str(response).encode()).decode()


def _loaded(kind, values: dict):
    config = kind()
    config.load(dict(values))
    return config
