"""1177 login (citizens and next of kin): an OpenID Connect relying party for the
1177 e-services identity provider, authorization-code flow with PKCE (S256), state and
nonce, through authlib's OAuth 2 client; the ID token is verified with joserfc
(authlib's JOSE library) against the provider's published keys: signature, issuer,
audience, expiry and nonce.

The Swedish OIDC profile (github.com/oidc-sweden/specifications): the personnummer claim
`https://id.oidc.se/claim/personalIdentityNumber` is released only for the scope
`https://id.oidc.se/scope/naturalPersonNumber` (asked for by default); people with a
samordningsnummer get `https://id.oidc.se/claim/coordinationNumber` instead, read as well. The client
authenticates with `private_key_jwt` (the profile's default; a key file, its public key registered
at the provider); `client_secret_basic` only where the provider offers nothing else.

Assurance (both 1177 paths, see assurance.py): the minimum level is asked for (acr_values) and the ID
token's `acr` must reach it; a weaker login is refused with a Swedish message.

Pending logins (state → nonce, PKCE verifier, redirect URI) live in identity's own
database so any replica can finish a login, and each state can be used once.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import ssl
import time
import warnings
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, KeySetSerialization, RSAKey

from services.identity import personnummer as pnr
from services.identity.assurance import Assurance
from services.identity.token_service import E_SERVICES_1177, Session, TokenService, citizen_principal
from services.runtime.errors import FailedPrecondition, InvalidArgument, Unauthenticated, Unavailable

with warnings.catch_warnings():
    # authlib 1.9 announces a move to "httpx2" when imported with httpx; httpx is what svpl uses.
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

log = logging.getLogger("svpl.identity.oidc1177")
ALGORITHMS = ["RS256", "ES256", "PS256"]
PERSONAL_NUMBER_SCOPE = "https://id.oidc.se/scope/naturalPersonNumber"
PERSONNUMMER_CLAIM = "https://id.oidc.se/claim/personalIdentityNumber"
COORDINATION_NUMBER_CLAIM = "https://id.oidc.se/claim/coordinationNumber"


class Oidc1177Login:
    def __init__(self, issuer: str, client_id: str, client_secret: str, db, tokens: TokenService, *,
                 ca_file: str = "", scope: str = f"openid {PERSONAL_NUMBER_SCOPE}",
                 personnummer_claim: str = PERSONNUMMER_CLAIM,
                 coordination_number_claim: str = COORDINATION_NUMBER_CLAIM, client_key_file: str = "",
                 assurance: Assurance | None = None,
                 state_ttl: dt.timedelta = dt.timedelta(minutes=10), timeout: float = 10.0) -> None:
        self._issuer = issuer.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        # private_key_jwt: the client's key signs a client assertion at the token endpoint.
        self._client_key = Path(client_key_file).read_text() if client_key_file else ""
        self._coordination_claim = coordination_number_claim
        self._assurance = assurance or Assurance()
        self._pending = db["oidc_logins"]
        self._tokens = tokens
        self._scope = scope
        self._claim = personnummer_claim
        self._state_ttl = state_ttl
        self._verify = ssl.create_default_context(cafile=ca_file or None)
        self._timeout = timeout
        self._metadata: dict | None = None
        self._keys: KeySet | None = None
        self._keys_fetched = 0.0

    @property
    def configured(self) -> bool:
        return bool(self._issuer and self._client_id)

    async def ensure_indexes(self) -> None:
        await self._pending.create_index("expires_at", expireAfterSeconds=0)

    def _client(self, redirect_uri: str, token_endpoint: str = "") -> AsyncOAuth2Client:
        if not self._client_key:
            return AsyncOAuth2Client(self._client_id, self._client_secret, scope=self._scope,
                                     redirect_uri=redirect_uri, code_challenge_method="S256", verify=self._verify,
                                     timeout=self._timeout)
        key: ECKey | RSAKey
        try:
            key = ECKey.import_key(self._client_key)
        except (ValueError, JoseError):
            key = RSAKey.import_key(self._client_key)
        client = AsyncOAuth2Client(self._client_id, key, scope=self._scope, redirect_uri=redirect_uri,
                                   code_challenge_method="S256", verify=self._verify, timeout=self._timeout,
                                   token_endpoint_auth_method=PrivateKeyJWT.name)
        client.register_client_auth_method(PrivateKeyJWT(token_endpoint, alg="ES256" if key.key_type == "EC"
                                                         else "RS256"))
        return client

    async def _get_json(self, url: str) -> dict:
        try:
            async with httpx.AsyncClient(verify=self._verify, timeout=self._timeout) as http:
                response = await http.get(url)
                response.raise_for_status()
                return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"the 1177 login service is not reachable ({exc.__class__.__name__})") from None

    async def metadata(self) -> dict:
        if self._metadata is None:
            meta = await self._get_json(f"{self._issuer}/.well-known/openid-configuration")
            if meta.get("issuer", "").rstrip("/") != self._issuer:
                raise Unavailable("the 1177 provider's metadata names another issuer")
            self._metadata = meta
        return self._metadata

    async def _keyset(self, refresh: bool = False) -> KeySet:
        if self._keys is None or (refresh and time.monotonic() - self._keys_fetched > 10):
            # The provider's JWK Set document (RFC 7517), as its metadata names it: KeySet reads each key.
            jwks = cast(KeySetSerialization, await self._get_json((await self.metadata())["jwks_uri"]))
            self._keys = KeySet.import_key_set(jwks)
            self._keys_fetched = time.monotonic()
        return self._keys

    def _require(self) -> None:
        if not self.configured:
            raise FailedPrecondition("1177 login is not configured", reason="E_SERVICES_1177_NOT_CONFIGURED")

    @staticmethod
    def redirect_uri(redirect_uri: str) -> str:
        """A checked redirect URI (also the SAML path's assertion consumer service)."""
        uri = (redirect_uri or "").strip()
        try:
            parts = urlsplit(uri)
            host = parts.hostname or ""
        except ValueError:
            parts, host = None, ""
        loopback = host in ("127.0.0.1", "localhost", "::1")
        if not parts or not host or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise InvalidArgument("redirect_uri", "an https:// URL (http only on loopback) is required")
        if parts.fragment:
            raise InvalidArgument("redirect_uri", "must not have a #fragment")
        return uri

    async def start(self, redirect_uri: str) -> tuple[str, str]:
        """The provider's authorization URL for the browser, and the state that will come back."""
        self._require()
        uri = self.redirect_uri(redirect_uri)
        meta = await self.metadata()
        state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
        async with self._client(uri) as client:
            url, _ = client.create_authorization_url(meta["authorization_endpoint"], state=state,
                                                     code_verifier=verifier, nonce=nonce,
                                                     acr_values=" ".join(self._assurance.acceptable_oidc()))
        await self._pending.insert_one({
            "_id": state, "nonce": nonce, "code_verifier": verifier, "redirect_uri": uri,
            "expires_at": dt.datetime.now(dt.timezone.utc) + self._state_ttl,
        })
        return url, state

    async def complete(self, state: str, code: str, redirect_uri: str) -> Session:
        self._require()
        if not (state or "").strip():
            raise InvalidArgument("state", "is required")
        if not (code or "").strip():
            raise InvalidArgument("code", "is required")
        pending = await self._pending.find_one_and_delete({"_id": state.strip()})  # one use only
        if pending is None or pending["expires_at"] < dt.datetime.now(dt.timezone.utc):
            raise FailedPrecondition("this 1177 login is unknown, used or expired: start again",
                                     reason="UNKNOWN_STATE")
        if self.redirect_uri(redirect_uri) != pending["redirect_uri"]:
            raise InvalidArgument("redirect_uri", "must be the one the login started with")
        meta = await self.metadata()
        try:
            async with self._client(pending["redirect_uri"], meta["token_endpoint"]) as client:
                token = await client.fetch_token(meta["token_endpoint"], grant_type="authorization_code",
                                                 code=code.strip(), code_verifier=pending["code_verifier"])
        except httpx.HTTPError as exc:
            raise Unavailable(f"the 1177 login service is not reachable ({exc.__class__.__name__})") from None
        except Exception as exc:  # noqa: BLE001 - authlib raises OAuthError subclasses for error answers
            log.info("1177 token request refused: %s", exc.__class__.__name__)
            raise Unauthenticated("1177 refused the login (the code may be used or expired): start again") from None
        claims = await self._id_token_claims(token.get("id_token", ""), pending["nonce"])
        assurance = self._assurance.check(str(claims.get("acr", "")))
        claim = self._claim if claims.get(self._claim) else self._coordination_claim
        try:
            number = pnr.parse(str(claims.get(claim, "")), claim).normalized
        except InvalidArgument:
            raise Unauthenticated("the 1177 ID token carries no valid personnummer") from None
        name = claims.get("name") or f"{claims.get('given_name', '')} {claims.get('family_name', '')}".strip()
        log.info("1177 login", extra={"svpl_person": pnr.mask(number)})
        return self._tokens.issue_session(citizen_principal(number, name, E_SERVICES_1177, assurance))

    async def _id_token_claims(self, id_token: str, nonce: str) -> dict:
        if not id_token:
            raise Unauthenticated("1177 returned no ID token")
        try:
            try:
                decoded = jwt.decode(id_token, await self._keyset(), algorithms=ALGORITHMS)
            except (ValueError, JoseError):  # perhaps a rotated key: fetch the keys once more
                decoded = jwt.decode(id_token, await self._keyset(refresh=True), algorithms=ALGORITHMS)
            jwt.JWTClaimsRegistry(
                leeway=60,
                iss={"essential": True, "value": self._issuer},
                aud={"essential": True, "value": self._client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (ValueError, JoseError) as exc:
            log.info("1177 ID token refused: %s", exc.__class__.__name__)
            raise Unauthenticated(f"the 1177 ID token is not valid ({exc.__class__.__name__})") from None
        return decoded.claims

