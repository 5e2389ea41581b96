"""Personal dial-in codes: meeting ID + a participant's personal code lets a phone caller in as that
person, without waiting for the coordinator.

A code is never stored. The participant's registration holds a random value (`code_nonce`, 128
bits, new at each re-issue) and the code is derived from it with roster's secret key:
the first `digits` decimal digits of HMAC-SHA256(key, meeting id | participant id | nonce). So the
database (and its backups) holds nothing that gives the code without the key, roster can show a
participant their own code on their meeting page at any time, and a re-issue (a new nonce) stops
the old code at once. Codes are compared in constant time against every current participant's.
An 8-byte HMAC prefix reduced mod 10**digits has a bias below 10**digits / 2**64 (negligible).

How guessing is bounded (docs/DIALIN.md computes it): 3 entries per call, the dial-in's rate
limits per number and in total, and above all a per-meeting cap on wrong codes (the meeting
document counts them; past the cap no code is accepted, callers wait in the lobby instead).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Protocol, TypeVar

# The marker in an outbox message's body where the code is filled in when the message is sent
# (so the outbox collection never holds it).
MARKER = "{personlig_kod}"


class _Registered(Protocol):
    id: str
    code_nonce: str
    removed: bool


P = TypeVar("P", bound="_Registered")


def new_nonce() -> str:
    return secrets.token_hex(16)


class PersonalCodes:
    def __init__(self, key: str, digits: int = 8) -> None:
        self._key = key.encode()
        self.digits = digits

    @property
    def enabled(self) -> bool:
        return bool(self._key)

    def code(self, meeting_id: str, participant_id: str, nonce: str) -> str:
        """The participant's current code ("" when codes are off or none was issued)."""
        if not self.enabled or not nonce:
            return ""
        mac = hmac.new(self._key, f"{meeting_id}\x00{participant_id}\x00{nonce}".encode(), hashlib.sha256).digest()
        return str(int.from_bytes(mac[:8], "big") % 10**self.digits).zfill(self.digits)

    def match(self, meeting_id: str, people: Iterable[P], entered: str) -> P | None:
        """The not removed participant whose current code is `entered`, or None. Every participant is
        compared (constant time each), so the time taken says nothing about which one was close."""
        found = None
        keyed = entered.encode("utf-8", "replace")  # bytes: compare_digest refuses non-ASCII str
        for p in people:
            mine = self.code(meeting_id, p.id, p.code_nonce)
            if mine and hmac.compare_digest(mine.encode(), keyed) and not p.removed:
                found = p
        return found

    def render(self, body: str, meeting_id: str, participant_id: str, nonce: str) -> str:
        return body.replace(MARKER, self.code(meeting_id, participant_id, nonce))
