"""Runs last in tests/identity (file name): no log line written during the identity
tests carries a valid personnummer in clear."""

from __future__ import annotations

import logging

from tests.identity.conftest import CAPTURE
from tests.privacy.detector import personnummer_in as unmasked_personnummer


def test_the_detector_finds_a_personnummer_in_clear_and_not_a_masked_one():
    assert unmasked_personnummer("login by 19121212-1212 ok") == ["19121212-1212"]
    assert unmasked_personnummer("login by 811228-9874") == ["811228-9874"]
    assert unmasked_personnummer("GET /patients/191212121212 200") == ["191212121212"]
    assert unmasked_personnummer("login by 19121212-**** from SE2321000057-1001") == []
    # Digits inside a random hex id (a booking id from a CI run) are not a person's number.
    assert unmasked_personnummer("GET /api/v1/bookings/4f297a6370f0504892076e6149934680 200") == []


def test_identity_logged_something_and_no_personnummer_in_clear():
    logging.getLogger("svpl.identity.test").info("log capture is on")
    assert CAPTURE.lines, "the capture saw no log records at all"
    leaks = [(line, unmasked_personnummer(line)) for line in CAPTURE.lines if unmasked_personnummer(line)]
    assert not leaks, leaks[:5]
