"""Every log record emitted while the identity tests run is kept, unmasked, so that
test_zz_no_personnummer_in_logs.py can check that no personnummer reached a log line."""

from __future__ import annotations

import logging

import pytest


class RawCapture(logging.Handler):
    """Keeps each record's full text before any masking filter sees it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.name, record.getMessage()]
        parts += [str(v) for k, v in record.__dict__.items() if k.startswith("svpl_")]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        self.lines.append(" ".join(parts))


CAPTURE = RawCapture()


@pytest.fixture(scope="session", autouse=True)
def capture_all_logs():
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(CAPTURE)
    root.setLevel(logging.INFO)  # the services' default level
    yield CAPTURE
    root.removeHandler(CAPTURE)
    root.setLevel(old_level)


@pytest.fixture(scope="session")
def directory_entries():
    """A few hundred generated HSA entries (the demo generator with its own seed and size)."""
    from services.identity.demo.generate import directory

    return directory(count=320, seed=7)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory, directory_entries):
    from tests.identity.slapd import Slapd, slapd_available

    if not slapd_available():
        pytest.fail("slapd is not installed: run `make system-deps` (Debian packages slapd ldap-utils)")
    server = Slapd(tmp_path_factory.mktemp("slapd"), directory_entries).start()
    yield server
    server.stop()
