"""The dial-in service's business metrics, on the runtime's metrics port (the default registry).

Labels are outcomes only: never a number, a person or a meeting."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter(
    "svpl_dialin_calls_total",
    "Incoming calls by how they ended (bridged, lobby_left, removed, refused, ended, not_started, "
    "too_many_entries, rate_limited, untrusted_source, bad_credentials, busy, no_audio, plain_rtp_refused, "
    "sdes_insecure, srtp_unusable, unavailable, hung_up).",
    ["outcome"],
)
# Trunk transport security and codecs (SIP over TLS, SRTP/SDES, G.722/Opus; docs/DIALIN.md).
ANSWERED = Counter("svpl_dialin_answered_calls_total", "Calls answered, by codec (opus, G722, PCMA, PCMU), media "
                   "(srtp, rtp) and signalling transport (tls, udp).", ["codec", "media", "transport"])
BYE_RETRANSMISSIONS = Counter("svpl_dialin_bye_retransmissions_total", "BYEs sent again over UDP because the "
                              "trunk had not answered yet (RFC 3261 Timer E): many mean a lossy trunk link.")
TLS_HANDSHAKES = Counter("svpl_dialin_tls_handshakes_total", "SIP over TLS connections by handshake result (ok; "
                         "refused: no or a foreign client certificate, not TLS, or too slow).", ["result"])
SRTP_REJECTED = Counter("svpl_dialin_srtp_rejected_packets_total", "SRTP and SRTCP packets dropped because "
                        "they failed authentication (forged, replayed, wrong key, or sent in clear), by kind "
                        "(srtp, srtcp).", ["kind"])
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
RATIO_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LOSS = Histogram(
    "svpl_dialin_call_packet_loss_ratio",
    "Per call: the share of the phone's RTP packets that never arrived (RFC 3550 A.3).",
    buckets=RATIO_BUCKETS,
)
JITTER = Histogram(
    "svpl_dialin_call_jitter_seconds",
    "Per call: the highest RFC 3550 (A.8) interarrival jitter of the phone's RTP seen during the call.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5),
)
CONCEALED = Histogram(
    "svpl_dialin_call_concealed_ratio",
    "Per call: frames the jitter buffer concealed (the packet lost, or too late to play) per frame received.",
    buckets=RATIO_BUCKETS,
)
POOR_CALLS = Gauge(
    "svpl_dialin_poor_quality_calls",
    "Calls on this instance whose last few seconds of RTP had > 5 % loss or concealment or > 30 ms jitter.",
)
