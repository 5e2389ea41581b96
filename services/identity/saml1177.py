"""1177 login over SAML 2.0 Web SSO, as Inera's citizen IdP is published (its entityID
`https://idp.<env>.invanar-idp.inera.se:443/saml/citizen`; attributes Subject_SerialNumber /
personalIdentityNumber; LoA http://id.sambi.se/loa/loa0..3). pysaml2 does the protocol and
Debian's xmlsec1 the XML signatures (no hand-written XML security).

The same two steps as the OIDC path, so the gateway and the contract do not change:
Start1177Login gives the IdP's URL with a signed AuthnRequest (HTTP-Redirect binding, asking for the
minimum LoA) and a state (the RelayState); Complete1177Login takes the state and, as `code`, the
SAMLResponse the IdP posted back to the assertion consumer service (HTTP-POST binding), with the
redirect URI as that service's URL. The response must answer this very request (InResponseTo, the
request id kept with the state; unsolicited responses are refused), carry an assertion signed by the
IdP in its metadata, be for this SP and current; the state is used once. The assurance
(AuthnContextClassRef) must reach the minimum (assurance.py), else a Swedish message refuses it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import shutil
import warnings

from services.identity import personnummer as pnr
from services.identity.assurance import Assurance
from services.identity.oidc1177 import Oidc1177Login  # one rule for redirect URIs
from services.identity.token_service import E_SERVICES_1177, Session, TokenService, citizen_principal
from services.runtime.errors import FailedPrecondition, InvalidArgument, Unauthenticated

with warnings.catch_warnings():
    # pysaml2 names a cipher mode cryptography has moved (a deprecation warning at import only).
    warnings.simplefilter("ignore")
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
    from saml2.client import Saml2Client
    from saml2.config import SPConfig
    from saml2.saml import AuthnContextClassRef
    from saml2.samlp import RequestedAuthnContext

log = logging.getLogger("svpl.identity.saml1177")
# Where the person's number is, in the order tried (Inera's citizen IdP sends the first two).
PERSON_ATTRIBUTES = ("Subject_SerialNumber", "personalIdentityNumber", "urn:oid:1.2.752.29.4.13")
MAX_RESPONSE = 256 * 1024


class Saml1177Login:
    def __init__(self, sp_entity_id: str, idp_metadata_file: str, sp_key_file: str, sp_cert_file: str, db,
                 tokens: TokenService, *, idp_entity_id: str = "", assurance: Assurance | None = None,
                 state_ttl: dt.timedelta = dt.timedelta(minutes=10)) -> None:
        self._sp = sp_entity_id
        self._metadata = idp_metadata_file
        self._key, self._cert = sp_key_file, sp_cert_file
        self._idp = idp_entity_id
        self._pending = db["saml_logins"]
        self._tokens = tokens
        self._assurance = assurance or Assurance()
        self._state_ttl = state_ttl
        self._clients: dict[str, Saml2Client] = {}

    @property
    def configured(self) -> bool:
        return bool(self._sp and self._metadata)

    async def ensure_indexes(self) -> None:
        await self._pending.create_index("expires_at", expireAfterSeconds=0)

    def _client(self, acs_url: str) -> Saml2Client:
        """A pysaml2 SP whose assertion consumer service is `acs_url` (one per URL, kept)."""
        if acs_url not in self._clients:
            config = SPConfig()
            config.load({
                "entityid": self._sp, "key_file": self._key, "cert_file": self._cert,
                "xmlsec_binary": shutil.which("xmlsec1") or "/usr/bin/xmlsec1",
                "metadata": {"local": [self._metadata]},
                "allow_unknown_attributes": True, "accepted_time_diff": 60,
                "service": {"sp": {
                    "endpoints": {"assertion_consumer_service": [(acs_url, BINDING_HTTP_POST)]},
                    "want_assertions_signed": True, "want_response_signed": False,
                    "authn_requests_signed": bool(self._key), "allow_unsolicited": False,
                }},
            })
            self._clients[acs_url] = Saml2Client(config)
        return self._clients[acs_url]

    def _require(self) -> None:
        if not self.configured:
            raise FailedPrecondition("1177 login is not configured", reason="E_SERVICES_1177_NOT_CONFIGURED")

    def _idp_of(self, client: Saml2Client) -> str:
        if self._idp:
            return self._idp
        idps = list(client.metadata.identity_providers())
        if len(idps) != 1:
            raise FailedPrecondition("1177 login: name the IdP (the metadata lists several)",
                                     reason="E_SERVICES_1177_NOT_CONFIGURED")
        return idps[0]

    async def start(self, redirect_uri: str) -> tuple[str, str]:
        self._require()
        acs = Oidc1177Login.redirect_uri(redirect_uri)
        state = secrets.token_urlsafe(32)
        wanted = RequestedAuthnContext(
            authn_context_class_ref=[AuthnContextClassRef(u) for u in self._assurance.acceptable_saml()],
            comparison="exact")

        def prepare() -> tuple[str, str]:
            client = self._client(acs)
            request_id, info = client.prepare_for_authenticate(
                entityid=self._idp_of(client), relay_state=state, binding=BINDING_HTTP_REDIRECT,
                requested_authn_context=wanted)
            return request_id, dict(info["headers"])["Location"]

        request_id, url = await asyncio.to_thread(prepare)  # signing runs xmlsec1
        await self._pending.insert_one({"_id": state, "request_id": request_id, "redirect_uri": acs,
                                        "expires_at": dt.datetime.now(dt.timezone.utc) + self._state_ttl})
        return url, state

    async def complete(self, state: str, code: str, redirect_uri: str) -> Session:
        self._require()
        if not (state or "").strip():
            raise InvalidArgument("state", "is required")
        if not (code or "").strip():
            raise InvalidArgument("code", "is required: the SAMLResponse")
        if len(code) > MAX_RESPONSE:
            raise InvalidArgument("code", f"at most {MAX_RESPONSE} characters")
        pending = await self._pending.find_one_and_delete({"_id": state.strip()})  # one use only
        if pending is None or pending["expires_at"] < dt.datetime.now(dt.timezone.utc):
            raise FailedPrecondition("this 1177 login is unknown, used or expired: start again",
                                     reason="UNKNOWN_STATE")
        if Oidc1177Login.redirect_uri(redirect_uri) != pending["redirect_uri"]:
            raise InvalidArgument("redirect_uri", "must be the one the login started with")

        def parse():
            client = self._client(pending["redirect_uri"])
            return client.parse_authn_request_response(
                code.strip(), BINDING_HTTP_POST, outstanding={pending["request_id"]: pending["redirect_uri"]})

        try:
            response = await asyncio.to_thread(parse)
        except Exception as exc:  # noqa: BLE001 - pysaml2 raises many unrelated types for a bad response
            log.info("1177 SAML response refused: %s", exc.__class__.__name__)
            raise Unauthenticated(f"the 1177 SAML response is not valid ({exc.__class__.__name__})") from None
        if response is None:
            raise Unauthenticated("the 1177 SAML response is not valid (empty)")
        contexts = [ref for ref, *_ in response.authn_info()]
        assurance = self._assurance.check(contexts[0] if len(contexts) == 1 else "")
        attributes = response.ava or {}
        value = next((attributes[a][0] for a in PERSON_ATTRIBUTES if attributes.get(a)), "")
        try:
            number = pnr.parse(str(value), "personalIdentityNumber").normalized
        except InvalidArgument:
            raise Unauthenticated("the 1177 SAML assertion carries no valid personnummer") from None
        name = (attributes.get("displayName") or [""])[0] or " ".join(
            (attributes.get(a) or [""])[0] for a in ("givenName", "sn")).strip()
        log.info("1177 login (SAML)", extra={"svpl_person": pnr.mask(number)})
        return self._tokens.issue_session(citizen_principal(number, name, E_SERVICES_1177, assurance))
