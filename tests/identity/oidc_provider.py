"""A small OpenID Connect provider standing in for the 1177 e-services IdP (a test
fixture, never shipped), following the Swedish OIDC profile: discovery, JWKS, /authorize (the
user the test chose "logs in" and is redirected back with a code), /token (private_key_jwt: a
client assertion signed with the client's registered key; PKCE S256 checked, codes single-use)
issuing an ES256-signed ID token. The personnummer claims are released only when the scope
`https://id.oidc.se/scope/naturalPersonNumber` was asked for; `acr` is the level the test chose.
Served over real TLS."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Header, Request
from fastapi.responses import JSONResponse, RedirectResponse
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from tests.identity.tls_app import TlsApp

PNR_CLAIM = "https://id.oidc.se/claim/personalIdentityNumber"
COORDINATION_CLAIM = "https://id.oidc.se/claim/coordinationNumber"
PNR_SCOPE = "https://id.oidc.se/scope/naturalPersonNumber"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LOA3 = "http://id.elegnamnden.se/loa/1.0/loa3"


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str
    challenge: str
    claims: dict
    scope: list[str]


class OidcTestProvider(TlsApp):
    def __init__(self, port: int, certfile: str, keyfile: str, client_id: str, client_public_key: str) -> None:
        self.issuer = f"https://127.0.0.1:{port}"
        self.client_id = client_id
        self.client_key = ECKey.import_key(client_public_key)  # registered for private_key_jwt
        self.acr = LOA3
        self.seen_assertions: set[str] = set()
        self.key = ECKey.generate_key("P-256", parameters={"kid": "k1", "use": "sig", "alg": "ES256"})
        self.signing_key = self.key  # a test may swap in a key the JWKS does not publish
        self.user = {PNR_CLAIM: "198112289874", "name": "Nils Närstående"}
        self.tamper: dict = {}  # claims to override in the next ID token (wrong aud, nonce, ...)
        self.grants: dict[str, Grant] = {}
        self.token_requests: list[dict] = []
        app = FastAPI()
        app.get("/.well-known/openid-configuration")(self._discovery)
        app.get("/jwks")(self._jwks)
        app.get("/authorize")(self._authorize)
        app.post("/token")(self._token)
        super().__init__(app, port, certfile, keyfile)

    async def _discovery(self):
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["ES256"], "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "scopes_supported": ["openid", PNR_SCOPE], "acr_values_supported": [LOA3]}

    async def _jwks(self):
        return KeySet([self.key]).as_dict(private=False)

    async def _authorize(self, request: Request):
        q = request.query_params
        if (q.get("response_type") != "code" or q.get("client_id") != self.client_id
                or q.get("code_challenge_method") != "S256" or not q.get("code_challenge")
                or "openid" not in q.get("scope", "").split()):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(q["client_id"], q["redirect_uri"], q.get("nonce", ""), q["code_challenge"],
                                  dict(self.user), q.get("scope", "").split())
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}",
                                status_code=302)

    async def _token(self, grant_type: str = Form(""), code: str = Form(""), redirect_uri: str = Form(""),
                     code_verifier: str = Form(""), client_assertion_type: str = Form(""),
                     client_assertion: str = Form(""), authorization: str = Header("")):
        self.token_requests.append({"grant_type": grant_type, "redirect_uri": redirect_uri,
                                    "has_verifier": bool(code_verifier), "auth": client_assertion_type or
                                    authorization.split(" ")[0]})
        if not self._client_authenticated(client_assertion_type, client_assertion):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.grants.pop(code, None)  # single use
        challenge = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
        if (grant_type != "authorization_code" or grant is None or grant.redirect_uri != redirect_uri
                or grant.challenge != challenge):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        # The profile: the personal identity claims only for the scope that asks for them.
        released = {k: v for k, v in grant.claims.items()
                    if k not in (PNR_CLAIM, COORDINATION_CLAIM) or PNR_SCOPE in grant.scope}
        claims = {"iss": self.issuer, "aud": self.client_id, "sub": secrets.token_hex(8), "iat": now,
                  "exp": now + 300, "nonce": grant.nonce, "acr": self.acr, **released, **self.tamper}
        id_token = jwt.encode({"alg": "ES256", "kid": "k1"}, claims, self.signing_key)
        return {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                "id_token": id_token}

    def _client_authenticated(self, assertion_type: str, assertion: str) -> bool:
        """private_key_jwt (RFC 7523): signed by the registered key, iss = sub = client id, aud = the
        token endpoint, not expired, each assertion once."""
        if assertion_type != ASSERTION_TYPE or not assertion:
            return False
        try:
            token = jwt.decode(assertion, self.client_key, algorithms=["ES256"])
            jwt.JWTClaimsRegistry(iss={"essential": True, "value": self.client_id},
                                  sub={"essential": True, "value": self.client_id},
                                  exp={"essential": True}, jti={"essential": True}).validate(token.claims)
        except (ValueError, JoseError):
            return False
        audience = token.claims.get("aud")
        if f"{self.issuer}/token" not in (audience if isinstance(audience, list) else [audience]):
            return False
        if token.claims["jti"] in self.seen_assertions:
            return False
        self.seen_assertions.add(token.claims["jti"])
        return True
