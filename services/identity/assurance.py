"""The assurance of a citizen's 1177 login (OIDC `acr`, SAML AuthnContextClassRef), as a level, and
the minimum svpl requires (LoA 3, eIDAS substantial, by default: SVPL_E_SERVICES_1177_MIN_LOA).

Levels by URI: the Swedish e-identification board's LoA URIs (http://id.elegnamnden.se/loa/1.0/…,
used by the Swedish OIDC profile), their eIDAS forms, and Sambi's (http://id.sambi.se/loa/loa0…3,
which Inera's citizen IdP advertises). A login whose level is unknown or below the minimum is refused
with a message in Swedish.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.errors import Unauthenticated

LEVELS = {
    "http://id.elegnamnden.se/loa/1.0/loa2": 2,
    "http://id.elegnamnden.se/loa/1.0/loa3": 3,
    "http://id.elegnamnden.se/loa/1.0/loa4": 4,
    "http://id.elegnamnden.se/loa/1.0/eidas-low": 2,
    "http://id.elegnamnden.se/loa/1.0/eidas-sub": 3,
    "http://id.elegnamnden.se/loa/1.0/eidas-nf-sub": 3,
    "http://id.elegnamnden.se/loa/1.0/eidas-high": 4,
    "http://id.elegnamnden.se/loa/1.0/eidas-nf-high": 4,
    "http://id.sambi.se/loa/loa0": 0,
    "http://id.sambi.se/loa/loa1": 1,
    "http://id.sambi.se/loa/loa2": 2,
    "http://id.sambi.se/loa/loa3": 3,
}
NAMES = {2: "low", 3: "substantial", 4: "high"}  # as eIDAS names them (the session's assurance)


def too_weak(level: int | None, minimum: int) -> str:
    said = f"tillitsnivå {level}" if level is not None else "en okänd tillitsnivå"
    return (f"Inloggningen via 1177 gjordes med {said}, men mötet kräver minst tillitsnivå {minimum}. "
            "Logga in igen med en e-legitimation som har den nivån, till exempel BankID.")


@dataclass(frozen=True)
class Assurance:
    minimum: int = 3

    def acceptable_oidc(self) -> list[str]:
        """The Swedish OIDC profile's LoA URIs that reach the minimum (for acr_values)."""
        return [uri for uri, level in LEVELS.items()
                if level >= self.minimum and uri.startswith("http://id.elegnamnden.se/loa/1.0/loa")]

    def acceptable_saml(self) -> list[str]:
        """Sambi's LoA URIs that reach the minimum (for the AuthnRequest's RequestedAuthnContext)."""
        return [uri for uri, level in LEVELS.items() if level >= self.minimum and "sambi" in uri]

    def check(self, uri: str) -> str:
        """The session's assurance name for a login at `uri`; Unauthenticated if below the minimum."""
        level = LEVELS.get(uri.strip())
        if level is None or level < self.minimum:
            raise Unauthenticated(too_weak(level, self.minimum))
        return NAMES.get(level, "substantial")
