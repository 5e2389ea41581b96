"""Attacks by someone who has a valid login, or who reaches the gateway over loopback (a mesh
sidecar, `kubectl port-forward`), as issue #14 found them: each test does what the attacker did,
through the served gateway (uvicorn as production configures it) or over gRPC, and proves it now
fails safely."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY
from svpl.booking.v1 import booking_pb2
from svpl.identity.v1 import identity_pb2
from svpl.roster.v1 import roster_pb2
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.runtime import auth
from tests.gateway.conftest import COORDINATOR, PATIENT, Browser, gateway_settings, serving
from tests.gateway.flow import UNIT, book_video_meeting, start
from tests.polling import poll

CSRF = {"cookie": "svpl_csrf=t", "x-csrf-token": "t"}


def cookie_header(browser: Browser) -> str:
    return "; ".join(f"{k}={v}" for k, v in browser.http.cookies.items())


async def closed_with(ws, timeout: float) -> tuple[int, list[dict]]:
    """Read until the server closes the socket; its close code and what it sent."""
    sent: list[dict] = []

    async def read():
        try:
            while True:
                sent.append(json.loads(await ws.recv()))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else 1006

    return await asyncio.wait_for(read(), timeout), sent


# ------------------------------------------------------------------ forwarded headers (item 2)


async def test_a_forwarded_address_from_loopback_does_not_reset_the_login_limit(gateway):
    """The attacker on loopback sends a new X-Forwarded-For with each login attempt: with no
    trusted proxy configured, none is believed, and the limit counts them all as one address."""
    _, system, _ = gateway
    app = create_app(gateway_settings(system, login_rate_per_minute=3))
    try:
        async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
            statuses = [(await http.post("/api/v1/auth/development", json={"person_id": COORDINATOR},
                                         headers={**CSRF, "x-forwarded-for": f"203.0.113.{i}"})).status_code
                        for i in range(6)]
    finally:
        await app.state.backends.close()
    assert statuses == [200, 200, 200, 429, 429, 429]


async def test_a_siths_login_claiming_a_trusted_proxys_address_is_refused(gateway):
    """A forged X-Forwarded-For inside SVPL_TRUSTED_PROXIES, from loopback, with a (public) card
    certificate: the TCP peer is not the TLS terminator, so the certificate header is not believed."""
    _, system, _ = gateway
    app = create_app(gateway_settings(system, trusted_proxies=["10.1.0.0/16"]))
    forged = {**CSRF, "x-forwarded-for": "10.1.2.3", "x-forwarded-proto": "https",
              "ssl-client-verify": "SUCCESS",
              "ssl-client-cert": "-----BEGIN%20CERTIFICATE-----%0AMIIB...%0A-----END%20CERTIFICATE-----"}
    try:
        async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
            refused = await http.post("/api/v1/auth/siths", headers=forged)
    finally:
        await app.state.backends.close()
    assert refused.status_code == 403, refused.text
    assert refused.json()["reason"] == "UNTRUSTED_PROXY"
    assert "svpl_session" not in refused.headers.get("set-cookie", "")


async def test_behind_a_trusted_proxy_the_limit_follows_the_address_it_reports(gateway):
    """The proxy (here on loopback, and trusted) appends the client's address; an address the client
    put in front of it itself is not believed, so it cannot move to a fresh limit."""
    _, system, _ = gateway
    app = create_app(gateway_settings(system, login_rate_per_minute=2, trusted_proxies=["127.0.0.1"]))

    async def attempt(http, forwarded: str) -> int:
        return (await http.post("/api/v1/auth/development", json={"person_id": COORDINATOR},
                                headers={**CSRF, "x-forwarded-for": forwarded})).status_code

    try:
        async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
            first = [await attempt(http, f"198.51.100.{i}, 203.0.113.1") for i in range(4)]
            other = await attempt(http, "203.0.113.2")
    finally:
        await app.state.backends.close()
    assert first == [200, 200, 429, 429]
    assert other == 200


def test_trusted_proxies_must_be_networks():
    settings = GatewaySettings(service_token="t", trusted_proxies=["10.1.2.3/16", "192.0.2.1"])
    assert settings.trusted_proxies == ["10.1.0.0/16", "192.0.2.1/32"]
    for bad in ("*", "proxy.example", "10.1.2.300"):
        with pytest.raises(ValueError):
            GatewaySettings(service_token="t", trusted_proxies=[bad])


# ------------------------------------------------------------------ logout everywhere (items 5, 6)


async def test_logout_reaches_every_service_within_seconds(gateway):
    """The same session token, used directly over gRPC after logout: refused by roster, booking
    and identity within the revocation poll (2 s here, as by default), not after its remaining hour."""
    _, system, new_browser = gateway
    browser = new_browser()
    await browser.login(COORDINATOR)
    meeting_id = (await book_video_meeting(browser))["meeting_id"]
    token = browser.http.cookies.get("svpl_session")
    md = auth.bearer(token)
    calls = {
        "roster": lambda: system.stub("roster").ListParticipants(
            roster_pb2.ListParticipantsRequest(meeting_id=meeting_id), metadata=md, timeout=5),
        "booking": lambda: system.stub("booking").ListBookings(
            booking_pb2.ListBookingsRequest(coordinator_hsa_id=COORDINATOR), metadata=md, timeout=5),
        "identity": lambda: system.stub("identity").SearchDirectory(
            identity_pb2.SearchDirectoryRequest(name="Vera", purpose="test"), metadata=md, timeout=5),
    }
    for call in calls.values():
        await call()  # valid before the logout
    assert (await browser.post("/api/v1/auth/logout")).status_code == 200
    logged_out = time.monotonic()

    async def refused(call) -> bool:
        try:
            await call()
            return False
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
            assert "revoked" in (exc.details() or "")
            return True

    for name, call in calls.items():
        await poll(lambda call=call: refused(call), 6, f"{name} refusing the logged-out token")
    assert time.monotonic() - logged_out < 6


async def test_an_open_events_socket_is_closed_at_logout(served):
    address, _, _, new_browser = served
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    async with connect(f"ws://{address}/api/v1/meetings/{meeting_id}/events",
                       additional_headers={"Cookie": cookie_header(coordinator), "Origin": f"http://{address}"}) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["kind"] == "MEETING_EVENT_KIND_SNAPSHOT"
        assert (await coordinator.post("/api/v1/auth/logout")).status_code == 200
        code, sent = await closed_with(ws, 5)
    assert code == 4401 and sent[-1]["error"]["reason"] == "LOGGED_OUT"


async def test_an_open_events_socket_is_closed_when_its_session_expires(served, person_token):
    address, _, _, new_browser = served
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    short = person_token("coordinator", ttl=dt.timedelta(seconds=3))
    async with connect(f"ws://{address}/api/v1/meetings/{meeting_id}/events",
                       additional_headers={"Cookie": f"svpl_session={short}", "Origin": f"http://{address}"}) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["kind"] == "MEETING_EVENT_KIND_SNAPSHOT"
        code, sent = await closed_with(ws, 8)
    assert code == 4401 and sent[-1]["error"]["reason"] == "SESSION_EXPIRED"


# ------------------------------------------------------------------ event streams (item 4)


def roster_watches() -> float:
    return REGISTRY.get_sample_value("svpl_gateway_roster_watches") or 0.0


async def test_event_sockets_are_capped_per_session_and_per_meeting_and_share_one_roster_stream(served):
    """One participant opening socket after socket: a session's pages of a meeting share one roster
    stream, a fifth page of one session is refused, and so is a page over the meeting's cap."""
    address, app, _, new_browser = served
    first, second = new_browser(), new_browser()
    await first.login(COORDINATOR)
    await second.login(COORDINATOR)
    meeting_id = (await book_video_meeting(first))["meeting_id"]
    await start(first, meeting_id)
    app.state.event_streams.per_meeting = 6
    url = f"ws://{address}/api/v1/meetings/{meeting_id}/events"

    def opened(browser):
        return connect(url, additional_headers={"Cookie": cookie_header(browser), "Origin": f"http://{address}"})

    before = roster_watches()
    pages = [await opened(first).__aenter__() for _ in range(4)]
    try:
        for ws in pages:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["kind"] == "MEETING_EVENT_KIND_SNAPSHOT"
        assert roster_watches() == before + 1
        async with opened(first) as fifth:
            code, sent = await closed_with(fifth, 5)
        assert code == 4429 and sent[0]["error"]["reason"] == "TOO_MANY_STREAMS"
        others = [await opened(second).__aenter__() for _ in range(2)]
        pages += others
        for ws in others:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["kind"] == "MEETING_EVENT_KIND_SNAPSHOT"
        async with opened(second) as over:
            code, sent = await closed_with(over, 5)
        assert code == 4429 and sent[0]["error"]["reason"] == "TOO_MANY_STREAMS"
        # Every page still follows the meeting: a change reaches all six.
        step = (await first.get(f"/api/v1/meetings/{meeting_id}/agenda")).json()["agenda"]["step"]
        assert (await first.post(f"/api/v1/meetings/{meeting_id}/agenda/advance",
                                 json={"from_step": step})).status_code == 200
        for ws in pages:
            while json.loads(await asyncio.wait_for(ws.recv(), 10))["kind"] != "MEETING_EVENT_KIND_AGENDA_CHANGED":
                pass
    finally:
        for ws in pages:
            await ws.close()
    await poll(lambda: asyncio.sleep(0, roster_watches() == before), 5, "the shared roster streams closing")


async def test_a_page_of_another_scheme_cannot_open_the_events(served):
    """The Origin must be the portal's own, scheme included (an http:// page of the same host is
    not the https:// portal, and vice versa)."""
    address, _, _, new_browser = served
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    async with connect(f"ws://{address}/api/v1/meetings/m1/events",
                       additional_headers={"Cookie": cookie_header(coordinator),
                                           "Origin": f"https://{address}"}) as ws:
        code, sent = await closed_with(ws, 5)
    assert code == 4403 and sent[0]["error"]["reason"] == "ORIGIN"


# ------------------------------------------------------------------ slow requests, test rooms (items 9, 1)


async def test_a_half_sent_request_is_closed_at_the_header_deadline(gateway):
    _, system, _ = gateway
    app = create_app(gateway_settings(system, header_read_timeout_seconds=1))
    try:
        async with serving(app) as address:
            host, port = address.split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
            await writer.drain()
            began = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
            assert time.monotonic() - began < 3
            writer.close()
            # A whole request is still answered, on a connection kept alive past the deadline.
            async with httpx.AsyncClient(base_url=f"http://{address}") as http:
                assert (await http.get("/healthz")).status_code == 200
                await asyncio.sleep(1.5)
                assert (await http.get("/healthz")).status_code == 200
    finally:
        await app.state.backends.close()


async def test_test_room_negotiations_are_rate_limited_per_person(gateway):
    _, _, new_browser = gateway
    citizen, other = new_browser(), new_browser()
    await citizen.login(PATIENT)
    await other.login(COORDINATOR)
    offer = {"sdp_offer": "v=0\r\n"}
    answers = [(await citizen.post("/api/v1/test-room/negotiation", json=offer)).status_code for _ in range(7)]
    assert 429 not in answers[:6], answers
    limited = await citizen.post("/api/v1/test-room/negotiation", json=offer)
    assert limited.status_code == 429 and limited.json()["reason"] == "TEST_ROOM_RATE"
    assert int(limited.headers["retry-after"]) >= 1
    assert (await other.post("/api/v1/test-room/negotiation", json=offer)).status_code != 429


# ------------------------------------------------------------------ names (item 8)


@pytest.mark.parametrize("name", ["Eve\x00", "Eve\u202eevE", "E\u200bve", "Eve\r\nKoordinator"])
async def test_a_name_that_would_spoof_the_display_is_refused_and_changes_nothing(gateway, name):
    _, _, new_browser = gateway
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    before = (await coordinator.get(f"/api/v1/meetings/{meeting_id}/participants")).json()
    refused = await coordinator.post(f"/api/v1/meetings/{meeting_id}/participants", json={
        "full_name": name, "role": "PARTICIPANT_ROLE_REGION_STAFF",
        "person": {"id_kind": "ID_KIND_HSA_ID", "id": "SE2321000057-2001"}})
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["field"] == "full_name"
    assert (await coordinator.get(f"/api/v1/meetings/{meeting_id}/participants")).json() == before
    options = (await coordinator.get("/api/v1/booking-options")).json()
    party = await coordinator.post("/api/v1/bookings", json={
        "idempotency_key": f"spoof-{len(name)}-{ord(name[3])}", "patient_personnummer": PATIENT,
        "start": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat(),
        "duration_minutes": 60, "booking_unit_hsa_id": UNIT,
        "care_service": options["video_care_service"], "contact_type": options["video_contact_type"],
        "parties": [{"kind": "PARTY_KIND_MUNICIPALITY_UNIT", "name": name, "channel": "CHANNEL_PHONE",
                     "address": "036-10 10 10"}]})
    assert party.status_code == 400 and party.json()["errors"][0]["field"].endswith(".name"), party.text
