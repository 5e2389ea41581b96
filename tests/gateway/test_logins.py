"""BankID and 1177 logins through the gateway, against identity talking to the BankID and
OpenID Connect test servers: the browser gets the session cookie only at the end of its own flow."""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse

import httpx
import pytest

from services.gateway.app import create_app
from tests.gateway.conftest import COORDINATOR, Browser, gateway_settings


@pytest.fixture
async def login_app(system_factory, bankid_server, oidc_provider, tls_files):
    system = await system_factory(["identity"], overrides={"identity": dict(
        bankid_url=bankid_server.url, bankid_client_cert_file=tls_files["rp_cert"],
        bankid_client_key_file=tls_files["rp_key"], bankid_ca_file=tls_files["server_ca"],
        oidc_1177_issuer=oidc_provider.issuer, oidc_1177_client_id="svpl-rjl",
        oidc_1177_client_key_file=tls_files["oidc_client_key"], oidc_1177_ca_file=tls_files["server_ca"])})
    app = create_app(gateway_settings(system, development_login=False, public_url="https://gateway.test"))
    yield app
    await app.state.backends.close()


async def test_bankid_login_completes_in_the_browser_that_started_it(login_app, bankid_server):
    browser, other = Browser(login_app), Browser(login_app)
    try:
        bankid_server.script_next("complete")
        started = await browser.post("/api/v1/auth/bankid")
        assert started.status_code == 200, started.text
        assert started.json()["qr_data"].startswith("bankid.")
        assert "qr_start_secret" not in started.text
        qr = await browser.get("/api/v1/auth/bankid/qr")
        assert qr.status_code == 200 and qr.json()["qr_data"].startswith("bankid.")
        image = await browser.get("/api/v1/auth/bankid/qr.svg")
        assert image.headers["content-type"] == "image/svg+xml" and image.content.lstrip().startswith(b"<?xml")
        assert (await other.post("/api/v1/auth/bankid/collect")).status_code == 409  # not its order
        assert (await other.get("/api/v1/auth/bankid/qr.svg")).status_code == 409
        for _ in range(50):
            collected = await browser.post("/api/v1/auth/bankid/collect")
            assert collected.status_code == 200, collected.text
            if collected.json()["status"] != "BANK_ID_STATUS_PENDING":
                break
            await asyncio.sleep(0.05)
        body = collected.json()
        assert body["status"] == "BANK_ID_STATUS_COMPLETE", body
        assert body["session"]["method"] == "bankid" and body["session"]["id"].endswith("-****")
        me = await browser.get("/api/v1/session")
        assert me.status_code == 200 and "citizen" in me.json()["roles"]
        assert (await other.get("/api/v1/session")).status_code == 401
    finally:
        await browser.close()
        await other.close()


async def test_1177_login_redirects_to_the_provider_and_back_with_a_session(login_app, tls_files):
    browser = Browser(login_app)
    try:
        started = await browser.get("/auth/rjl/1177")
        assert started.status_code == 303, started.text
        authorize = started.headers["location"]
        assert "code_challenge=" in authorize
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=tls_files["server_ca"])) as provider:
            back = (await provider.get(authorize)).headers["location"]
        assert back.startswith("https://gateway.test/auth/rjl/1177/callback?")
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))
        stranger = Browser(login_app)  # someone else's browser cannot use this answer
        try:
            forged = await stranger.get("/auth/rjl/1177/callback", params=query)
            assert forged.status_code == 400
        finally:
            await stranger.close()
        done = await browser.get("/auth/rjl/1177/callback", params=query)
        assert done.status_code == 303 and done.headers["location"] == "/portal/"
        me = (await browser.get("/api/v1/session")).json()
        assert me["method"] == "e_services_1177" and me["name"] == "Nils Närstående"
    finally:
        await browser.close()


async def test_1177_login_over_saml_posts_back_to_the_same_callback(system_factory, tmp_path):
    """The SAML path (SVPL_E_SERVICES_1177_PROTOCOL=saml): the IdP's page posts the SAMLResponse
    back cross-site; the state cookie still binds it to the browser that started."""
    from tests.identity.saml_idp import LOA3, SP, SamlTestIdp

    idp = SamlTestIdp(tmp_path, "https://gateway.test/auth/rjl/1177/callback")
    system = await system_factory(["identity"], overrides={"identity": dict(
        e_services_1177_protocol="saml", saml_1177_sp_entity_id=SP, saml_1177_idp_metadata_file=str(idp.idp_metadata),
        saml_1177_sp_key_file=idp.sp_key, saml_1177_sp_cert_file=idp.sp_cert)})
    app = create_app(gateway_settings(system, development_login=False, public_url="https://gateway.test"))
    browser, stranger = Browser(app), Browser(app)
    try:
        started = await browser.get("/auth/rjl/1177")
        assert started.status_code == 303 and "SameSite=None" in started.headers["set-cookie"]
        request, relay_state = idp.request(started.headers["location"])
        form = {"SAMLResponse": idp.answer(request, "198112289874", LOA3), "RelayState": relay_state}
        assert (await stranger.post("/auth/rjl/1177/callback", data=form)).status_code == 400
        done = await browser.post("/auth/rjl/1177/callback", data=form)
        assert done.status_code == 303 and done.headers["location"] == "/portal/"
        me = (await browser.get("/api/v1/session")).json()
        assert me["method"] == "e_services_1177" and me["name"] == "Nils Närstående"
    finally:
        await browser.close()
        await stranger.close()
        await app.state.backends.close()


async def test_logout_revokes_the_session_so_a_copied_cookie_stops_working(gateway):
    _, _, new_browser = gateway
    browser = new_browser()
    await browser.login(COORDINATOR)
    stolen = browser.http.cookies.get("svpl_session")
    assert (await browser.get("/api/v1/session")).status_code == 200
    assert (await browser.post("/api/v1/auth/logout")).status_code == 200
    thief = new_browser()
    thief.http.cookies.set("svpl_session", stolen, domain="gateway.test")
    refused = await thief.get("/api/v1/session")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert (await thief.get("/api/v1/meetings")).status_code == 401
