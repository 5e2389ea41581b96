"""The access-control matrix of every gateway route × every role, generated from the routes'
own declarations (services/gateway/access.py: `@relays(service, rpc)`, `@as_gateway`, `@login`,
`@session_only`, `@public`), which the gateway uses to choose the method it calls.

For a route relaying the person's token, the expectation is the declared method's ACCESS rule
(services/<name>/servicer.py, imported here only). Every route is called through the real
gateway wired to the real services, as anonymous, patient, next of kin, municipality staff,
region staff, the coordinator of the meeting, the coordinator of another meeting and the support
desk. Refused: 401 (anonymous) / 403 problem details. Allowed: neither (400/404/409 for the dummy
data are fine). Meeting-scoped routes use one real meeting (booked by the coordinator, patient and
next of kin registered): only its coordinator and registered participants get past the rules."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI, Request
from svpl.booking.v1 import booking_pb2
from svpl.roster.v1 import roster_pb2
from svpl.support.v1 import support_pb2
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from devstack.harness import ORDER
from services.gateway import access
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.gateway.routes.common import call, enum_names
from services.runtime import auth
from tests.conftest import PEOPLE
from tests.gateway.conftest import gateway, served  # noqa: F401 - the gateway wired to the services
from tests.gateway.flow import book_video_meeting, register, start

ACCESS = {name: importlib.import_module(f"services.{name}.servicer").ACCESS for name in ORDER}
ROLES = ["anonymous", "patient", "next_of_kin", "municipality_staff", "region_staff", "coordinator",
         "other_coordinator", "support_desk"]
# Of the meeting under test: its coordinator and the people registered in it.
MEMBERS = {"coordinator", "patient", "next_of_kin"}
FINAL = {"/api/v1/meetings/{meeting_id}/end", "/api/v1/meetings/{meeting_id}/abort"}
REFUSED = {401, 403}

# A minimal valid-shaped request for every route: (method, path template) -> request options
# (a function of the test's context: the meeting, the coordinator's join token).
SAMPLES: dict[tuple[str, str], dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("GET", "/api/v1/openapi.json"): {},
    ("GET", "/api/v1/session"): {},
    ("GET", "/api/v1/auth/development/people"): {},
    ("POST", "/api/v1/auth/development"): lambda c: {"json": {"person_id": c["person_id"]}},  # (logs in again)
    ("POST", "/api/v1/auth/siths"): {},
    ("POST", "/api/v1/auth/bankid"): {},
    ("GET", "/api/v1/auth/bankid/qr"): {},
    ("GET", "/api/v1/auth/bankid/qr.svg"): {},
    ("POST", "/api/v1/auth/bankid/collect"): {},
    ("POST", "/api/v1/auth/bankid/cancel"): {},
    ("GET", "/auth/{region}/1177"): {},
    ("GET", "/auth/{region}/1177/callback"): {"params": {"state": "s", "code": "c"}},
    ("POST", "/auth/{region}/1177/callback"): {"data": {"RelayState": "s", "SAMLResponse": "c"}},
    ("POST", "/api/v1/auth/logout"): {},
    ("GET", "/api/v1/booking-options"): {},
    ("POST", "/api/v1/bookings"): {"json": {
        "idempotency_key": "matrix-0001", "patient_personnummer": "191212121212", "start": "2030-01-01T09:00:00Z",
        "duration_minutes": 60, "booking_unit_hsa_id": "SE2321000057-0001", "care_service": "no such service",
        "contact_type": "no such type"}},
    ("GET", "/api/v1/bookings"): {},
    ("GET", "/api/v1/bookings/{booking_id}"): {},
    ("GET", "/api/v1/bookings/{booking_id}/invitations"): {},
    ("POST", "/api/v1/bookings/{booking_id}/cancel"): {"json": {"reason": "matrix"}},
    ("POST", "/api/v1/bookings/{booking_id}/reschedule"): {"json": {"start": "2030-01-01T10:00:00Z"}},
    ("POST", "/api/v1/bookings/{booking_id}/invitations"): {"json": {"parties": [{
        "kind": "PARTY_KIND_MUNICIPALITY_UNIT", "name": "Hemtjänsten", "channel": "CHANNEL_PHONE",
        "address": "036-10 10 10"}]}},
    ("POST", "/api/v1/bookings/{booking_id}/rebook-requests/{request_id}/resolution"): {
        "json": {"resolution": "matrix"}},
    ("POST", "/api/v1/invitations/{invitation_id}/confirmation"): {
        "path": "/api/v1/invitations/no-such-invitation/confirmation", "json": {"attendee_names": ["Mona Kommun"]}},
    ("GET", "/api/v1/phone-tasks"): {},
    ("POST", "/api/v1/phone-tasks/{task_id}/done"): {"path": "/api/v1/phone-tasks/no-such-task/done"},
    ("GET", "/api/v1/meetings"): {},
    ("GET", "/api/v1/meetings/{meeting_id}"): {},
    ("POST", "/api/v1/meetings/{meeting_id}/open"): {},
    ("POST", "/api/v1/meetings/{meeting_id}/start"): {},
    ("POST", "/api/v1/meetings/{meeting_id}/end"): {},
    ("POST", "/api/v1/meetings/{meeting_id}/abort"): {"json": {"reason": "matrix"}},
    ("GET", "/api/v1/meetings/{meeting_id}/participants"): {},
    ("POST", "/api/v1/meetings/{meeting_id}/participants"): {"json": {
        "full_name": "Ulla Utanför", "role": "PARTICIPANT_ROLE_MUNICIPALITY_STAFF",
        "person": {"id_kind": "ID_KIND_HSA_ID", "id": "SE2120000829-3999"}}},
    ("POST", "/api/v1/meetings/{meeting_id}/participants/{participant_id}"): {"json": {
        "full_name": "Ulla Utanför", "role": "PARTICIPANT_ROLE_MUNICIPALITY_STAFF"}},
    ("POST", "/api/v1/meetings/{meeting_id}/removals"): {"json": {"participant_id": "no-such-participant"}},
    ("POST", "/api/v1/meetings/{meeting_id}/physical-presence"): {
        "json": {"participant_id": "no-such-participant", "physically_present": True}},
    ("POST", "/api/v1/meetings/{meeting_id}/identifications"): {
        "json": {"connection_id": "no-such-connection", "participant_id": "no-such-participant"}},
    ("POST", "/api/v1/meetings/{meeting_id}/delegates"): {"json": {"hsa_id": "SE2321000057-2001"}},
    ("GET", "/api/v1/meetings/{meeting_id}/personal-code"): {},
    ("POST", "/api/v1/meetings/{meeting_id}/participants/{participant_id}/personal-code"): {},
    ("GET", "/api/v1/meetings/{meeting_id}/connected"): {},
    ("GET", "/api/v1/meetings/{meeting_id}/reconciliation"): {},
    ("GET", "/api/v1/meetings/{meeting_id}/agenda"): {},
    ("POST", "/api/v1/meetings/{meeting_id}/agenda/advance"): {
        "json": {"from_step": enum_names(roster_pb2.AgendaStep)[-1]}},
    ("POST", "/api/v1/meetings/{meeting_id}/agenda/speaker"): {"json": {"participant_id": "no-such-participant"}},
    ("POST", "/api/v1/meetings/{meeting_id}/agenda/summary"): {"json": {"summary": "matrix"}},
    ("POST", "/api/v1/meetings/{meeting_id}/confidentiality-assessment"): {
        "json": {"care_provider": "Region Jönköpings län", "note": "matrix"}},
    ("POST", "/api/v1/meetings/{meeting_id}/admission"): {},
    # Each member with the join token issued to them; everyone else with the coordinator's.
    ("POST", "/api/v1/meetings/{meeting_id}/negotiation"): lambda c: {"json": {
        "join_token": c["join_tokens"].get(c["role"]) or c["join_tokens"]["coordinator"], "sdp_offer": "v=0\r\n"}},
    ("GET", "/api/v1/meetings/{meeting_id}/quality"): {},
    ("GET", "/api/v1/meetings/{meeting_id}/tiles"): {},
    ("GET", "/api/v1/ice-servers"): {},
    ("POST", "/api/v1/test-room/negotiation"): {"json": {"sdp_offer": "v=0\r\n"}},
    ("GET", "/api/v1/directory/people"): {"params": {"name": "Vera"}},
    ("GET", "/api/v1/support/routing"): {},
    ("POST", "/api/v1/support/reports"): {"json": {
        "problem": enum_names(support_pb2.ProblemKind)[0], "description": "matrix",
        "meeting_id": "no-such-meeting"}},
    ("WEBSOCKET", "/api/v1/meetings/{meeting_id}/events"): {},
    ("GET", "/api/v1/desk/tickets"): {},
    ("GET", "/api/v1/desk/tickets/{ticket_id}"): {"path": "/api/v1/desk/tickets/no-such-ticket"},
    ("POST", "/api/v1/desk/tickets/{ticket_id}/take"): {"path": "/api/v1/desk/tickets/no-such-ticket/take"},
    ("POST", "/api/v1/desk/tickets/{ticket_id}/comments"): {
        "path": "/api/v1/desk/tickets/no-such-ticket/comments", "json": {"text": "matrix"}},
    ("POST", "/api/v1/desk/tickets/{ticket_id}/state"): {
        "path": "/api/v1/desk/tickets/no-such-ticket/state", "json": {"state": "TICKET_STATE_WAITING"}},
    ("POST", "/api/v1/desk/tickets/{ticket_id}/close"): {
        "path": "/api/v1/desk/tickets/no-such-ticket/close", "json": {"resolution": "matrix"}},
    ("POST", "/api/v1/desk/tickets/{ticket_id}/escalation"): {
        "path": "/api/v1/desk/tickets/no-such-ticket/escalation", "json": {"reason": "matrix"}},
    ("WEBSOCKET", "/api/v1/desk/events"): {},
    ("GET", "/api/v1/support/my-reports"): {},
    ("GET", "/api/v1/public/support"): {},
    ("POST", "/api/v1/public/reports"): {"json": {
        "reporter_kind": "REPORTER_KIND_CITIZEN", "name": "Matris", "contact": "070", "problem": "PROBLEM_KIND_OTHER",
        "description": "matrix"}},
    ("GET", "/healthz"): {},
    ("GET", "/"): {},
    ("GET", "/auth/{region}/login"): {},
    ("GET", "/auth/{region}/report"): {},
    ("GET", "/desk/"): {},
    ("GET", "/portal/"): {},
    ("MOUNT", "/static"): {"path": "/static/style.css"},
}
# Calls that must come after the others for the same role (the coordinator's join token first;
# logging out ends the browser's session).
ORDER_LAST = {("POST", "/api/v1/meetings/{meeting_id}/admission"): -1,
              ("POST", "/api/v1/meetings/{meeting_id}/negotiation"): 1,
              ("GET", "/api/v1/meetings/{meeting_id}/quality"): 1,
              ("GET", "/api/v1/meetings/{meeting_id}/tiles"): 1,
              ("POST", "/api/v1/auth/development"): 2, ("POST", "/api/v1/auth/logout"): 3}


def rows(app) -> list[tuple[str, str, access.RouteAccess | None]]:
    out = []
    for route in access.routes(app):
        methods = getattr(route, "methods", None)
        if methods is None:
            kinds = ["MOUNT"] if route.path == "/static" else ["WEBSOCKET"]
        else:
            kinds = sorted(methods - {"HEAD"})
        out += [(kind, route.path, access.access_of(route)) for kind in kinds]
    return out


def caller(role: str, roles: list[str]) -> auth.Caller:
    if role == "anonymous":
        return auth.ANONYMOUS
    return auth.Caller(kind="person", id=PEOPLE[role]["person_id"], roles=frozenset(roles))


def expected_allowed(path: str, declared: access.RouteAccess, role: str, who: auth.Caller) -> bool:
    """The declaration's verdict: the relayed method's ACCESS rule, and for a meeting-scoped
    route, membership of the meeting (the owning service's domain rule)."""
    if declared.kind in ("public", "login"):
        return True
    if role == "anonymous":
        return False
    allowed = ACCESS[declared.service][declared.rpc].admits(who) if declared.kind == "relay" else True
    for service, rpc in declared.relaying:  # a gateway route that also relays the person's token
        allowed = allowed and ACCESS[service][rpc].admits(who)
    if "{meeting_id}" in path:
        allowed = allowed and role in MEMBERS
    return allowed


def gateway_app() -> FastAPI:
    return create_app(GatewaySettings(service_token="unused"))


def test_every_route_is_declared_with_a_real_method_and_has_a_sample():
    app = gateway_app()
    problems = []
    for kind, path, declared in rows(app):
        if declared is None:
            problems.append(f"{kind} {path}: no access declaration")
            continue
        if (kind, path) not in SAMPLES:
            problems.append(f"{kind} {path}: no sample request in this matrix")
        if declared.kind in ("relay", "gateway", "login"):
            rule = ACCESS.get(declared.service, {}).get(declared.rpc)
            if rule is None:
                problems.append(f"{kind} {path}: declares {declared.service}.{declared.rpc}, which has no ACCESS rule")
            elif declared.kind != "relay" and not rule.admits(auth.Caller(kind="service", id="gateway")):
                problems.append(f"{kind} {path}: {declared.service}.{declared.rpc} does not admit the gateway's token")
            elif declared.kind == "relay" and rule.persons is None:
                problems.append(f"{kind} {path}: relays a person's token to {declared.rpc}, which admits no person")
        for service, rpc in declared.relaying:
            also = ACCESS.get(service, {}).get(rpc)
            if declared.kind != "gateway" or also is None or also.persons is None:
                problems.append(f"{kind} {path}: relays a person's token to {service}.{rpc}, "
                                "which is not a gateway route's further method admitting persons")
    assert not problems, "\n".join(problems)
    assert set(SAMPLES) == {(kind, path) for kind, path, _ in rows(app)}, "samples for routes that are gone"
    # A few rows by hand, so the declaration itself is reviewed, not only its enforcement.
    by_route = {(kind, path): d for kind, path, d in rows(app)}
    assert by_route[("POST", "/api/v1/bookings")] == access.RouteAccess("relay", "booking", "CreateBooking")
    assert by_route[("POST", "/api/v1/meetings/{meeting_id}/end")].rpc == "EndMeeting"
    assert by_route[("WEBSOCKET", "/api/v1/meetings/{meeting_id}/events")].rpc == "WatchMeeting"
    assert by_route[("GET", "/api/v1/directory/people")].rpc == "SearchDirectory"
    assert by_route[("GET", "/api/v1/meetings/{meeting_id}/tiles")] == access.RouteAccess(
        "gateway", "media", "GetRoomState", by_route[("GET", "/api/v1/meetings/{meeting_id}/tiles")].gate,
        (("roster", "GetMyAdmission"), ("roster", "GetConnectedList")))


def test_a_route_added_without_a_declaration_fails_the_check_create_app_runs():
    app = gateway_app()

    async def undeclared():
        return {}

    app.add_api_route("/api/v1/new-thing", undeclared)
    with pytest.raises(RuntimeError, match="/api/v1/new-thing"):
        access.check_declared(app)


async def test_call_relays_only_to_the_declared_method():
    @access.relays("booking", "GetBooking")
    async def declared_route():
        pass

    async def undeclared_route():
        pass

    def request(endpoint) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/api/v1/x", "headers": [], "query_string": b"",
                        "scheme": "https", "server": ("gateway.test", 443), "endpoint": endpoint})

    with pytest.raises(RuntimeError, match="ListBookingsRequest"):
        await call(request(declared_route), None, booking_pb2.ListBookingsRequest())
    with pytest.raises(RuntimeError, match="declares no method"):
        await call(request(undeclared_route), None, booking_pb2.GetBookingRequest())


async def _websocket(address: str, path: str, browser) -> tuple[int, str]:
    """(status, text): 200 when the stream opened with an event, else the close code - 4000."""
    cookies = "; ".join(f"{k}={v}" for k, v in browser.http.cookies.items())
    async with connect(f"ws://{address}{path}", additional_headers={"Cookie": cookies,
                                                                  "Origin": f"http://{address}"}) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if "error" not in first:
            return 200, ""
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            if closed.rcvd is None:
                raise AssertionError(f"{path}: the stream closed without a close frame") from closed
            return closed.rcvd.code - 4000, json.dumps(first["error"], ensure_ascii=False)
    raise AssertionError(f"{path}: the refused stream stayed open")


async def test_every_route_for_every_role_matches_the_declaration(served):  # noqa: F811 - the fixture
    address, app, system, new_browser = served
    region = app.state.settings.region
    browsers, who = {}, {}
    for role in ROLES:
        browsers[role] = new_browser()
        if role == "anonymous":
            who[role] = auth.ANONYMOUS
            continue
        # Each logs in the way the meeting allows them (a next of kin with 1177 e-services).
        method = "LOGIN_METHOD_E_SERVICES_1177" if role == "next_of_kin" else None
        session = await browsers[role].login(PEOPLE[role]["person_id"], method)
        who[role] = caller(role, session["roles"])

    # The meeting under test: booked by its coordinator (the patient is registered by the booking),
    # the next of kin registered, opened and started (so admission is possible).
    coordinator = browsers["coordinator"]
    booking = await book_video_meeting(coordinator)
    meeting_id = booking["meeting_id"]
    await register(coordinator, meeting_id, "Nils Närstående", "PARTICIPANT_ROLE_NEXT_OF_KIN",
                   PEOPLE["next_of_kin"]["person_id"])
    await start(coordinator, meeting_id)
    context = {"join_tokens": {}}

    async def send(kind: str, path: str, role: str) -> tuple[int, str]:
        sample = SAMPLES[(kind, path)]
        person_id = PEOPLE.get(role, PEOPLE["coordinator"])["person_id"]
        options = dict(sample({**context, "role": role, "person_id": person_id}) if callable(sample) else sample)
        url = options.pop("path", None) or path.format(meeting_id=meeting_id, booking_id="no-such-booking",
                                                      participant_id="no-such-participant",
                                                      request_id="no-such-request", region=region)
        browser = browsers[role]
        if kind == "WEBSOCKET":
            return await _websocket(address, url, browser)
        if kind == "POST":
            response = await browser.post(url, **options)
        else:
            response = await browser.get(url, **options)
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json"), (kind, path, role)
        if path.endswith("/admission") and response.status_code == 200:
            context["join_tokens"][role] = response.json()["join_token"]
        return response.status_code, response.text[:300]

    problems: list[str] = []
    observed: dict[tuple[str, str], dict[str, int]] = {}

    def judge(kind, path, declared, role, status, text):
        observed.setdefault((kind, path), {})[role] = status
        label = f"{kind} {path} as {role}"
        if status >= 500 and status != 503:
            problems.append(f"{label}: {status} {text}")
        if declared.kind in ("public", "login"):
            return  # judged below: the same answer whoever asks
        allowed = expected_allowed(path, declared, role, who[role])
        gate_refusals = {403, 409} if declared.kind == "gateway" and "{meeting_id}" in path else {403}
        if allowed and status in REFUSED:
            problems.append(f"{label}: declared allowed, got {status} {text}")
        elif not allowed:
            wanted = {401} if role == "anonymous" else gate_refusals
            if status not in wanted:
                problems.append(f"{label}: declared refused, wanted {sorted(wanted)}, got {status} {text}")

    async def run(batch, roles):
        for kind, path, declared in batch:
            results = await asyncio.gather(*(send(kind, path, role) for role in roles))
            for role, (status, text) in zip(roles, results):
                judge(kind, path, declared, role, status, text)

    table = sorted(rows(app), key=lambda row: ORDER_LAST.get(row[:2], 0))
    final = [row for row in table if row[1] in FINAL]
    await run([row for row in table if row[1] not in FINAL and ORDER_LAST.get(row[:2], 0) < 2], ROLES)
    # End and abort are final: first everyone they refuse, then the meeting's own coordinator.
    await run(final, [r for r in ROLES if r != "coordinator"])
    await run(final, ["coordinator"])
    await run([row for row in table if ORDER_LAST.get(row[:2], 0) >= 2], ROLES)

    for kind, path, declared in table:
        if declared.kind in ("public", "login") and len(set(observed[(kind, path)].values())) != 1:
            problems.append(f"{kind} {path} ({declared.kind}): answers depend on who asks: {observed[(kind, path)]}")
        if declared.kind == "public" and kind != "POST" and max(observed[(kind, path)].values()) >= 400:
            problems.append(f"{kind} {path} (public): {observed[(kind, path)]}")
    assert set(context["join_tokens"]) == MEMBERS, context["join_tokens"].keys()
    assert len(observed) == len(table) and sum(map(len, observed.values())) >= len(table) * len(ROLES)
    assert not problems, "\n".join(problems)
