"""The gateway's HTTP layer against the real services: problem details mapped from the services'
status codes, the hardening (CSRF, body limit, cookies, headers, rate limit), and a meeting's
REST path from booking to a refused rejoin."""

from __future__ import annotations

import json

import httpx

from services.gateway.app import create_app
from tests.gateway.conftest import COORDINATOR, PATIENT, REGION_STAFF, Browser, gateway_settings
from tests.gateway.flow import UNIT, book_video_meeting, register, start


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


async def test_every_response_carries_strict_security_headers_and_a_csrf_cookie(gateway):
    app, _, new_browser = gateway
    response = await new_browser().get("/auth/rjl/login")
    assert response.status_code == 200 and "Logga in" in response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("svpl_csrf=") and "Secure" in cookie and "SameSite=Strict" in cookie
    assert "HttpOnly" not in cookie  # the portal's script must read it to send it back


async def test_login_page_of_another_region_is_not_found(gateway):
    _, _, new_browser = gateway
    problem(await new_browser().get("/auth/nowhere/login"), 404)


async def test_session_cookie_is_httponly_secure_samesite_strict(gateway):
    _, _, new_browser = gateway
    browser = new_browser()
    await browser.prime()
    response = await browser.post("/api/v1/auth/development", json={"person_id": COORDINATOR})
    assert response.status_code == 200, response.text
    session = next(c for c in response.headers.get_list("set-cookie") if c.startswith("svpl_session="))
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert flag in session
    assert response.json()["name"] == "Vera Samordnare"
    assert (await browser.get("/api/v1/session")).json()["id"] == COORDINATOR


async def test_state_changing_request_without_the_csrf_header_is_refused_and_changes_nothing(gateway):
    _, _, new_browser = gateway
    browser = new_browser()
    await browser.login(COORDINATOR)
    options = (await browser.get("/api/v1/booking-options")).json()
    body = {"idempotency_key": "abcdefgh1234", "patient_personnummer": PATIENT, "start": "2030-01-01T10:00:00Z",
            "duration_minutes": 30, "booking_unit_hsa_id": UNIT, "care_service": options["video_care_service"],
            "contact_type": options["video_contact_type"]}
    refused = await browser.http.post("/api/v1/bookings", json=body)
    assert problem(refused, 403)["reason"] == "CSRF"
    wrong = await browser.http.post("/api/v1/bookings", json=body, headers={"x-csrf-token": "not-the-cookie"})
    assert problem(wrong, 403)["reason"] == "CSRF"
    listed = await browser.get("/api/v1/bookings")
    assert listed.status_code == 200 and listed.json()["bookings"] == []


async def test_a_body_over_the_limit_is_refused_with_413(gateway):
    _, _, new_browser = gateway
    browser = new_browser()
    await browser.login(COORDINATOR)
    big = json.dumps({"summary": "x" * 70_000})
    response = await browser.post("/api/v1/meetings/m1/agenda/summary", content=big,
                                  headers={"content-type": "application/json"})
    problem(response, 413)

    async def chunks():  # no content-length: the limit holds while the body streams
        for _ in range(20):
            yield b"x" * 8192

    streamed = await browser.post("/api/v1/meetings/m1/agenda/summary", content=chunks(),
                                  headers={"content-type": "application/json"})
    problem(streamed, 413)


async def test_invalid_input_is_400_naming_the_field_from_the_model_and_from_the_service(gateway):
    _, _, new_browser = gateway
    browser = new_browser()
    await browser.login(COORDINATOR)
    missing = await browser.post("/api/v1/bookings", json={"patient_personnummer": PATIENT})
    fields = {e["field"] for e in problem(missing, 400)["errors"]}
    assert "idempotency_key" in fields and "start" in fields
    not_json = await browser.post("/api/v1/bookings", content=b"{nope", headers={"content-type": "application/json"})
    problem(not_json, 400)
    options = (await browser.get("/api/v1/booking-options")).json()
    bad_pnr = await browser.post("/api/v1/bookings", json={
        "idempotency_key": "abcdefgh5678", "patient_personnummer": "19121212-1213", "start": "2030-01-01T10:00:00Z",
        "duration_minutes": 30, "booking_unit_hsa_id": UNIT, "care_service": options["video_care_service"],
        "contact_type": options["video_contact_type"]})
    body = problem(bad_pnr, 400)  # the service's INVALID_ARGUMENT, field violation included
    assert body["errors"][0]["field"] == "patient_personnummer", body


async def test_without_a_session_the_api_answers_401_and_a_forged_cookie_too(gateway):
    _, _, new_browser = gateway
    browser = new_browser()
    problem(await browser.get("/api/v1/meetings"), 401)
    browser.http.cookies.set("svpl_session", "eyJhbGciOiJFZERTQSJ9.e30.AAAA", domain="gateway.test")
    problem(await browser.get("/api/v1/meetings"), 401)


async def test_service_refusals_map_to_403_404_and_409(gateway):
    _, _, new_browser = gateway
    citizen = new_browser()
    await citizen.login(PATIENT)
    denied = await citizen.post("/api/v1/meetings/abc/start")
    problem(denied, 403)
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    problem(await coordinator.get("/api/v1/meetings/no-such-meeting"), 404)
    booking = await book_video_meeting(coordinator)
    meeting_id = booking["meeting_id"]
    await start(coordinator, meeting_id)
    assert (await coordinator.post(f"/api/v1/meetings/{meeting_id}/end")).status_code == 200
    again = await coordinator.post(f"/api/v1/meetings/{meeting_id}/start")  # a finished meeting never restarts
    problem(again, 409)


async def test_development_login_is_absent_when_off(system_factory):
    system = await system_factory(["identity"])
    app = create_app(gateway_settings(system, development_login=False))
    browser = Browser(app)
    try:
        problem(await browser.get("/api/v1/auth/development/people"), 404)
        problem(await browser.post("/api/v1/auth/development", json={"person_id": COORDINATOR}), 404)
    finally:
        await browser.close()
        await app.state.backends.close()


async def test_logins_are_rate_limited_per_address(system_factory):
    system = await system_factory(["identity"], overrides={"identity": {"development_login": True}})
    app = create_app(gateway_settings(system, login_rate_per_minute=3))
    browser, other = Browser(app, "10.0.0.1"), Browser(app, "10.0.0.2")
    try:
        for _ in range(3):
            assert (await browser.post("/api/v1/auth/development", json={"person_id": COORDINATOR})).status_code == 200
        limited = await browser.post("/api/v1/auth/development", json={"person_id": COORDINATOR})
        problem(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1
        assert (await other.post("/api/v1/auth/development", json={"person_id": COORDINATOR})).status_code == 200
    finally:
        await browser.close()
        await other.close()
        await app.state.backends.close()


async def test_siths_certificate_header_is_believed_only_from_a_trusted_proxy(system_factory, tmp_path):
    import urllib.parse

    from devstack.embedded_db import free_port
    from devstack.pki import PERSON_HSA_ID_CA, SITHS_SETTINGS, make_ca, make_leaf
    from tests.identity.ocsp_responder import OcspTestResponder

    root = make_ca("SITHS Root CA v1 Test")
    issuing = make_ca(PERSON_HSA_ID_CA, issuer=root)
    ca_file = tmp_path / "siths-ca.pem"
    ca_file.write_text(root.pem)
    ocsp = await OcspTestResponder(free_port(), issuing).start()  # revocation is checked, as in production
    # (The development flag only loads the demo HSA directory here; the login is a real SITHS one.)
    system = await system_factory(["identity"], overrides={"identity": {
        "siths_ca_files": str(ca_file), "development_login": True, "siths_ocsp_url": ocsp.url, **SITHS_SETTINGS}})
    app = create_app(gateway_settings(system, trusted_proxies=["10.1.0.0/16"]))
    direct, proxied = Browser(app, "192.0.2.7"), Browser(app, "10.1.2.3")
    card = make_leaf(issuing, "Vera Samordnare", serial_number=COORDINATOR)
    # As ingress-nginx forwards it ($ssl_client_escaped_cert: URL-encoded PEM; $ssl_client_verify).
    forwarded = {"ssl-client-cert": urllib.parse.quote(card.pem + issuing.pem), "ssl-client-verify": "SUCCESS"}
    try:
        refused = await direct.post("/api/v1/auth/siths", headers=forwarded)
        assert problem(refused, 403)["reason"] == "UNTRUSTED_PROXY"
        assert "svpl_session" not in direct.http.cookies
        problem(await proxied.post("/api/v1/auth/siths"), 401)
        # The terminator's own verdict is believed too: a chain it refused does not reach identity.
        unverified = await proxied.post("/api/v1/auth/siths", headers={**forwarded, "ssl-client-verify": "FAILED:expired"})
        assert problem(unverified, 401)["reason"] == "CLIENT_CERTIFICATE_NOT_VERIFIED"
        stranger = make_leaf(make_ca("Not SITHS"), "Eve", serial_number=COORDINATOR)
        foreign = await proxied.post("/api/v1/auth/siths", headers={"ssl-client-cert": urllib.parse.quote(stranger.pem),
                                                                   "ssl-client-verify": "SUCCESS"})
        assert 400 <= foreign.status_code < 500 and "svpl_session" not in proxied.http.cookies, foreign.text
        answer = await proxied.post("/api/v1/auth/siths", headers=forwarded)
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == COORDINATOR and answer.json()["method"] == "siths"
        assert (await proxied.get("/api/v1/session")).json()["name"] == "Vera Samordnare"
    finally:
        await direct.close()
        await proxied.close()
        await app.state.backends.close()
        await ocsp.stop()


async def test_bankid_and_1177_answers_must_belong_to_this_browser(gateway):
    _, _, new_browser = gateway
    browser = new_browser()
    assert problem(await browser.post("/api/v1/auth/bankid/collect"), 409)["reason"] == "NO_ORDER"
    assert problem(await browser.get("/api/v1/auth/bankid/qr"), 409)["reason"] == "NO_ORDER"
    callback = await browser.get("/auth/rjl/1177/callback", params={"state": "forged", "code": "abc"})
    assert problem(callback, 400)["reason"] == "STATE"
    assert "svpl_session" not in browser.http.cookies


async def test_an_unreachable_service_is_503_without_internals(system_factory):
    system = await system_factory(["identity"], overrides={"identity": {"development_login": True}})
    app = create_app(gateway_settings(system, roster_address="127.0.0.1:9", rpc_timeout_seconds=3))
    browser = Browser(app)
    try:
        await browser.login(COORDINATOR)
        body = problem(await browser.get("/api/v1/meetings"), 503)
        assert "127.0.0.1" not in body["detail"]
    finally:
        await browser.close()
        await app.state.backends.close()


async def test_a_meeting_over_rest_from_booking_to_refused_rejoin(gateway):
    _, _, new_browser = gateway
    coordinator, staff, patient = new_browser(), new_browser(), new_browser()
    await coordinator.login(COORDINATOR)
    booking = await book_video_meeting(coordinator)
    meeting_id = booking["meeting_id"]
    invitations = (await coordinator.get(f"/api/v1/bookings/{booking['booking_id']}/invitations")).json()
    assert invitations["invitations"][0]["party"]["name"] == "Hemtjänsten Väster"
    found = (await coordinator.get("/api/v1/directory/people", params={"name": "Rita"})).json()["people"]
    assert any(p["hsa_id"] == REGION_STAFF for p in found)
    registered = await register(coordinator, meeting_id, "Rita Region", "PARTICIPANT_ROLE_REGION_STAFF", REGION_STAFF)
    names = [p["full_name"] for p in (await coordinator.get(f"/api/v1/meetings/{meeting_id}/participants")).json()[
        "participants"]]
    assert "Rita Region" in names and "Vera Samordnare" in names and len(names) == 3  # and the patient
    await staff.login(REGION_STAFF)
    await patient.login(PATIENT, "LOGIN_METHOD_BANKID")
    early = await staff.post(f"/api/v1/meetings/{meeting_id}/admission")
    assert problem(early, 409)["reason"] == "ADMIT_REFUSAL_NOT_STARTED"
    assert (await start(coordinator, meeting_id))["state"] == "MEETING_STATE_LIVE"
    shown = (await staff.get(f"/api/v1/meetings/{meeting_id}")).text
    assert "media_address" not in shown  # where media listens stays inside

    admitted = await staff.post(f"/api/v1/meetings/{meeting_id}/admission")
    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["participant_id"] == registered["participant_id"]
    token = admitted.json()["join_token"]
    bad_sdp = await staff.post(f"/api/v1/meetings/{meeting_id}/negotiation", json={"join_token": token,
                                                                                  "sdp_offer": "v=0 nonsense"})
    assert problem(bad_sdp, 400)["errors"][0]["field"] == "sdp_offer"
    unknown = await staff.post(f"/api/v1/meetings/{meeting_id}/negotiation", json={"join_token": "x.y.z",
                                                                                  "sdp_offer": "v=0"})
    assert problem(unknown, 409)["reason"] == "ADMISSION_UNKNOWN"

    removed = await coordinator.post(f"/api/v1/meetings/{meeting_id}/removals",
                                     json={"participant_id": registered["participant_id"], "reason": "test"})
    assert removed.status_code == 200, removed.text
    rejoin = await staff.post(f"/api/v1/meetings/{meeting_id}/admission")
    assert problem(rejoin, 403)["reason"] == "ADMIT_REFUSAL_REMOVED"

    assert (await patient.post(f"/api/v1/meetings/{meeting_id}/admission")).status_code == 200
    ended = await coordinator.post(f"/api/v1/meetings/{meeting_id}/end")
    assert ended.json()["meeting"]["state"] == "MEETING_STATE_ENDED"
    after = await patient.post(f"/api/v1/meetings/{meeting_id}/admission")
    assert problem(after, 409)["reason"] == "ADMIT_REFUSAL_FINISHED"


async def test_a_fault_report_answers_where_it_went(gateway):
    _, _, new_browser = gateway
    staff = new_browser()
    await staff.login(REGION_STAFF)
    routing = (await staff.get("/api/v1/support/routing")).json()
    filed = await staff.post("/api/v1/support/reports", json={
        "problem": "PROBLEM_KIND_MESSAGING_PASSWORD", "description": "Jag kommer inte in i Cosmic Link",
        "idempotency_key": "report-1"})
    assert filed.status_code == 200, filed.text
    ticket = filed.json()["ticket"]
    queue = ticket["routing"]["queue"]
    assert queue["queue_id"] in {q["queue_id"] for q in routing["queues"]}
    assert queue["name"] and ticket["reporter"]["kind"] == "REPORTER_KIND_REGION_STAFF"
    again = await staff.post("/api/v1/support/reports", json={
        "problem": "PROBLEM_KIND_MESSAGING_PASSWORD", "description": "Jag kommer inte in i Cosmic Link",
        "idempotency_key": "report-1"})
    assert again.json()["ticket"]["ticket_id"] == ticket["ticket_id"]


async def test_test_room_signalling_is_relayed_to_media_and_quality_needs_a_join(gateway):
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    _, _, new_browser = gateway
    staff = new_browser()
    await staff.login(REGION_STAFF)
    problem(await staff.get("/api/v1/meetings/m1/quality"), 409)
    pc = RTCPeerConnection()
    try:
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(VideoStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        answer = await staff.post("/api/v1/test-room/negotiation", json={"sdp_offer": pc.localDescription.sdp})
        assert answer.status_code == 200, answer.text
        sdp = answer.json()["sdp_answer"]
        assert sdp.startswith("v=0") and "m=video" in sdp and "m=audio" in sdp
    finally:
        await pc.close()


async def test_coordinator_sees_and_removes_an_unidentified_connection(gateway):
    from svpl.roster.v1 import roster_pb2

    from devstack.harness import as_token

    _, system, new_browser = gateway
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    meeting = await start(coordinator, meeting_id)
    # A phone dial-in nobody has identified, as media reports it to roster.
    allowed = await system.stub("roster").ReportConnection(roster_pb2.ReportConnectionRequest(
        meeting_id=meeting_id, connection_id="phone-1", kind=roster_pb2.CONNECTION_KIND_PHONE, connected=True,
        label="070-*** ** 12", media_instance=meeting["media_instance"]), metadata=as_token(system.tokens["media"]))
    assert allowed.allowed
    reconciliation = (await coordinator.get(f"/api/v1/meetings/{meeting_id}/reconciliation")).json()
    assert [c["connection_id"] for c in reconciliation["connected_not_identified"]] == ["phone-1"]
    assert (await coordinator.get(f"/api/v1/meetings/{meeting_id}/connected")).json()["unidentified_count"] == 1
    removed = await coordinator.post(f"/api/v1/meetings/{meeting_id}/removals",
                                     json={"connection_id": "phone-1", "reason": "kunde inte identifieras"})
    assert removed.status_code == 200, removed.text
    after = (await coordinator.get(f"/api/v1/meetings/{meeting_id}/reconciliation")).json()
    assert after["connected_not_identified"] == []


async def test_requests_are_counted_by_route_template_not_by_raw_path(gateway):
    from prometheus_client import REGISTRY

    _, _, new_browser = gateway
    browser = new_browser()
    await browser.login(COORDINATOR)

    def count(status: str) -> float:
        return REGISTRY.get_sample_value("svpl_http_requests_total", {
            "route": "/api/v1/meetings/{meeting_id}", "method": "GET", "status": status}) or 0.0

    before = count("404")
    for meeting_id in ("nope-1", "nope-2"):
        assert (await browser.get(f"/api/v1/meetings/{meeting_id}")).status_code == 404
    assert count("404") == before + 2


async def test_ice_servers_carry_short_lived_turn_credentials_only_when_configured(gateway):
    import base64
    import hashlib
    import hmac
    import time

    _, system, new_browser = gateway
    browser = new_browser()
    problem(await browser.get("/api/v1/ice-servers"), 401)
    await browser.login(COORDINATOR)
    assert (await browser.get("/api/v1/ice-servers")).json() == {"ice_servers": []}

    turn_app = create_app(gateway_settings(system, turn_secret="s3cret", turn_ttl_seconds=600,
                                           turn_urls="turn:turn.example:3478, turns:turn.example:5349"))
    turn_browser = Browser(turn_app)
    try:
        await turn_browser.login(COORDINATOR)
        (server,) = (await turn_browser.get("/api/v1/ice-servers")).json()["ice_servers"]
        assert server["urls"] == ["turn:turn.example:3478", "turns:turn.example:5349"]
        expiry, _ = server["username"].split(":")
        assert 0 < int(expiry) - time.time() <= 600 and COORDINATOR not in server["username"]
        expected = base64.b64encode(hmac.new(b"s3cret", server["username"].encode(), hashlib.sha1).digest()).decode()
        assert server["credential"] == expected
    finally:
        await turn_browser.close()
        await turn_app.state.backends.close()
