"""Identity test set-up. Every log record an identity test emits is kept raw (before any masking
filter) and, after the test, checked for a personnummer in clear: each test is checked on its own,
whatever order the tests run in (test_no_personnummer_in_logs.py proves the check sees a flow's lines)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from devstack.embedded_db import free_port
from devstack.pki import PERSON_HSA_ID_CA, make_ca
from tests.identity.ocsp_responder import OcspTestResponder
from tests.privacy.detector import personnummer_in


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


@pytest.fixture(autouse=True)
def raw_logs():
    """This test's log records, raw; after the test (an error at its teardown) none may carry a
    personnummer in clear."""
    capture = RawCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.INFO)  # the services' default level
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
    leaks = [(line, personnummer_in(line)) for line in capture.lines if personnummer_in(line)]
    assert not leaks, f"a personnummer in clear in a log line: {leaks[:5]}"


@pytest.fixture(scope="session")
def directory_entries():
    """A few hundred generated HSA entries (the demo generator with its own seed and size)."""
    from services.identity.demo.generate import directory

    return directory(count=320, seed=7)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory, directory_entries):
    from devstack.slapd import Slapd, slapd_available

    if not slapd_available():
        pytest.fail("slapd is not installed: run `make system-deps` (Debian packages slapd ldap-utils)")
    server = Slapd(tmp_path_factory.mktemp("slapd"), directory_entries).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """Real TLS for the login test servers: a server CA (127.0.0.1 certificates) and an RP client CA."""
    from devstack.pki import make_ca, make_leaf

    d = tmp_path_factory.mktemp("tls")
    server_ca, client_ca = make_ca("Test server CA"), make_ca("BankID RP test CA")
    files = {"server_ca": d / "server-ca.pem", "client_ca": d / "client-ca.pem"}
    files["server_ca"].write_text(server_ca.pem)
    files["client_ca"].write_text(client_ca.pem)
    files["server_cert"], files["server_key"] = make_leaf(server_ca, "127.0.0.1", server_names=["127.0.0.1"]).write(
        d, "server")
    files["rp_cert"], files["rp_key"] = make_leaf(client_ca, "svpl RP").write(d, "rp")
    stranger = make_ca("Someone else's CA")
    files["stranger_cert"], files["stranger_key"] = make_leaf(stranger, "not our RP").write(d, "stranger")
    # The 1177 OIDC client's key (private_key_jwt): the public half is registered at the provider.
    oidc_client = make_ca("svpl 1177 client key")
    files["oidc_client_key"] = d / "oidc-client.key"
    files["oidc_client_key"].write_text(oidc_client.key_pem)
    files["oidc_client_public"] = d / "oidc-client.pub"
    files["oidc_client_public"].write_text(oidc_client.public_pem)
    return {k: str(v) for k, v in files.items()}


@pytest.fixture(scope="session")
async def bankid_server(tls_files):
    from devstack.embedded_db import free_port
    from tests.identity.bankid_server import BankIdTestServer

    server = await BankIdTestServer(free_port(), tls_files["server_cert"], tls_files["server_key"],
                                    tls_files["client_ca"]).start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def oidc_provider(tls_files):
    from devstack.embedded_db import free_port
    from tests.identity.oidc_provider import OidcTestProvider

    provider = await OidcTestProvider(free_port(), tls_files["server_cert"], tls_files["server_key"],
                                      "svpl-rjl", Path(tls_files["oidc_client_public"]).read_text()).start()
    yield provider
    await provider.stop()


@pytest.fixture(scope="module")
def pki():
    """A SITHS-like root CA and the issuing CA of the test cards: (root, issuing)."""
    root = make_ca("SITHS Root CA v1 Test")
    return root, make_ca(PERSON_HSA_ID_CA, issuer=root)


@pytest.fixture(scope="module")
async def responder(pki):
    """The issuing CA's OCSP responder on loopback (every card GOOD unless a test says otherwise)."""
    server = await OcspTestResponder(free_port(), pki[1]).start()
    yield server
    await server.stop()
