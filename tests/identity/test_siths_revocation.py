"""SITHS card revocation by OCSP against a real responder on loopback
(tests/identity/ocsp_responder.py): GOOD logs in, REVOKED and UNKNOWN are refused, every
unusable answer and an unreachable responder refuse the login (fail closed), GOOD answers
are cached until their max age and failures never are."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from prometheus_client import REGISTRY
from svpl.identity.v1 import identity_pb2 as pb

from devstack.embedded_db import free_port
from devstack.harness import as_token
from devstack.pki import PERSON_HSA_ID_CA, SITHS_SETTINGS, make_ca, make_leaf, siths_login
from services.identity.siths import UNCHECKED, OcspChecker
from services.runtime.errors import Unauthenticated, Unavailable

HSA = "SE2321000057-1001"  # Vera Samordnare in the demo directory


@pytest.fixture
def ocsp(responder):
    responder.reset()
    return responder


@pytest.fixture
async def checker():
    c = OcspChecker(timeout_seconds=5, cache_seconds=300)
    yield c
    await c.close()


def card(pki, responder_url: str, hsa_id: str = HSA):
    """(chain PEM, leaf, issuer) of a card that names `responder_url` as its OCSP responder."""
    issuing = pki[1]
    leaf = make_leaf(issuing, "Vera Samordnare", serial_number=hsa_id, ocsp_url=responder_url)
    return leaf.pem + issuing.pem, leaf.cert, issuing.cert


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/ocsp"  # nothing listens there


async def make_system(system_factory, pki, tmp_path, **identity):
    ca_file = tmp_path / "siths-ca.pem"
    ca_file.write_text(pki[0].pem)
    # (development_login only loads the demo HSA directory; the login is a real SITHS one.)
    return await system_factory(["identity"], overrides={"identity": dict(
        siths_ca_files=str(ca_file), development_login=True, **SITHS_SETTINGS, **identity)})


async def login_rpc(system, service_token, pem):
    return await system.stub("identity").LoginSiths(pb.LoginSithsRequest(client_certificate_pem=pem),
                                                    metadata=as_token(service_token("gateway")))


# ------------------------------------------------------------------ through the RPC


async def test_good_card_logs_in_asking_the_responder_its_certificate_names(system_factory, pki, tmp_path, ocsp,
                                                                            service_token):
    system = await make_system(system_factory, pki, tmp_path)  # no override: the card's AIA URL
    pem, leaf, _ = card(pki, ocsp.url)
    r = await login_rpc(system, service_token, pem)
    assert r.session.principal.person.id == HSA
    assert ocsp.requests[leaf.serial_number] == 1


async def test_revoked_card_is_refused_and_logged_with_hsa_id_and_reason(system_factory, pki, tmp_path, ocsp,
                                                                         service_token, raw_logs):
    system = await make_system(system_factory, pki, tmp_path)
    pem, leaf, _ = card(pki, ocsp.url)
    ocsp.status[leaf.serial_number] = "revoked"
    seen = len(raw_logs.lines)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await login_rpc(system, service_token, pem)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "the card certificate has been revoked"
    logged = [line for line in raw_logs.lines[seen:] if "revoked" in line]
    assert logged and HSA in logged[0] and "keyCompromise" in logged[0]


async def test_unreachable_responder_refuses_the_login_as_unavailable(system_factory, pki, tmp_path, ocsp,
                                                                      service_token):
    system = await make_system(system_factory, pki, tmp_path, siths_ocsp_timeout_seconds=2)
    pem, _, _ = card(pki, closed_url())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await login_rpc(system, service_token, pem)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == UNCHECKED


async def test_configured_responder_overrides_the_card_and_off_must_be_chosen(system_factory, pki, tmp_path, ocsp,
                                                                              service_token):
    pem, leaf, _ = card(pki, closed_url())
    system = await make_system(system_factory, pki, tmp_path, siths_ocsp_url=ocsp.url)
    assert (await login_rpc(system, service_token, pem)).session.principal.person.id == HSA
    assert ocsp.requests[leaf.serial_number] == 1
    # Explicitly off (the local development stack only): no responder is asked at all.
    ocsp.status[leaf.serial_number] = "revoked"
    off = await make_system(system_factory, pki, tmp_path, siths_revocation="off")
    assert (await login_rpc(off, service_token, pem)).session.principal.person.id == HSA
    assert ocsp.requests[leaf.serial_number] == 1


# ------------------------------------------------------------------ the checker itself


async def test_unknown_card_is_refused(pki, ocsp, checker):
    _, leaf, issuer = card(pki, ocsp.url)
    ocsp.status[leaf.serial_number] = "unknown"
    with pytest.raises(Unauthenticated, match="revocation status is unknown"):
        await checker.check(leaf, issuer, HSA)


async def test_a_delegated_responder_with_ocsp_signing_is_believed(pki, ocsp, checker):
    _, leaf, issuer = card(pki, ocsp.url)
    ocsp.mode = "delegated"
    await checker.check(leaf, issuer, HSA)
    ocsp.status[leaf.serial_number] = "revoked"
    with pytest.raises(Unauthenticated, match="has been revoked"):
        await OcspChecker().check(leaf, issuer, HSA)


@pytest.mark.parametrize("mode, logged", [
    ("wrong_key", "bad signature"),
    ("no_eku", "not for OCSP signing"),
    ("stale", "nextUpdate"),
    ("other_serial", "not about this card"),
    ("down", "HTTP 503"),
])
async def test_unusable_answers_refuse_the_login(pki, ocsp, checker, mode, logged, raw_logs):
    _, leaf, issuer = card(pki, ocsp.url)
    ocsp.mode = mode
    seen = len(raw_logs.lines)
    with pytest.raises(Unavailable) as err:
        await checker.check(leaf, issuer, HSA)
    assert err.value.message == UNCHECKED
    assert any(logged in line for line in raw_logs.lines[seen:])
    assert ocsp.requests[leaf.serial_number] == (0 if mode == "down" else 1)


async def test_a_responder_that_answers_too_late_refuses_the_login(pki, ocsp):
    _, leaf, issuer = card(pki, ocsp.url)
    ocsp.mode = "slow"
    checker = OcspChecker(timeout_seconds=0.2)
    try:
        with pytest.raises(Unavailable, match="could not be checked"):
            await checker.check(leaf, issuer, HSA)
    finally:
        await checker.close()


async def test_a_responder_certificate_from_another_ca_is_not_believed(pki, ocsp, checker):
    # A card of another CA that names our responder: the CA-signed answer matches neither
    # the card's issuer nor a responder certificate that issuer issued.
    other = make_ca(PERSON_HSA_ID_CA, issuer=pki[0])
    leaf = make_leaf(other, "V", serial_number=HSA, ocsp_url=ocsp.url)
    with pytest.raises(Unavailable):
        await checker.check(leaf.cert, other.cert, HSA)
    ocsp.mode = "delegated"  # a delegate issued by our CA, not by the card's
    with pytest.raises(Unavailable):
        await checker.check(leaf.cert, other.cert, HSA)


async def test_an_answer_from_the_future_is_refused(pki, ocsp, checker):
    _, leaf, issuer = card(pki, ocsp.url)
    with pytest.raises(Unavailable):
        await checker.check(leaf, issuer, HSA, now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30))


def checks(result: str) -> float:
    return REGISTRY.get_sample_value("svpl_identity_siths_revocation_checks_total", {"result": result}) or 0.0


async def test_good_answers_are_cached_until_max_age_and_failures_never(pki, ocsp, checker):
    _, leaf, issuer = card(pki, ocsp.url)
    now = dt.datetime.now(dt.timezone.utc)
    before = {r: checks(r) for r in ("good", "cached", "revoked", "unavailable")}
    await checker.check(leaf, issuer, HSA, now=now)
    await checker.check(leaf, issuer, HSA, now=now + dt.timedelta(seconds=299))
    assert ocsp.requests[leaf.serial_number] == 1
    assert (checks("good") - before["good"], checks("cached") - before["cached"]) == (1, 1)
    ocsp.status[leaf.serial_number] = "revoked"  # the card is reported lost
    with pytest.raises(Unauthenticated, match="has been revoked"):
        await checker.check(leaf, issuer, HSA, now=now + dt.timedelta(seconds=301))
    assert ocsp.requests[leaf.serial_number] == 2
    with pytest.raises(Unauthenticated):  # a refusal is not cached either
        await checker.check(leaf, issuer, HSA, now=now + dt.timedelta(seconds=302))
    assert ocsp.requests[leaf.serial_number] == 3

    _, other, _ = card(pki, ocsp.url)
    ocsp.mode = "down"
    with pytest.raises(Unavailable):
        await checker.check(other, issuer, HSA, now=now)
    ocsp.mode = "ca"
    await checker.check(other, issuer, HSA, now=now)  # asked again once the responder is back
    assert ocsp.requests[other.serial_number] == 1
    # What the dashboard shows: a responder down is visible before staff call the desk.
    assert (checks("revoked") - before["revoked"], checks("unavailable") - before["unavailable"]) == (2, 1)


async def test_the_cache_ends_at_next_update_and_is_bounded(pki, ocsp):
    checker = OcspChecker(cache_seconds=3600, cache_size=2)
    try:
        cards = [card(pki, ocsp.url) for _ in range(3)]
        now = dt.datetime.now(dt.timezone.utc)
        for _, leaf, issuer in cards:
            await checker.check(leaf, issuer, HSA, now=now)
        # The first card's answer was pushed out by the third; the newest two are kept.
        for _, leaf, issuer in reversed(cards):
            await checker.check(leaf, issuer, HSA, now=now)
        assert [ocsp.requests[leaf.serial_number] for _, leaf, _ in cards] == [2, 1, 1]
        # The responder's nextUpdate is an hour away: beyond it the answer is asked for again.
        _, leaf, issuer = cards[2]
        await checker.check(leaf, issuer, HSA, now=now + dt.timedelta(minutes=61))
        assert ocsp.requests[leaf.serial_number] == 2
    finally:
        await checker.close()


def test_chain_checks_stay_synchronous_and_name_the_issuing_ca(pki):
    root, issuing = pki
    leaf = make_leaf(issuing, "V", serial_number=HSA)
    hsa_id, card_cert, issuer = siths_login([root.cert]).verify_chain(leaf.pem + issuing.pem)
    assert (hsa_id, card_cert, issuer) == (HSA, leaf.cert, issuing.cert)
