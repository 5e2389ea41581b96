"""SRTP keyed by SDES (RFC 4568 `a=crypto` in the SDP offer/answer) for trunks that encrypt their media.

The offer carries one or more `a=crypto:<tag> <suite> inline:<base64 key||salt>[|lifetime]` lines in
preference order; the answer takes the first one whose suite we speak and that has no session
parameters or MKI we do not (RFC 4568 §7.1.1: such a line is skipped), and answers with the same tag
and suite and a fresh random key of our own. Each direction then has its own key: the caller's
protects what they send us, ours what we send them. The packets themselves are protected with
libsrtp (pylibsrtp, installed with aiortc): no cryptography is hand-written here.

SDES puts the keys in the SDP, so they are only secret when the signalling is: the call flow accepts
`a=crypto` only from a SIP over TLS connection (or with the documented `sdes_over_insecure`
override), see docs/DIALIN.md."""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

import pylibsrtp

# Suite name → (libsrtp profile, master key + salt bytes). AES_CM_128_HMAC_SHA1_80 first: RFC 4568's
# mandatory suite, and what SBCs offer first.
SUITES: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AES_CM_128_HMAC_SHA1_32": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
}


class SdesError(ValueError):
    """The offer's crypto attributes offer nothing we can use."""


@dataclass(frozen=True)
class Crypto:
    """One offered `a=crypto` line: its tag, suite, and the offerer's master key + salt."""

    tag: str
    suite: str
    key: bytes


def parse(line: str) -> Crypto | None:
    """One `a=crypto` value (without "crypto:"), or None when it is not one we can accept."""
    parts = line.split()
    if len(parts) != 3 or not parts[0].isdigit() or parts[1] not in SUITES:
        return None  # a fourth part is a session parameter (KDR, UNENCRYPTED_SRTP, …): not accepted
    tag, suite, key_params = parts
    if ";" in key_params or not key_params.startswith("inline:"):
        return None  # several keys need an MKI
    fields = key_params[len("inline:"):].split("|")
    if len(fields) > 2 or (len(fields) == 2 and ":" in fields[1]):
        return None  # an MKI (libsrtp's policy here has none)
    try:
        key = base64.b64decode(fields[0], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key) != SUITES[suite][1]:
        return None
    return Crypto(tag, suite, key)


def choose(lines: list[str]) -> Crypto:
    """The first acceptable offered crypto line (the offer's order is its preference)."""
    for line in lines:
        crypto = parse(line)
        if crypto is not None:
            return crypto
    raise SdesError("no acceptable a=crypto line (suites spoken: " + ", ".join(SUITES) + ")")


class SrtpContext:
    """The two SRTP sessions of one call, from the offer's chosen crypto line and our own new key."""

    def __init__(self, offered: Crypto) -> None:
        profile, size = SUITES[offered.suite]
        self.offered = offered
        self.local_key = secrets.token_bytes(size)
        self._rx = pylibsrtp.Session(pylibsrtp.Policy(key=offered.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                                      srtp_profile=profile))
        self._tx = pylibsrtp.Session(pylibsrtp.Policy(key=self.local_key,
                                                      ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                      srtp_profile=profile))
        self.rejected = 0  # packets that failed authentication (or replays): dropped

    @property
    def answer(self) -> str:
        """Our `a=crypto` value for the SDP answer (same tag and suite, our key)."""
        return f"{self.offered.tag} {self.offered.suite} inline:{base64.b64encode(self.local_key).decode()}"

    def protect(self, packet: bytes, rtcp: bool) -> bytes:
        return self._tx.protect_rtcp(packet) if rtcp else self._tx.protect(packet)

    def unprotect(self, packet: bytes, rtcp: bool) -> bytes | None:
        """The plain packet, or None (counted) when it does not authenticate: a forged or replayed one."""
        try:
            return self._rx.unprotect_rtcp(packet) if rtcp else self._rx.unprotect(packet)
        except pylibsrtp.Error:
            self.rejected += 1
            return None
