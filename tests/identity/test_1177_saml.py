"""1177 login over SAML 2.0 (as Inera's citizen IdP is published), against pysaml2's own IdP: a
signed assertion at LoA 3 logs the person in, LoA 2 is refused in Swedish; forged, replayed and
unsolicited answers are refused."""

from __future__ import annotations

import grpc
import pytest
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2 as pb

from devstack.harness import as_token
from tests.identity.saml_idp import LOA2, LOA3, SP, SamlTestIdp

ACS = "https://portal.example/auth/rjl/1177/callback"
KIN = "198112289874"


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    return SamlTestIdp(tmp_path_factory.mktemp("saml"), ACS)


@pytest.fixture
async def system(system_factory, idp):
    return await system_factory(["identity"], overrides={"identity": dict(
        e_services_1177_protocol="saml", saml_1177_sp_entity_id=SP, saml_1177_idp_metadata_file=str(idp.idp_metadata),
        saml_1177_sp_key_file=idp.sp_key, saml_1177_sp_cert_file=idp.sp_cert)})


@pytest.fixture
def gw(service_token):
    return as_token(service_token("gateway"))


async def start(system, gw, idp):
    started = await system.stub("identity").Start1177Login(pb.Start1177LoginRequest(redirect_uri=ACS), metadata=gw)
    request, relay_state = idp.request(started.authorization_url)
    assert relay_state == started.state and request.assertion_consumer_service_url == ACS
    assert [c.text for c in request.requested_authn_context.authn_context_class_ref] == [LOA3]
    return started, request


async def complete(system, gw, state, response):
    return await system.stub("identity").Complete1177Login(
        pb.Complete1177LoginRequest(state=state, code=response, redirect_uri=ACS), metadata=gw)


@pytest.mark.parametrize("attribute", ["Subject_SerialNumber", "personalIdentityNumber"])
async def test_a_next_of_kin_logs_in_at_loa_3(system, gw, idp, attribute):
    started, request = await start(system, gw, idp)
    r = await complete(system, gw, started.state, idp.answer(request, KIN, LOA3, attribute=attribute))
    p = r.session.principal
    assert (p.person.id, p.person.id_kind, p.method, p.assurance, p.person.display_name) == (
        KIN, common_pb2.ID_KIND_PERSONNUMMER, common_pb2.LOGIN_METHOD_E_SERVICES_1177, "substantial",
        "Nils Närstående")


async def test_a_loa_2_login_is_refused_in_swedish(system, gw, idp):
    started, request = await start(system, gw, idp)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await complete(system, gw, started.state, idp.answer(request, KIN, LOA2))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "tillitsnivå 2" in err.value.details() and "minst tillitsnivå 3" in err.value.details()


async def test_a_forged_replayed_or_unsolicited_answer_is_refused(system, gw, idp):
    started, request = await start(system, gw, idp)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # signed with a key not in the IdP's metadata
        await complete(system, gw, started.state, idp.answer(request, KIN, LOA3, forged=True))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    started, request = await start(system, gw, idp)
    good = idp.answer(request, KIN, LOA3)
    await complete(system, gw, started.state, good)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the same answer again
        await complete(system, gw, started.state, good)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    other, _ = await start(system, gw, idp)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # an answer to another login's request
        await complete(system, gw, other.state, good)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
