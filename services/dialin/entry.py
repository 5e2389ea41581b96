"""What a caller enters and what is known of them, as plain Python (no SIP, no gRPC): the meeting
ID from the keypad, the bounds on guessing it, the masked calling number, the connection's id."""

from __future__ import annotations

import collections
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

MAX_DIGITS = 20  # a meeting ID has 7–16 digits; anything longer is not one


def caller_number(uri_or_number: str) -> str:
    """The calling number's digits (and a leading +) from a SIP URI or a tel: number; "" if none."""
    user = uri_or_number.strip()
    user = re.sub(r"^.*<|>.*$", "", user)
    user = re.sub(r"^(sips?|tel):", "", user).split("@", 1)[0].split(";", 1)[0]
    number = re.sub(r"[\s().-]", "", user)
    return number if re.fullmatch(r"\+?\d{3,20}", number) else ""


def masked(number: str) -> str:
    """A number as logs and the coordinator see it: its last two digits only."""
    return f"…{number[-2:]}" if len(number) >= 2 else "dolt nummer"


def label(number: str) -> str:
    """The coordinator's label for an unidentified phone connection (Swedish, shown as is)."""
    return f"Telefon, slutar på {masked(number)}" if number else "Telefon, dolt nummer"


def connection_id(key: bytes, meeting_id: str, number: str) -> str:
    """The phone connection's id in roster: the same for the same number calling the same meeting
    (so a number the coordinator removed is refused when it calls back), not reversible to the
    number (an HMAC with the service's key). A withheld number gets a fresh id each call."""
    if not number:
        return "phone-" + secrets.token_hex(12)
    digest = hmac.new(key, f"{meeting_id}\x00{number}".encode(), hashlib.sha256).hexdigest()
    return "phone-" + digest[:24]


class Digits:
    """Keypad entry: digits until '#'; '*' starts over. `feed` returns the entry once '#' ends it."""

    def __init__(self) -> None:
        self._entry: list[str] = []

    def feed(self, key: str) -> str | None:
        if key == "#":
            entry, self._entry = "".join(self._entry), []
            return entry
        if key == "*":
            self._entry = []
        elif key.isdigit() and len(self._entry) < MAX_DIGITS:
            self._entry.append(key)
        return None

    @property
    def started(self) -> bool:
        return bool(self._entry)


class RateLimit:
    """Meeting-ID entries allowed per calling number (per `number_window` seconds) and in total (per
    `total_window`), in this instance. Sliding windows of entry times; a withheld number counts as
    one number, so withheld callers share its bound."""

    def __init__(self, per_number: int, number_window: float, total: int, total_window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_number, self.number_window = per_number, number_window
        self.total, self.total_window = total, total_window
        self._clock = clock
        self._numbers: dict[str, collections.deque[float]] = {}
        self._all: collections.deque[float] = collections.deque()

    @staticmethod
    def _trim(times: collections.deque[float], since: float) -> None:
        while times and times[0] <= since:
            times.popleft()

    def allow(self, number: str) -> str:
        """Record an entry; "" if allowed, else which bound stopped it ("number" or "total")."""
        now = self._clock()
        self._trim(self._all, now - self.total_window)
        for key in [k for k, v in self._numbers.items() if not v or v[-1] <= now - self.number_window]:
            del self._numbers[key]
        mine = self._numbers.setdefault(number, collections.deque())
        self._trim(mine, now - self.number_window)
        if len(mine) >= self.per_number:
            return "number"
        if len(self._all) >= self.total:
            return "total"
        mine.append(now)
        self._all.append(now)
        return ""
