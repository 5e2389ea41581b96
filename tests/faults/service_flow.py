"""One SIP meeting's whole flow, as a client that retries what a dying service cut short:
book (idempotency key) -> register two participants -> open -> start -> admit -> file a
support report (idempotency key) -> end. Two clients: straight to the services over gRPC,
and through the gateway over HTTP. Each records what it saw (UNAVAILABLE / connection
errors / 503s) per step, and what it was acknowledged, for the fault tests to check."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import time
import uuid
from dataclasses import dataclass, field

import grpc
import httpx
from svpl.booking.v1 import booking_pb2 as bpb
from svpl.booking.v1 import booking_pb2_grpc
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2 as rpb
from svpl.roster.v1 import roster_pb2_grpc
from svpl.support.v1 import support_pb2 as spb
from svpl.support.v1 import support_pb2_grpc

from tests.booking.conftest import PATIENT, UNIT, create_request, party
from tests.conftest import PEOPLE

# The two registered staff (besides the coordinator and the patient, who come with the booking).
STAFF = [("region_staff", rpb.PARTICIPANT_ROLE_REGION_STAFF), ("municipality_staff",
                                                                 rpb.PARTICIPANT_ROLE_MUNICIPALITY_STAFF)]
# A call whose deadline passed is retried too: every call of the flow is idempotent (keys, or
# the same registration / state change again), so the retry is safe; counted apart.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# Fast reconnects after a peer's restart, as a client on the same machine would configure.
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 300)]


@dataclass
class Flow:
    """What one flow was acknowledged."""
    tag: str
    booking_key: str
    report_key: str
    start: dt.datetime = field(default_factory=lambda: _soon())
    booking_id: str = ""
    meeting_id: str = ""
    participant_ids: dict[str, str] = field(default_factory=dict)
    ticket_id: str = ""
    ended: bool = False


class FlowClient:
    """Runs flows in a loop; `step` is where it is now, `retried[(step, what)]` counts retries."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.flows: list[Flow] = []
        self.retried: collections.Counter[tuple[str, str]] = collections.Counter()
        self.step = ""
        self.step_changed = asyncio.Event()
        self.completed = 0
        self.took: dict[str, float] = {}  # how long each step's call last took, answered
        self.pending_seen = 0  # bookings acknowledged with meeting_pending (roster away)
        self.stop = False

    def enter(self, step: str) -> None:
        self.step = step
        self.step_changed.set()
        self.step_changed = asyncio.Event()

    async def at_step(self, step: str, timeout: float = 20) -> None:
        async def reached():
            while self.step != step:
                await self.step_changed.wait()
        await asyncio.wait_for(reached(), timeout)

    def saw(self, what: str) -> int:
        return sum(n for (_, w), n in self.retried.items() if w == what)

    async def loop(self) -> None:
        while not self.stop:
            flow = Flow(f"{self.name}-{len(self.flows)}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, uuid.uuid4().hex)
            self.flows.append(flow)
            await self.run(flow)
            self.completed += 1

    async def run(self, flow: Flow) -> None:
        raise NotImplementedError


async def backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.05 * 2 ** attempt, 0.4))  # a client's back-off between retries


class GrpcFlowClient(FlowClient):
    def __init__(self, addresses: dict[str, str], tokens: dict[str, tuple]) -> None:
        super().__init__("grpc")
        self.channels = {n: grpc.aio.insecure_channel(a, options=CHANNEL_OPTIONS) for n, a in addresses.items()}
        self.booking = booking_pb2_grpc.BookingServiceStub(self.channels["booking"])
        self.roster = roster_pb2_grpc.RosterServiceStub(self.channels["roster"])
        self.support = support_pb2_grpc.SupportServiceStub(self.channels["support"])
        self.tokens = tokens

    async def close(self) -> None:
        for c in self.channels.values():
            await c.close()

    async def call(self, step: str, rpc, request, who: str = "coordinator"):
        """Call until answered; only RETRYABLE codes are retried (anything else fails the flow)."""
        self.enter(step)
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                reply = await rpc(request, metadata=self.tokens[who], timeout=15)
                self.took[step] = time.monotonic() - started
                return reply
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise AssertionError(f"{step}: {exc.code().name} {exc.details()}") from exc
                self.retried[(step, exc.code().name)] += 1
                attempt += 1
                await backoff(attempt)

    async def run(self, flow: Flow) -> None:
        request = create_request(key=flow.booking_key, parties=[party(flow.tag)], start=flow.start)
        booked = (await self.call("book", self.booking.CreateBooking, request)).booking
        flow.booking_id = booked.booking_id
        flow.meeting_id = booked.meeting_id
        self.pending_seen += booked.meeting_pending
        while not flow.meeting_id:  # meeting_pending: the booking's outbox creates the room
            assert booked.meeting_pending, "a SIP video booking without its meeting and not pending"
            await asyncio.sleep(0.05)
            booked = (await self.call("book-pending", self.booking.GetBooking,
                                      bpb.GetBookingRequest(booking_id=flow.booking_id))).booking
            flow.meeting_id = booked.meeting_id
        for who, role in STAFF:
            p = PEOPLE[who]
            reply = await self.call("register", self.roster.RegisterParticipant, rpb.RegisterParticipantRequest(
                meeting_id=flow.meeting_id, full_name=p["name"], role=role,
                person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID, id=p["person_id"])))
            flow.participant_ids[who] = reply.participant.participant_id
        await self.call("open", self.roster.OpenMeeting, rpb.OpenMeetingRequest(meeting_id=flow.meeting_id))
        await self.call("start", self.roster.StartMeeting, rpb.StartMeetingRequest(meeting_id=flow.meeting_id))
        admitted = await self.call("admit", self.roster.Admit, rpb.AdmitRequest(meeting_id=flow.meeting_id),
                                   who="region_staff")
        assert admitted.participant_id == flow.participant_ids["region_staff"]
        staff = PEOPLE["region_staff"]
        report = spb.FileReportRequest(
            reporter=spb.Reporter(name=staff["name"], kind=spb.REPORTER_KIND_REGION_STAFF,
                                  person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID,
                                                              id=staff["person_id"])),
            problem=spb.PROBLEM_KIND_CONNECTION, description=f"hör inget ({flow.tag})", meeting_id=flow.meeting_id,
            participant_id=admitted.participant_id, idempotency_key=flow.report_key)
        flow.ticket_id = (await self.call("report", self.support.FileReport, report, who="region_staff")).ticket.ticket_id
        ended = await self.call("end", self.roster.EndMeeting, rpb.EndMeetingRequest(meeting_id=flow.meeting_id))
        assert ended.meeting.state == rpb.MEETING_STATE_ENDED
        flow.ended = True
        self.enter("done")


_starts = itertools.count()


def _soon() -> dt.datetime:
    """Each flow's own start time, five minutes ahead of when the flow is made (not of when this module
    was imported: the whole suite runs longer than that) and a second apart from every other flow's:
    how a listing tells the bookings apart."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return now + dt.timedelta(minutes=5, seconds=next(_starts))


class HttpFlowClient(FlowClient):
    """The same flow through the gateway: retries connection errors and 503 problems."""

    def __init__(self, base: str) -> None:
        super().__init__("http")
        self.http = httpx.AsyncClient(base_url=base, timeout=15)
        self.cookies: dict[str, dict[str, str]] = {"coordinator": {}, "region_staff": {}}

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self, step: str, method: str, path: str, who: str = "coordinator", json=None) -> dict:
        self.enter(step)
        attempt = 0
        while True:
            try:
                if not self.cookies[who].get("svpl_session"):
                    await self._send(who, "GET", "/api/v1/openapi.json", None)
                    r = await self._send(who, "POST", "/api/v1/auth/development",
                                         {"person_id": PEOPLE[who]["person_id"]})
                    if r.status_code != 503:
                        assert r.status_code == 200, r.text
                started = time.monotonic()
                response = await self._send(who, method, path, json)
                self.took[step] = time.monotonic() - started
            except httpx.TransportError:
                self.retried[(step, "connection error")] += 1
            else:
                if response.status_code != 503:
                    assert response.status_code == 200, f"{step}: {response.status_code} {response.text}"
                    return response.json()
                problem = response.json()
                assert response.headers["content-type"].startswith("application/problem+json"), problem
                self.retried[(step, "503")] += 1
            attempt += 1
            await backoff(attempt)

    async def _send(self, who: str, method: str, path: str, json) -> httpx.Response:
        jar = self.cookies[who]
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in jar.items()), "x-csrf-token": jar.get("svpl_csrf", "")}
        response = await self.http.request(method, path, headers=headers, json=json)
        for cookie in response.headers.get_list("set-cookie"):
            name, _, rest = cookie.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0]
        return response

    async def run(self, flow: Flow) -> None:
        booked = (await self.request("book", "POST", "/api/v1/bookings", json={
            "idempotency_key": flow.booking_key, "patient_personnummer": PATIENT, "start": flow.start.isoformat(),
            "duration_minutes": 60, "booking_unit_hsa_id": UNIT,
            "care_service": "Samordnad individuell plan besök", "contact_type": "Distanskontakt video team",
            "parties": [{"kind": "PARTY_KIND_MUNICIPALITY_UNIT", "name": flow.tag, "channel": "CHANNEL_SECURE_MESSAGING",
                         "address": f"cosmic:{flow.tag}"}]}))["booking"]
        flow.booking_id = booked["booking_id"]
        self.pending_seen += bool(booked.get("meeting_pending"))
        while not booked.get("meeting_id"):
            assert booked.get("meeting_pending"), "a SIP video booking without its meeting and not pending"
            await asyncio.sleep(0.05)
            booked = (await self.request("book-pending", "GET", f"/api/v1/bookings/{flow.booking_id}"))["booking"]
        flow.meeting_id = meeting = booked["meeting_id"]
        for who, role in STAFF:
            p = PEOPLE[who]
            reply = await self.request("register", "POST", f"/api/v1/meetings/{meeting}/participants", json={
                "full_name": p["name"], "role": rpb.ParticipantRole.Name(role),
                "person": {"id_kind": "ID_KIND_HSA_ID", "id": p["person_id"]}})
            flow.participant_ids[who] = reply["participant"]["participant_id"]
        await self.request("open", "POST", f"/api/v1/meetings/{meeting}/open")
        await self.request("start", "POST", f"/api/v1/meetings/{meeting}/start")
        admitted = await self.request("admit", "POST", f"/api/v1/meetings/{meeting}/admission", who="region_staff")
        assert admitted["participant_id"] == flow.participant_ids["region_staff"]
        ticket = await self.request("report", "POST", "/api/v1/support/reports", who="region_staff", json={
            "problem": "PROBLEM_KIND_CONNECTION", "description": f"hör inget ({flow.tag})", "meeting_id": meeting,
            "participant_id": admitted["participant_id"], "idempotency_key": flow.report_key})
        flow.ticket_id = ticket["ticket"]["ticket_id"]
        ended = await self.request("end", "POST", f"/api/v1/meetings/{meeting}/end")
        assert ended["meeting"]["state"] == "MEETING_STATE_ENDED"
        flow.ended = True
        self.enter("done")
