"""Identity's signing keys and the tokens it issues (Ed25519 JWTs, key id in the header).

Verification lives in the shared runtime (services.runtime.auth), which every
service uses with the public keys served by GetSigningKeys. Rotation: the first
key signs; the others still verify until they are removed from the key directory.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.runtime import auth

# Service tokens: the default lifetime and the longest the CLI issues (see issue_service_token).
SERVICE_TOKEN_TTL = dt.timedelta(days=30)
MAX_SERVICE_TOKEN_TTL = dt.timedelta(days=90)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    def public_jwk(self) -> dict:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": auth.ALGORITHM}


class KeyRing:
    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one signing key")
        self.keys = keys

    @property
    def current(self) -> SigningKey:
        return self.keys[0]

    @classmethod
    def generate(cls, kid: str | None = None) -> KeyRing:
        return cls([SigningKey(kid or uuid.uuid4().hex[:16], Ed25519PrivateKey.generate())])

    @classmethod
    def load(cls, directory: str | Path) -> KeyRing:
        """Every `<kid>.pem` in the directory; the newest file signs."""
        files = sorted(Path(directory).glob("*.pem"), key=lambda p: p.stat().st_mtime, reverse=True)
        keys = []
        for path in files:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path}: not an Ed25519 private key")
            keys.append(SigningKey(path.stem, key))
        if not keys:
            raise ValueError(f"no signing keys (*.pem) in {directory}")
        return cls(keys)

    def save_current(self, directory: str | Path) -> Path:
        path = Path(directory) / f"{self.current.kid}.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = self.current.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.write_bytes(pem)
        path.chmod(0o600)
        return path

    def jwks_json(self) -> str:
        return json.dumps({"keys": [k.public_jwk() for k in self.keys]})

    def keyset(self) -> auth.KeySet:
        return auth.KeySet.static(self.jwks_json())

    def sign(self, claims: dict, ttl: dt.timedelta, audience: str = auth.AUDIENCE) -> tuple[str, str, dt.datetime]:
        now = dt.datetime.now(dt.timezone.utc)
        expires = now + ttl
        jti = uuid.uuid4().hex
        payload = {**claims, "iss": auth.ISSUER, "aud": audience, "iat": now, "exp": expires, "jti": jti}
        token = jwt.encode(payload, self.current.private_key, algorithm=auth.ALGORITHM, headers={"kid": self.current.kid})
        return token, jti, expires

    def issue_service_token(self, service: str, ttl: dt.timedelta = SERVICE_TOKEN_TTL) -> str:
        """A service's own token. 30 days by default (was a year): service calls now also need the
        service's TLS certificate, but a token copied out of a Secret or a log stays usable until it
        expires, and a retired signing key can be dropped only once every token it signed has expired.
        30 days lets both rotations run monthly (re-mint, restart); MAX_SERVICE_TOKEN_TTL bounds it."""
        return self.sign({"typ": auth.SERVICE, "sub": f"service:{service}"}, ttl)[0]

    def issue_session_token(
        self,
        *,
        person_id: str,
        id_kind: str,
        name: str,
        method: str,
        assurance: str,
        roles: list[str],
        organization: str = "",
        unit: str = "",
        ttl: dt.timedelta = dt.timedelta(hours=1),
    ) -> tuple[str, str, dt.datetime]:
        claims = {
            "typ": auth.SESSION, "sub": person_id, "idk": id_kind, "name": name, "amr": method,
            "acr": assurance, "roles": sorted(set(roles)), "org": organization, "unit": unit,
        }
        return self.sign(claims, ttl)

    def issue_join_token(
        self, *, meeting_id: str, participant_id: str, media_instance: str, ttl: dt.timedelta
    ) -> tuple[str, str, dt.datetime]:
        claims = {"typ": auth.JOIN, "sub": participant_id, "mid": meeting_id, "pid": participant_id, "inst": media_instance}
        return self.sign(claims, ttl, audience=auth.MEDIA_AUDIENCE)
