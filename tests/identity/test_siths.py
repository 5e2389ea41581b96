"""SITHS login with real certificates: a test CA (root + issuing CAs of each kind) and cards made
with `cryptography`; only a valid card's HSA-id certificate from a configured "Person HSA-id" CA
whose holder is in the HSA directory gets a session token, at the LoA its certificate policy says."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2 as pb

from devstack.harness import as_token
from devstack.pki import (
    FUNCTION_CA,
    LOA2_POLICY,
    PERSON_HSA_ID_CA,
    PERSON_ID_CA,
    REPLACEMENT_CA,
    SITHS_SETTINGS,
    make_ca,
    make_leaf,
    siths_login,
)
from services.identity.siths import FUNCTION_CERTIFICATE, NO_KNOWN_POLICY, PERSONNUMMER_CERTIFICATE
from services.runtime.errors import Unauthenticated


@pytest.fixture
async def system(system_factory, pki, tmp_path, responder):
    ca_file = tmp_path / "siths-ca.pem"
    ca_file.write_text(pki[0].pem)
    return await system_factory(["identity"], overrides={"identity": dict(
        siths_ca_files=str(ca_file), development_login=True, siths_ocsp_url=responder.url, **SITHS_SETTINGS)})


async def login(system, service_token, pem):
    return await system.stub("identity").LoginSiths(pb.LoginSithsRequest(client_certificate_pem=pem),
                                                    metadata=as_token(service_token("gateway")))


async def test_valid_card_logs_in_with_directory_roles(system, service_token, pki, responder):
    _, issuing = pki
    card = make_leaf(issuing, "Vera Samordnare", serial_number="SE2321000057-1001")
    r = await login(system, service_token, card.pem + issuing.pem)
    p = r.session.principal
    assert (p.person.id, p.person.id_kind, p.method, p.assurance) == (
        "SE2321000057-1001", common_pb2.ID_KIND_HSA_ID, common_pb2.LOGIN_METHOD_SITHS, "substantial")
    assert set(p.roles) == {"staff", "region_staff", "coordinator"}
    v = await system.stub("identity").VerifyToken(pb.VerifyTokenRequest(token=r.session.token),
                                                  metadata=as_token(service_token("gateway")))
    assert v.principal.person.display_name == "Vera Samordnare"
    assert responder.requests[card.cert.serial_number] == 1  # its revocation status was asked


@pytest.mark.parametrize("case, message", [
    ("expired", "has expired"),
    ("not_yet_valid", "not valid yet"),
    ("wrong_ca", "not issued by a trusted SITHS CA"),
    ("missing_serial_number", "carries no HSA-id"),
    ("serial_not_hsa_id", "is not an HSA-id"),
    ("personnummer_in_serial", PERSONNUMMER_CERTIFICATE),
    ("no_assurance_policy", NO_KNOWN_POLICY),
    ("encryption_key", "may not be used for signing"),
    ("email_only", "not issued by a trusted SITHS CA"),
    ("chain_missing_issuing_ca", "not issued by a trusted SITHS CA"),
])
async def test_bad_cards_are_refused(system, service_token, pki, case, message):
    _, issuing = pki
    hsa = "SE2321000057-1001"
    pem = {
        "expired": lambda: make_leaf(issuing, "V", serial_number=hsa, days_valid=(-400, -1)).pem + issuing.pem,
        "not_yet_valid": lambda: make_leaf(issuing, "V", serial_number=hsa, days_valid=(2, 300)).pem + issuing.pem,
        "wrong_ca": lambda: (lambda other: make_leaf(other, "V", serial_number=hsa).pem + other.pem)(
            make_ca(PERSON_HSA_ID_CA, issuer=make_ca("SITHS Root CA v1 Test"))),
        "missing_serial_number": lambda: make_leaf(issuing, "V").pem + issuing.pem,
        "serial_not_hsa_id": lambda: make_leaf(issuing, "V", serial_number="E-post").pem + issuing.pem,
        "personnummer_in_serial": lambda: make_leaf(issuing, "V", serial_number="191212121212").pem + issuing.pem,
        "no_assurance_policy": lambda: make_leaf(issuing, "V", serial_number=hsa, policies=[]).pem + issuing.pem,
        "encryption_key": lambda: make_leaf(issuing, "V", serial_number=hsa, digital_signature=False).pem
        + issuing.pem,
        "email_only": lambda: make_leaf(issuing, "V", serial_number=hsa, client_auth=False).pem + issuing.pem,
        "chain_missing_issuing_ca": lambda: make_leaf(issuing, "V", serial_number=hsa).pem,
    }[case]()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await login(system, service_token, pem)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in err.value.details()


async def test_card_holder_missing_from_the_directory_is_refused(system, service_token, pki):
    _, issuing = pki
    card = make_leaf(issuing, "Nobody", serial_number="SE2321000057-404404")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await login(system, service_token, card.pem + issuing.pem)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_garbage_is_an_invalid_argument_and_only_the_gateway_may_call(system, service_token):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await login(system, service_token, "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await system.stub("identity").LoginSiths(pb.LoginSithsRequest(client_certificate_pem="x"),
                                                 metadata=as_token(service_token("roster")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_validity_is_checked_at_the_time_of_login(pki):
    root, issuing = pki
    card = make_leaf(issuing, "V", serial_number="SE2321000057-1001", days_valid=(-1, 30))
    siths = siths_login([root.cert])
    assert siths.verify_chain(card.pem + issuing.pem)[0] == "SE2321000057-1001"
    with pytest.raises(Unauthenticated, match="has expired"):
        siths.verify_chain(card.pem + issuing.pem, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=31))


@pytest.fixture(scope="module")
def other_cas(pki):
    """The other issuing CAs of the SITHS e-id PKI, under the same root."""
    root = pki[0]
    return {name: make_ca(name, issuer=root) for name in (REPLACEMENT_CA, PERSON_ID_CA, FUNCTION_CA,
                                                          "TEST SITHS e-id Some Other CA v1")}


async def test_a_replacement_card_logs_in_at_loa_2(system, service_token, other_cas, responder):
    replacement = other_cas[REPLACEMENT_CA]
    original, responder.ca = responder.ca, replacement  # its own CA answers for it (the URL override)
    card = make_leaf(replacement, "Vera Samordnare", serial_number="SE2321000057-1001", policies=[LOA2_POLICY])
    try:
        r = await login(system, service_token, card.pem + replacement.pem)
    finally:
        responder.ca = original
    assert r.session.principal.assurance == "low"


@pytest.mark.parametrize("ca, serial, message", [
    (PERSON_ID_CA, "191212121212", PERSONNUMMER_CERTIFICATE),  # the card's personnummer certificate
    (FUNCTION_CA, "T-SERVICES-SE165565594230-11JQ", FUNCTION_CERTIFICATE),  # a system's certificate
    (FUNCTION_CA, "SE2321000057-1001", FUNCTION_CERTIFICATE),  # even one that names a person's HSA-id
    ("TEST SITHS e-id Some Other CA v1", "SE2321000057-1001", "inte utfärdat av en SITHS-CA för inloggning"),
])
async def test_only_the_cards_hsa_id_certificate_logs_in(system, service_token, other_cas, ca, serial, message):
    issuing = other_cas[ca]
    card = make_leaf(issuing, "Vera Samordnare", serial_number=serial)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await login(system, service_token, card.pem + issuing.pem)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in err.value.details()
    assert "Välj certifikatet med ditt HSA-id" in err.value.details() or ca not in (PERSON_ID_CA, FUNCTION_CA)
