"""Token RPCs over gRPC on the real database: join tokens, verification, revocation, development login."""

from __future__ import annotations

import datetime as dt

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2 as pb

from devstack.harness import as_token
from services.identity.tokens import KeyRing
from services.runtime import auth


@pytest.fixture
async def system(system_factory):
    return await system_factory(["identity"], overrides={"identity": {"development_login": True}})


def field_violation(err: grpc.aio.AioRpcError) -> tuple[str, str]:
    status = rpc_status.from_call(err)
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            v = bad.field_violations[0]
            return v.field, v.description
    raise AssertionError("no field violation in the status")


async def issue(stub, service_token, meeting="m1", participant="p1", ttl=60):
    return await stub.IssueJoinToken(
        pb.IssueJoinTokenRequest(meeting_id=meeting, participant_id=participant, media_instance="media-0",
                                 ttl_seconds=ttl),
        metadata=as_token(service_token("roster")))


async def verify(stub, service_token, token, kind=pb.TOKEN_KIND_UNSPECIFIED, caller="media"):
    return await stub.VerifyToken(pb.VerifyTokenRequest(token=token, expected_kind=kind),
                                  metadata=as_token(service_token(caller)))


async def test_join_token_verifies_with_its_binding(system, service_token):
    stub = system.stub("identity")
    issued = await issue(stub, service_token, "meet-a", "part-a", ttl=90)
    v = await verify(stub, service_token, issued.token, pb.TOKEN_KIND_JOIN)
    assert (v.kind, v.meeting_id, v.participant_id, v.media_instance) == (pb.TOKEN_KIND_JOIN, "meet-a", "part-a",
                                                                           "media-0")
    assert v.token_id == issued.token_id
    left = issued.expires_at.ToDatetime(dt.timezone.utc) - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(seconds=80) < left <= dt.timedelta(seconds=90)


async def test_only_roster_may_issue_join_tokens(system, service_token, person_token):
    stub = system.stub("identity")
    for token in (service_token("media"), person_token("coordinator")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.IssueJoinToken(pb.IssueJoinTokenRequest(meeting_id="m", participant_id="p",
                                                               media_instance="i"), metadata=as_token(token))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_join_token_request_needs_its_fields(system, service_token):
    stub = system.stub("identity")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.IssueJoinToken(pb.IssueJoinTokenRequest(meeting_id="m", media_instance="i"),
                                  metadata=as_token(service_token("roster")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(err.value) == ("participant_id", "is required")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await issue(stub, service_token, ttl=10**6)
    assert field_violation(err.value)[0] == "ttl_seconds"


async def test_expected_kind_mismatch_is_refused(system, service_token, person_token):
    stub = system.stub("identity")
    issued = await issue(stub, service_token)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await verify(stub, service_token, issued.token, pb.TOKEN_KIND_SESSION)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expected a session token" in err.value.details()
    v = await verify(stub, service_token, person_token("coordinator"), pb.TOKEN_KIND_SESSION)
    assert v.principal.person.id == "SE2321000057-1001"
    assert set(v.principal.roles) == {"staff", "region_staff", "coordinator"}
    assert v.principal.method == common_pb2.LOGIN_METHOD_SITHS
    s = await verify(stub, service_token, service_token("booking"), pb.TOKEN_KIND_SERVICE)
    assert s.service == "booking"


async def test_expired_forged_and_malformed_tokens_are_refused(system, service_token, person_token, keyring):
    stub = system.stub("identity")
    expired = person_token("coordinator", ttl=dt.timedelta(seconds=-5))
    forged = KeyRing.generate(kid=keyring.current.kid).issue_service_token("roster")  # same kid, other key
    stranger = KeyRing.generate().issue_service_token("roster")
    claims = jwt.decode(person_token("patient"), options={"verify_signature": False})
    wrong_audience = keyring.sign({"typ": auth.SESSION, "sub": claims["sub"]}, dt.timedelta(minutes=5),
                                  audience="someone-else")[0]
    for token, message in ((expired, "expired"), (forged, "invalid"), (stranger, "unknown key"),
                           ("not.a.jwt", "malformed"), (wrong_audience, "invalid")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await verify(stub, service_token, token)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, token
        assert message in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await verify(stub, service_token, "")
    assert field_violation(err.value) == ("token", "is required")


async def test_revoking_one_token_leaves_the_others(system, service_token):
    stub = system.stub("identity")
    roster = as_token(service_token("roster"))
    one, other = await issue(stub, service_token), await issue(stub, service_token)
    await stub.RevokeTokens(pb.RevokeTokensRequest(token_id=one.token_id, reason="test"), metadata=roster)
    await stub.RevokeTokens(pb.RevokeTokensRequest(token_id=one.token_id, reason="again"), metadata=roster)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await verify(stub, service_token, one.token)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.value.details()
    assert (await verify(stub, service_token, other.token)).token_id == other.token_id


async def test_revoking_a_participant_refuses_their_tokens_old_and_new(system, service_token):
    stub = system.stub("identity")
    roster = as_token(service_token("roster"))
    removed = await issue(stub, service_token, "m2", "removed")
    stays = await issue(stub, service_token, "m2", "stays")
    await stub.RevokeTokens(pb.RevokeTokensRequest(meeting_id="m2", participant_id="removed", reason="removed"),
                            metadata=roster)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await verify(stub, service_token, removed.token)
    assert "revoked" in err.value.details()
    await verify(stub, service_token, stays.token)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await issue(stub, service_token, "m2", "removed")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await issue(stub, service_token, "other-meeting", "removed")).token


async def test_revoking_a_meeting_refuses_every_join_token_and_survives_a_restart(system, service_token):
    stub = system.stub("identity")
    roster = as_token(service_token("roster"))
    tokens = [await issue(stub, service_token, "m3", f"p{i}") for i in range(3)]
    await stub.RevokeTokens(pb.RevokeTokensRequest(meeting_id="m3", reason="ended"), metadata=roster)
    await system.stop_service("identity")
    await system.start_service("identity")
    stub = system.stub("identity")
    for t in tokens:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await verify(stub, service_token, t.token)
        assert "revoked" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await issue(stub, service_token, "m3", "late-comer")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("request_fields, field", [
    (dict(), "token_id"),
    (dict(participant_id="p"), "meeting_id"),
    (dict(token_id="t", meeting_id="m"), "token_id"),
])
async def test_revocation_scope_must_be_exactly_one(system, service_token, request_fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await system.stub("identity").RevokeTokens(pb.RevokeTokensRequest(**request_fields),
                                                   metadata=as_token(service_token("roster")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(err.value)[0] == field


async def test_development_login_names_the_directory_roles(system, service_token):
    stub = system.stub("identity")
    gw = as_token(service_token("gateway"))
    cases = {
        "SE2321000057-1001": {"staff", "region_staff", "coordinator"},
        "SE2120000829-3001": {"staff", "municipality_staff"},
        "SE2321000057-4001": {"staff", "region_staff", "support_desk"},
        "SE2321000057-5001": {"staff", "region_staff", "access_log"},
    }
    for hsa_id, roles in cases.items():
        r = await stub.DevelopmentLogin(pb.DevelopmentLoginRequest(person_id=hsa_id), metadata=gw)
        assert set(r.session.principal.roles) == roles
        assert r.session.principal.method == common_pb2.LOGIN_METHOD_SITHS
        assert r.session.principal.assurance == "development"
        v = await verify(stub, service_token, r.session.token, pb.TOKEN_KIND_SESSION)
        assert v.principal.person.id == hsa_id and set(v.principal.roles) == roles
    kin = await stub.DevelopmentLogin(
        pb.DevelopmentLoginRequest(person_id="19811228-9874", method=common_pb2.LOGIN_METHOD_E_SERVICES_1177),
        metadata=gw)
    assert kin.session.principal.person.id == "198112289874"
    assert kin.session.principal.roles == ["citizen"]
    assert kin.session.principal.method == common_pb2.LOGIN_METHOD_E_SERVICES_1177
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DevelopmentLogin(pb.DevelopmentLoginRequest(person_id="SE2321000057-9999"), metadata=gw)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_development_login_is_off_unless_turned_on(system_factory, service_token):
    system = await system_factory(["identity"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await system.stub("identity").DevelopmentLogin(pb.DevelopmentLoginRequest(person_id="SE2321000057-1001"),
                                                       metadata=as_token(service_token("gateway")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "SVPL_DEVELOPMENT_LOGIN" in err.value.details()


async def test_key_rotation_new_key_signs_old_key_still_verifies(system_factory, tmp_path, service_token):
    import json
    import os

    old, new = KeyRing.generate(kid="old"), KeyRing.generate(kid="new")
    os.utime(old.save_current(tmp_path), (1_000_000, 1_000_000))
    new.save_current(tmp_path)
    system = await system_factory(["identity"], overrides={"identity": dict(
        signing_keys_dir=str(tmp_path), development_login=True)})
    stub = system.stub("identity")
    jwks = json.loads((await stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json)
    assert [k["kid"] for k in jwks["keys"]] == ["new", "old"]
    # The caller authenticates with a token from the suite's key ring: unknown to this identity.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await verify(stub, service_token, old.issue_service_token("booking"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "unknown key" in err.value.details()
    gateway = as_token(old.issue_service_token("gateway"))
    v = await stub.VerifyToken(pb.VerifyTokenRequest(token=old.issue_service_token("booking")), metadata=gateway)
    assert v.service == "booking"
    session = await stub.DevelopmentLogin(pb.DevelopmentLoginRequest(person_id="SE2321000057-1001"), metadata=gateway)
    assert jwt.get_unverified_header(session.session.token)["kid"] == "new"
