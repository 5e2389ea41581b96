"""A fault report about a meeting carries its data, and asks for a rebooking, only when the reporter is
in that meeting (security issue #14, item 3: hold against an attacker who is already logged in).

A logged-in person who only knows a meeting id gets a ticket without meeting data (no state, counts,
connected participants or quality), sends no rebook request to the coordinator's booking, and cannot
tell the meeting exists: the answer is the one a made-up id gets. For a reporter in the meeting the
evidence is attached and the patient's access log names the reporter (not service:support); a desk
filing for a caller is judged by the caller it names."""

from __future__ import annotations

import datetime as dt

from google.protobuf import text_format
from svpl.booking.v1 import booking_pb2
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2
from svpl.roster.v1 import roster_pb2
from svpl.support.v1 import support_pb2 as pb

from devstack.harness import as_token
from tests.booking.conftest import PATIENT, UNIT
from tests.booking.conftest import create_request as booking_request
from tests.conftest import PEOPLE
from tests.support.conftest import file

KIN = PEOPLE["next_of_kin"]["person_id"]
NO_SUCH_MEETING = "3f2a9c0d8e7b4a61b5c4d3e2f1a0b9c8"


def _shape(ticket: pb.Ticket, meeting_id: str) -> str:
    """The answer without what differs between any two tickets (ids, times) and the id asked about."""
    t = pb.Ticket()
    t.CopyFrom(ticket)
    t.ticket_id = t.number = ""
    t.ClearField("created_at")
    t.evidence.ClearField("captured_at")
    for h in t.history:
        h.ClearField("at")
    return text_format.MessageToString(t, as_utf8=True).replace(meeting_id, "<meeting>")


async def _booking_with_meeting(system, coordinator):
    booking = (await system.stub("booking").CreateBooking(booking_request(), metadata=coordinator)).booking
    assert booking.meeting_id
    return booking


async def _rebook_requests(system, booking, coordinator) -> list:
    seen = (await system.stub("booking").GetBooking(booking_pb2.GetBookingRequest(booking_id=booking.booking_id),
                                                    metadata=coordinator)).booking
    return list(seen.rebook_requests)


async def test_a_report_about_someone_elses_meeting_carries_nothing_asks_nothing_and_tells_nothing(
        system_factory, md, person_token):
    system = await system_factory(["identity", "roster", "booking", "support"])
    coordinator = as_token(person_token("coordinator", unit=UNIT))
    booking = await _booking_with_meeting(system, coordinator)
    stranger = md("next_of_kin")  # a logged-in citizen who is not registered in this meeting

    def report(meeting_id):
        return file(system, stranger, problem=pb.PROBLEM_KIND_CONNECTION, description="Ingen bild",
                    meeting_id=meeting_id, participant_id="p-1", request_rebook=True)

    theirs = await report(booking.meeting_id)
    made_up = await report(NO_SUCH_MEETING)

    for ticket in (theirs, made_up):
        evidence = ticket.evidence
        assert (evidence.meeting_state, evidence.registered_count, evidence.connected_count) == ("", 0, 0)
        assert list(evidence.quality) == [] and not ticket.rebook_requested
    # Indistinguishable from a made-up id: nothing tells the meeting exists.
    assert _shape(theirs, booking.meeting_id) == _shape(made_up, NO_SUCH_MEETING)
    # No rebook request reached the coordinator's booking, not even from the sweep later.
    tickets = system.running["support"].component.bindings[0].servicer._tickets
    await tickets.sweep(dt.timedelta(0))
    assert await _rebook_requests(system, booking, coordinator) == []
    again = (await system.stub("support").GetTicket(pb.GetTicketRequest(ticket_id=theirs.ticket_id),
                                                    metadata=stranger)).ticket
    assert again.evidence.meeting_state == "" and not again.rebook_requested
    # Nothing of the meeting was read for the stranger, nor by support on its own account.
    records = await system.access_records({"resource": f"meeting/{booking.meeting_id}"})
    assert not [r for r in records if r["actor"] in (KIN, "service:support")], records


async def test_a_report_by_someone_in_the_meeting_carries_its_data_and_the_log_names_them(
        system_factory, md, person_token):
    system = await system_factory(["identity", "roster", "booking", "support"])
    coordinator = as_token(person_token("coordinator", unit=UNIT))
    booking = await _booking_with_meeting(system, coordinator)
    mid = booking.meeting_id
    await system.stub("roster").RegisterParticipant(roster_pb2.RegisterParticipantRequest(
        meeting_id=mid, full_name="Nils Närstående", role=roster_pb2.PARTICIPANT_ROLE_NEXT_OF_KIN,
        person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=KIN)), metadata=coordinator)

    ticket = await file(system, md("next_of_kin"), problem=pb.PROBLEM_KIND_CONNECTION, description="Ingen bild",
                        meeting_id=mid, request_rebook=True)
    assert ticket.evidence.meeting_state == "MEETING_STATE_SCHEDULED" and ticket.evidence.registered_count == 3
    assert ticket.rebook_requested
    assert [r.ticket_id for r in await _rebook_requests(system, booking, coordinator)] == [ticket.ticket_id]

    # The desk files for a caller: judged by the caller it names (in the meeting: the patient; not: Rita).
    desk = md("support_desk")
    for_patient = await file(system, desk, problem=pb.PROBLEM_KIND_CONNECTION, description="Patienten hör inget",
                             meeting_id=mid, reporter=pb.Reporter(
                                 name="Tolvan Tolvansson", kind=pb.REPORTER_KIND_CITIZEN,
                                 person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=PATIENT)))
    assert for_patient.evidence.meeting_state == "MEETING_STATE_SCHEDULED"
    for_stranger = await file(system, desk, problem=pb.PROBLEM_KIND_CONNECTION, description="Hör inget",
                              meeting_id=mid, reporter=pb.Reporter(
                                  name="Rita Region", kind=pb.REPORTER_KIND_REGION_STAFF,
                                  person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID,
                                                              id=PEOPLE["region_staff"]["person_id"])))
    assert for_stranger.evidence.meeting_state == "" and for_stranger.evidence.registered_count == 0

    # The patient's access-log extract names the people support read for; never service:support.
    officer = as_token(person_token(person_id="SE2321000057-5001", id_kind="hsa_id", name="Lena Logg",
                                    method="siths", roles=["staff", "region_staff", "access_log"]))
    extract = (await system.stub("identity").ListAccessRecords(
        identity_pb2.ListAccessRecordsRequest(patient_personnummer=PATIENT, page={"page_size": 500}),
        metadata=officer)).records
    roster_reads = [(r.action, r.actor) for r in extract
                    if r.service == "roster" and r.action != "register_participant"]
    assert roster_reads == [("read_report_evidence", KIN), ("read_report_evidence", PATIENT)]
    assert ("booking", "booking.rebook_request", KIN) in [(r.service, r.action, r.actor) for r in extract]
    assert not [r for r in extract if r.actor == "service:support"]
    via = await system.access_records({"action": {"$in": ["read_report_evidence", "booking.rebook_request"]}})
    assert {r.get("via") for r in via} == {"service:support"}
