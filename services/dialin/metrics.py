"""The dial-in service's business metrics, on the runtime's metrics port (the default registry).

Labels are outcomes only: never a number, a person or a meeting."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CALLS = Counter(
    "svpl_dialin_calls_total",
    "Incoming calls by how they ended (bridged, lobby_left, removed, refused, ended, not_started, "
    "too_many_entries, rate_limited, untrusted_source, bad_credentials, busy, no_audio, srtp_offered, unavailable, hung_up).",
    ["outcome"],
)
ENTRIES = Counter(
    "svpl_dialin_entries_total",
    "Meeting IDs and personal codes entered on the keypad, by result (found, wrong: meeting IDs; code_found, "
    "wrong_code, code_not_taken: personal codes; rate_limited_number, rate_limited_total: either).",
    ["result"],
)
ACTIVE = Gauge("svpl_dialin_active_calls", "Calls answered and not yet ended on this instance (the HPA's metric).")
BRIDGED = Gauge("svpl_dialin_bridged_calls", "Calls bridged into a meeting's room on this instance.")
AUTH = Counter(
    "svpl_dialin_digest_checks_total",
    "INVITEs checked against the trunk's SIP digest credentials, by verdict (ok, missing: challenged, "
    "stale: challenged again, wrong: refused).",
    ["verdict"],
)
