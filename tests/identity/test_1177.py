"""1177 login as an OpenID Connect relying party (authorization code + PKCE, the Swedish OIDC
profile: the naturalPersonNumber scope, private_key_jwt, a minimum LoA) against the test provider
over TLS: the personnummer (or samordningsnummer) comes from the verified ID token; tampered,
replayed, mismatched or too weak logins are refused."""

from __future__ import annotations

import ssl
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest
from joserfc.jwk import ECKey
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2 as pb

from devstack.harness import as_token
from tests.identity.oidc_provider import ASSERTION_TYPE, COORDINATION_CLAIM, LOA3, PNR_CLAIM, PNR_SCOPE
from tests.identity.test_tokens_rpc import field_violation

REDIRECT = "https://portal.example/auth/rjl/1177/callback"


@pytest.fixture
async def system(system_factory, oidc_provider, tls_files):
    return await system_factory(["identity"], overrides={"identity": dict(
        oidc_1177_issuer=oidc_provider.issuer, oidc_1177_client_id="svpl-rjl",
        oidc_1177_client_key_file=tls_files["oidc_client_key"], oidc_1177_ca_file=tls_files["server_ca"])})


@pytest.fixture
def gw(service_token):
    return as_token(service_token("gateway"))


async def browser(url: str, ca_file: str) -> dict:
    """What the user's browser does: follow the authorization URL, come back with code and state."""
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca_file)) as http:
        response = await http.get(url)
    assert response.status_code == 302, response.text
    back = urlsplit(response.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(back.query).items()}


async def log_in(system, gw, tls_files, redirect=REDIRECT, profile=True):
    stub = system.stub("identity")
    started = await stub.Start1177Login(pb.Start1177LoginRequest(redirect_uri=REDIRECT), metadata=gw)
    query = parse_qs(urlsplit(started.authorization_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["state"] == [started.state]
    assert query["nonce"][0] and query["code_challenge"][0]
    assert not profile or (PNR_SCOPE in query["scope"][0].split() and LOA3 in query["acr_values"][0].split())
    back = await browser(started.authorization_url, tls_files["server_ca"])
    assert back["state"] == started.state
    return back, await stub.Complete1177Login(
        pb.Complete1177LoginRequest(state=back["state"], code=back["code"], redirect_uri=redirect), metadata=gw)


async def test_next_of_kin_logs_in_with_1177(system, gw, tls_files, oidc_provider):
    oidc_provider.user = {PNR_CLAIM: "198112289874", "name": "Nils Närstående"}
    _, r = await log_in(system, gw, tls_files)
    p = r.session.principal
    assert (p.person.id, p.person.id_kind, p.person.display_name, p.method, list(p.roles), p.assurance) == (
        "198112289874", common_pb2.ID_KIND_PERSONNUMMER, "Nils Närstående", common_pb2.LOGIN_METHOD_E_SERVICES_1177,
        ["citizen"], "substantial")
    assert oidc_provider.token_requests[-1] == {"grant_type": "authorization_code", "redirect_uri": REDIRECT,
                                                "has_verifier": True, "auth": ASSERTION_TYPE}


async def test_a_samordningsnummer_holder_logs_in(system, gw, tls_files, oidc_provider):
    oidc_provider.user = {COORDINATION_CLAIM: "197010632391", "name": "Sam Ordning"}
    try:
        _, r = await log_in(system, gw, tls_files)
    finally:
        oidc_provider.user = {PNR_CLAIM: "198112289874", "name": "Nils Närstående"}
    assert (r.session.principal.person.id, r.session.principal.assurance) == ("197010632391", "substantial")


@pytest.mark.parametrize("acr", ["http://id.elegnamnden.se/loa/1.0/loa2", "", "http://id.sambi.se/loa/loa1"])
async def test_a_login_below_the_minimum_assurance_is_refused_in_swedish(system, gw, tls_files, oidc_provider, acr):
    oidc_provider.acr = acr
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await log_in(system, gw, tls_files)
    finally:
        oidc_provider.acr = LOA3
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "kräver minst tillitsnivå 3" in err.value.details()


async def test_without_the_scope_the_provider_sends_no_personnummer(system_factory, gw, tls_files, oidc_provider):
    """What happened with svpl's old default scope (openid only) at a profile-compliant provider."""
    system = await system_factory(["identity"], overrides={"identity": dict(
        oidc_1177_issuer=oidc_provider.issuer, oidc_1177_client_id="svpl-rjl", oidc_1177_scope="openid",
        oidc_1177_client_key_file=tls_files["oidc_client_key"], oidc_1177_ca_file=tls_files["server_ca"])})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await log_in(system, gw, tls_files, profile=False)
    assert "no valid personnummer" in err.value.details()


async def test_a_client_without_the_registered_key_is_not_let_in(system_factory, gw, tls_files, oidc_provider):
    system = await system_factory(["identity"], overrides={"identity": dict(
        oidc_1177_issuer=oidc_provider.issuer, oidc_1177_client_id="svpl-rjl", oidc_1177_client_secret="guess",
        oidc_1177_ca_file=tls_files["server_ca"])})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await log_in(system, gw, tls_files)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert oidc_provider.token_requests[-1]["auth"] == "Basic"


async def test_a_state_is_used_once(system, gw, tls_files):
    back, _ = await log_in(system, gw, tls_files)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await system.stub("identity").Complete1177Login(
            pb.Complete1177LoginRequest(state=back["state"], code=back["code"], redirect_uri=REDIRECT), metadata=gw)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("tamper, message", [
    ({"aud": "another-client"}, "not valid"),
    ({"nonce": "replayed-nonce"}, "not valid"),
    ({"iss": "https://evil.example"}, "not valid"),
    ({"exp": 1_000_000_000}, "not valid"),
    ({PNR_CLAIM: "198112289870"}, "no valid personnummer"),
])
async def test_id_tokens_that_do_not_hold_are_refused(system, gw, tls_files, oidc_provider, tamper, message):
    oidc_provider.tamper = tamper
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await log_in(system, gw, tls_files)
    finally:
        oidc_provider.tamper = {}
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in err.value.details()


async def test_id_token_signed_with_an_unpublished_key_is_refused(system, gw, tls_files, oidc_provider):
    oidc_provider.signing_key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await log_in(system, gw, tls_files)
    finally:
        oidc_provider.signing_key = oidc_provider.key
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_different_redirect_uri_or_a_bad_code_is_refused(system, gw, tls_files):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await log_in(system, gw, tls_files, redirect="https://evil.example/callback")
    assert field_violation(err.value)[0] == "redirect_uri"
    stub = system.stub("identity")
    started = await stub.Start1177Login(pb.Start1177LoginRequest(redirect_uri=REDIRECT), metadata=gw)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Complete1177Login(pb.Complete1177LoginRequest(state=started.state, code="made-up",
                                                                 redirect_uri=REDIRECT), metadata=gw)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Start1177Login(pb.Start1177LoginRequest(redirect_uri="ftp://x"), metadata=gw)
    assert field_violation(err.value)[0] == "redirect_uri"


async def test_1177_off_when_not_configured(system_factory, gw):
    system = await system_factory(["identity"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await system.stub("identity").Start1177Login(pb.Start1177LoginRequest(redirect_uri=REDIRECT), metadata=gw)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("uri", ["http://127.0.0.1.evil.example/cb", "http://portal.example/cb", "javascript:x",
                                 "https:///nohost", "https://portal.example/cb#frag"])
async def test_redirect_uri_must_be_https_or_loopback(system, gw, uri):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await system.stub("identity").Start1177Login(pb.Start1177LoginRequest(redirect_uri=uri), metadata=gw)
    assert field_violation(err.value)[0] == "redirect_uri"
