"""Runs last in tests/identity (file name): no log line written during the identity
tests carries a valid personnummer in clear."""

from __future__ import annotations

import logging
import re

from services.identity import personnummer
from tests.identity.conftest import CAPTURE

_CANDIDATE = re.compile(r"(?<![0-9])(?:[0-9]{6}[-+]?[0-9]{4}|[0-9]{8}-?[0-9]{4})(?![0-9])")


def unmasked_personnummer(line: str) -> list[str]:
    return [m.group(0) for m in _CANDIDATE.finditer(line) if personnummer.is_valid(m.group(0))]


def test_the_detector_finds_a_personnummer_in_clear_and_not_a_masked_one():
    assert unmasked_personnummer("login by 19121212-1212 ok") == ["19121212-1212"]
    assert unmasked_personnummer("login by 811228-9874") == ["811228-9874"]
    assert unmasked_personnummer("login by 19121212-**** from SE2321000057-1001") == []


def test_identity_logged_something_and_no_personnummer_in_clear():
    logging.getLogger("svpl.identity.test").info("log capture is on")
    assert CAPTURE.lines, "the capture saw no log records at all"
    leaks = [(line, unmasked_personnummer(line)) for line in CAPTURE.lines if unmasked_personnummer(line)]
    assert not leaks, leaks[:5]
