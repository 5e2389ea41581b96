"""Identity's business metrics (the RPC counters come from the shared interceptor)."""

from __future__ import annotations

from prometheus_client import Counter

SITHS_REVOCATION = Counter(
    "svpl_identity_siths_revocation_checks_total",
    "SITHS card revocation checks at login, by result: good (asked the OCSP responder), cached, revoked, "
    "unknown, unavailable (responder unreachable or its answer unusable: the login was refused).",
    ["result"],
)
