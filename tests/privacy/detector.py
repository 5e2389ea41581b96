"""Finding a personnummer (or samordningsnummer) in clear in a log line, for the tests that check
no code path logs one. A candidate is a whole token: ten or twelve digits, with an optional
separator, not inside a longer run of letters and digits (a random hex id such as a booking id
holds digit runs that can pass the checksum by chance: "…70f0504892076e61…" is not a person)."""

from __future__ import annotations

import re

from services.identity import personnummer

_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])(?:[0-9]{6}[-+ ]?[0-9]{4}|[0-9]{8}[-+ ]?[0-9]{4})(?![0-9A-Za-z])")


def personnummer_in(line: str) -> list[str]:
    return [m.group(0) for m in _CANDIDATE.finditer(line) if personnummer.is_valid(m.group(0).replace(" ", ""))]
