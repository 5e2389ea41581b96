"""The dial-in service's business metrics, on the runtime's metrics port (the default registry).

Labels are outcomes only: never a number, a person or a meeting."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

# Call quality on the trunk side (quality.py), one observation per answered call that sent RTP.
LOSS = Histogram(
    "svpl_dialin_call_packet_loss_ratio",
    "Per call: the share of the phone's RTP packets that never arrived (RFC 3550 A.3).",
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
JITTER = Histogram(
    "svpl_dialin_call_jitter_seconds",
    "Per call: the highest RFC 3550 (A.8) interarrival jitter of the phone's RTP seen during the call.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5),
)
CONCEALED = Histogram(
    "svpl_dialin_call_concealed_ratio",
    "Per call: frames the jitter buffer concealed (the packet lost, or too late to play) per frame received.",
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
POOR_CALLS = Gauge(
    "svpl_dialin_poor_quality_calls",
    "Calls on this instance whose last few seconds of RTP had > 5 % loss or concealment or > 30 ms jitter.",
)
