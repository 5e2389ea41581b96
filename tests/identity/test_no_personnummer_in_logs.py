"""No log line carries a personnummer in clear. Here identity's citizen logins (BankID, 1177) and
personnummer validations run, and the raw log records they produce (before any masking filter) are
checked; the conftest's `raw_logs` applies the same check to every other identity test."""

from __future__ import annotations

import grpc
import pytest
from svpl.identity.v1 import identity_pb2 as pb

from devstack.harness import as_token
from tests.identity.oidc_provider import PNR_CLAIM
from tests.identity.test_1177 import log_in
from tests.privacy.detector import personnummer_in as unmasked_personnummer


def test_the_detector_finds_a_personnummer_in_clear_and_not_a_masked_one():
    assert unmasked_personnummer("login by 19121212-1212 ok") == ["19121212-1212"]
    assert unmasked_personnummer("login by 811228-9874") == ["811228-9874"]
    assert unmasked_personnummer("GET /patients/191212121212 200") == ["191212121212"]
    assert unmasked_personnummer("login by 19121212-**** from SE2321000057-1001") == []
    # Digits inside a random hex id (a booking id from a CI run) are not a person's number.
    assert unmasked_personnummer("GET /api/v1/bookings/4f297a6370f0504892076e6149934680 200") == []


async def test_identity_logged_something_and_no_personnummer_in_clear(
        raw_logs, system_factory, bankid_server, oidc_provider, tls_files, service_token):
    system = await system_factory(["identity"], overrides={"identity": dict(
        bankid_url=bankid_server.url, bankid_client_cert_file=tls_files["rp_cert"],
        bankid_client_key_file=tls_files["rp_key"], bankid_ca_file=tls_files["server_ca"],
        oidc_1177_issuer=oidc_provider.issuer, oidc_1177_client_id="svpl-rjl",
        oidc_1177_client_key_file=tls_files["oidc_client_key"], oidc_1177_ca_file=tls_files["server_ca"])})
    identity, gw = system.stub("identity"), as_token(service_token("gateway"))

    # The patient logs in with BankID (the test server's user: Tolvan Tolvansson, 191212121212).
    bankid_server.script_next("complete")
    started = await identity.StartBankIdLogin(pb.StartBankIdLoginRequest(end_user_ip="192.0.2.10"), metadata=gw)
    collect = pb.CollectBankIdLoginRequest(order_ref=started.order_ref)
    while (collected := await identity.CollectBankIdLogin(collect, metadata=gw)).status == pb.BANK_ID_STATUS_PENDING:
        pass
    assert collected.session.principal.person.id == "191212121212"
    # The next of kin logs in with 1177.
    oidc_provider.user = {PNR_CLAIM: "198112289874", "name": "Nils Närstående"}
    _, completed = await log_in(system, gw, tls_files)
    assert completed.session.principal.person.id == "198112289874"
    # A service validates a personnummer, and one with a wrong check digit.
    roster = as_token(service_token("roster"))
    await identity.ValidatePersonnummer(pb.ValidatePersonnummerRequest(personnummer="19121212-1212"), metadata=roster)
    with pytest.raises(grpc.aio.AioRpcError):
        await identity.ValidatePersonnummer(pb.ValidatePersonnummerRequest(personnummer="19121212-1213"),
                                            metadata=roster)

    # The capture saw this flow's own lines (so an empty or detached capture cannot pass), each
    # naming the person the way the code must: masked before any logging filter runs.
    logins = {marker: [line for line in raw_logs.lines if marker in line] for marker in ("BankID login", "1177 login")}
    assert logins["BankID login"] and all("19121212-****" in line for line in logins["BankID login"]), logins
    assert logins["1177 login"] and all("19811228-****" in line for line in logins["1177 login"]), logins
    leaks = [(line, unmasked_personnummer(line)) for line in raw_logs.lines if unmasked_personnummer(line)]
    assert not leaks, leaks[:5]
