"""BankID login through the RP API v6 client, against the BankID test server over
mutual TLS: orders that complete, fail, expire, are cancelled, or carry unknown hint
codes; the animated QR code; the QR secret never leaves identity."""

from __future__ import annotations

import hashlib
import hmac

import grpc
import pytest
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2 as pb

from devstack.harness import as_token
from services.identity.bankid import (
    RFA1,
    RFA6,
    RFA8,
    RFA9,
    RFA21,
    RFA22,
    RFA23,
    BankIdClient,
    BankIdLogin,
    qr_data,
    user_message,
)
from services.runtime.errors import Unavailable
from tests.identity.test_tokens_rpc import field_violation


@pytest.fixture
async def system(system_factory, bankid_server, tls_files):
    return await system_factory(["identity"], overrides={"identity": dict(
        bankid_url=bankid_server.url, bankid_client_cert_file=tls_files["rp_cert"],
        bankid_client_key_file=tls_files["rp_key"], bankid_ca_file=tls_files["server_ca"])})


@pytest.fixture
def gw(service_token):
    return as_token(service_token("gateway"))


async def start(system, gw, ip="192.0.2.10"):
    return await system.stub("identity").StartBankIdLogin(pb.StartBankIdLoginRequest(end_user_ip=ip), metadata=gw)


async def collect(system, gw, order_ref):
    return await system.stub("identity").CollectBankIdLogin(pb.CollectBankIdLoginRequest(order_ref=order_ref),
                                                            metadata=gw)


def check_qr(content: str, token: str, secret: str) -> int:
    prefix, qr_token, seconds, digest = content.split(".")
    assert (prefix, qr_token) == ("bankid", token)
    assert digest == hmac.new(secret.encode(), seconds.encode(), hashlib.sha256).hexdigest()
    return int(seconds)


async def test_completed_order_issues_one_citizen_session(system, gw, bankid_server, service_token):
    bankid_server.script_next("complete")
    started = await start(system, gw)
    order = bankid_server.orders[started.order_ref]
    assert check_qr(started.qr_data, order.qr_start_token, order.qr_start_secret) == 0
    qr = await system.stub("identity").GetBankIdQr(pb.GetBankIdQrRequest(order_ref=started.order_ref), metadata=gw)
    assert check_qr(qr.qr_data, order.qr_start_token, order.qr_start_secret) >= 0
    seen = []
    while True:
        r = await collect(system, gw, started.order_ref)
        seen.append((r.status, r.hint_code, r.user_message))
        if r.status != pb.BANK_ID_STATUS_PENDING:
            break
    assert seen[:3] == [(pb.BANK_ID_STATUS_PENDING, "outstandingTransaction", RFA1),
                        (pb.BANK_ID_STATUS_PENDING, "started", seen[1][2]),
                        (pb.BANK_ID_STATUS_PENDING, "userSign", RFA9)]
    assert r.status == pb.BANK_ID_STATUS_COMPLETE
    p = r.session.principal
    assert (p.person.id, p.person.id_kind, p.person.display_name, p.method, list(p.roles)) == (
        "191212121212", common_pb2.ID_KIND_PERSONNUMMER, "Tolvan Tolvansson", common_pb2.LOGIN_METHOD_BANKID,
        ["citizen"])
    v = await system.stub("identity").VerifyToken(pb.VerifyTokenRequest(token=r.session.token), metadata=gw)
    assert v.principal.assurance == "substantial"
    # The same order cannot be collected into a second session.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(system, gw, started.order_ref)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert bankid_server.requests[-1][0] == "collect" and bankid_server.requests[-1][1] == {
        "orderRef": started.order_ref}


async def test_the_logins_record_keeps_bankids_signature_and_ocsp_response(system, gw, bankid_server, mongo):
    from pymongo import AsyncMongoClient

    bankid_server.script_next("complete")
    started = await start(system, gw)
    while (r := await collect(system, gw, started.order_ref)).status == pb.BANK_ID_STATUS_PENDING:
        pass
    v = await system.stub("identity").VerifyToken(pb.VerifyTokenRequest(token=r.session.token), metadata=gw)
    client = AsyncMongoClient(mongo.uri, tz_aware=True)
    try:
        records = [d async for d in client[f"{system.prefix}_identity"]["login_records"].find({})]
    finally:
        await client.close()
    assert [(x["_id"], x["method"], x["person_id"], x["order_ref"], x["signature"], x["ocsp_response"])
            for x in records] == [(v.token_id, "bankid", "191212121212", started.order_ref, "PHNpZ25hdHVyZS8+",
                                   "b2NzcA==")]


def test_rfa23_is_for_the_id_document_and_call_confirmation_has_its_own_text():
    assert user_message("pending", "userMrtd") == "Fotografera och läs av din ID-handling med BankID-appen."
    assert user_message("pending", "userCallConfirm") not in (RFA23, RFA21)


async def test_qr_secret_never_leaves_identity(system, gw, bankid_server):
    started = await start(system, gw)
    order = bankid_server.orders[started.order_ref]
    qr = await system.stub("identity").GetBankIdQr(pb.GetBankIdQrRequest(order_ref=started.order_ref), metadata=gw)
    for message in (started, qr):
        assert order.qr_start_secret.encode() not in message.SerializeToString()
    await system.stub("identity").CancelBankIdLogin(pb.CancelBankIdLoginRequest(order_ref=started.order_ref),
                                                    metadata=gw)


@pytest.mark.parametrize("script, hints", [
    ("user_cancel", [("started", None), ("userCancel", RFA6)]),
    ("expire", [("outstandingTransaction", RFA1), ("expiredTransaction", RFA8)]),
    ("unknown_hints", [("brandNewHint", RFA21), ("anotherNewHint", RFA22)]),
])
async def test_failed_orders_report_hint_codes_and_messages(system, gw, bankid_server, script, hints):
    bankid_server.script_next(script)
    started = await start(system, gw)
    pending = await collect(system, gw, started.order_ref)
    failed = await collect(system, gw, started.order_ref)
    assert pending.status == pb.BANK_ID_STATUS_PENDING and pending.hint_code == hints[0][0]
    if hints[0][1]:
        assert pending.user_message == hints[0][1]
    assert (failed.status, failed.hint_code, failed.user_message) == (pb.BANK_ID_STATUS_FAILED, *hints[1])
    assert not failed.HasField("session")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await system.stub("identity").GetBankIdQr(pb.GetBankIdQrRequest(order_ref=started.order_ref), metadata=gw)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancelled_order_is_cancelled_at_bankid_and_here(system, gw, bankid_server):
    started = await start(system, gw)
    await system.stub("identity").CancelBankIdLogin(pb.CancelBankIdLoginRequest(order_ref=started.order_ref),
                                                    metadata=gw)
    assert bankid_server.orders[started.order_ref].cancelled
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(system, gw, started.order_ref)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_bad_requests_and_bankid_outages(system, gw, bankid_server):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await start(system, gw, ip="not-an-ip")
    assert field_violation(err.value)[0] == "end_user_ip"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(system, gw, "no-such-order")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    bankid_server.fail_auth_with = (503, "maintenance")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await start(system, gw)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "maintenance" in err.value.details()
    finally:
        bankid_server.fail_auth_with = None


async def test_a_personal_number_bankid_should_never_send_is_not_accepted(system, gw, bankid_server):
    bankid_server.script_next("bad_personal_number", user={"personalNumber": "191212121213", "name": "X"})
    started = await start(system, gw)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(system, gw, started.order_ref)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_tls_is_mutual_and_verified(bankid_server, tls_files, mongo):
    # An RP certificate from another CA is refused by the server ...
    stranger = BankIdClient(bankid_server.url, tls_files["stranger_cert"], tls_files["stranger_key"],
                            tls_files["server_ca"])
    with pytest.raises(Unavailable):
        await stranger.auth("192.0.2.1")
    await stranger.close()
    # ... and a server whose certificate we do not trust is refused by the client.
    untrusting = BankIdClient(bankid_server.url, tls_files["rp_cert"], tls_files["rp_key"], tls_files["client_ca"])
    with pytest.raises(Unavailable):
        await untrusting.auth("192.0.2.1")
    await untrusting.close()


async def test_qr_seconds_count_from_the_order_start(mongo):
    from pymongo import AsyncMongoClient

    client = AsyncMongoClient(mongo.uri, tz_aware=True)
    db = client["bankid_qr_clock"]
    now = [1000.0]
    login = BankIdLogin(None, db, None, clock=lambda: now[0])
    await db["bankid_orders"].replace_one({"_id": "o"}, {"qr_start_token": "tok", "qr_start_secret": "sec",
                                                         "started": 1000.0, "status": "pending"}, upsert=True)
    now[0] = 1003.7
    assert await login.qr("o") == "bankid.tok.3." + hmac.new(b"sec", b"3", hashlib.sha256).hexdigest()
    now[0] = 1004.0
    assert await login.qr("o") == qr_data("tok", "sec", 4)
    await client.drop_database("bankid_qr_clock")
    await client.close()
