"""Evidence through the real services: a report about a live meeting carries the participant's
quality snapshot from media (a real aiortc peer connected through roster's admission) and the
meeting's state from roster; a connection problem before a meeting asks the coordinator to
consider rebooking, visible on the booking. The reporters here are in the meeting (registered or
its coordinator): for anyone else see tests/support/test_meeting_membership.py."""

from __future__ import annotations

import datetime as dt

from svpl.booking.v1 import booking_pb2
from svpl.common.v1 import common_pb2
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2
from svpl.support.v1 import support_pb2 as pb

from devstack.harness import as_token
from devstack.peers import Peer
from devstack.samples import PATIENT_PNR
from devstack.samples import create_request as meeting_request
from tests.booking.conftest import UNIT
from tests.booking.conftest import create_request as booking_request
from tests.conftest import PEOPLE
from tests.polling import poll
from tests.support.conftest import file

MEDIA_INSTANCE = "media-support-test"
MONA = PEOPLE["municipality_staff"]["person_id"]


async def test_a_report_about_a_live_meeting_carries_the_quality_snapshot(system_factory, md, service_token):
    system = await system_factory(["identity", "media", "roster", "support"],
                                  overrides={"media": {"instance_id": MEDIA_INSTANCE}})
    roster, coordinator = system.stub("roster"), md("coordinator")
    meeting = (await roster.CreateMeeting(meeting_request("booking-support-1"),
                                          metadata=as_token(service_token("booking")))).meeting
    mid = meeting.meeting_id
    await roster.OpenMeeting(roster_pb2.OpenMeetingRequest(meeting_id=mid), metadata=coordinator)
    await roster.StartMeeting(roster_pb2.StartMeetingRequest(meeting_id=mid), metadata=coordinator)
    await roster.RegisterParticipant(roster_pb2.RegisterParticipantRequest(
        meeting_id=mid, full_name="Rita Region", role=roster_pb2.PARTICIPANT_ROLE_REGION_STAFF,
        person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID, id="SE2321000057-2001")), metadata=coordinator)
    admitted = await roster.Admit(roster_pb2.AdmitRequest(meeting_id=mid), metadata=md("region_staff"))

    peer = Peer(slots=1)
    try:
        offer = await peer.offer()
        answer = await system.stub("media").Negotiate(
            media_pb2.NegotiateRequest(join_token=admitted.join_token, sdp_offer=offer, meeting_id=mid),
            metadata=as_token(service_token("gateway")))
        await peer.answer(answer.sdp_answer)
        await poll(peer.connected.is_set, 15, what="the participant's peer to connect")
        snapshot_request = media_pb2.GetQualitySnapshotRequest(meeting_id=mid, participant_id=admitted.participant_id)

        async def measured():
            stats = (await system.stub("media").GetQualitySnapshot(
                snapshot_request, metadata=as_token(service_token("support")))).stats
            return stats if stats and stats[0].inbound_bitrate_kbps > 0 else None

        await poll(measured, 15, "a quality measurement")  # media has bytes from the peer: a real measurement exists
        await poll(lambda: _connected(roster, mid, coordinator), 15, "the coordinator connected")

        ticket = await file(system, md("region_staff"), problem=pb.PROBLEM_KIND_CONNECTION,
                            description="Bilden hackar", meeting_id=mid, participant_id=admitted.participant_id)
    finally:
        await peer.close()

    evidence = ticket.evidence
    assert evidence.note == ""
    assert (evidence.meeting_id, evidence.meeting_state) == (mid, "MEETING_STATE_LIVE")
    assert evidence.connected_count == 1 and evidence.registered_count >= 1
    assert [q.participant_id for q in evidence.quality] == [admitted.participant_id]
    quality = evidence.quality[0]
    assert quality.inbound_bitrate_kbps > 0 and quality.measured_at.seconds > 0
    assert evidence.captured_at.seconds >= quality.measured_at.seconds - 1
    # Stored with the ticket: the desk sees the same evidence later.
    stored = (await system.stub("support").GetTicket(pb.GetTicketRequest(ticket_id=ticket.ticket_id),
                                                     metadata=md("support_desk"))).ticket
    assert stored.evidence == evidence


async def _connected(roster, mid, coordinator) -> bool:
    reply = await roster.GetConnectedList(roster_pb2.GetConnectedListRequest(meeting_id=mid), metadata=coordinator)
    return reply.count == 1


async def test_a_report_about_an_unknown_meeting_says_so(system_factory, md):
    system = await system_factory(["identity", "roster", "support"])
    ticket = await file(system, md("region_staff"), problem=pb.PROBLEM_KIND_CONNECTION, meeting_id="no-such-meeting")
    # The same note as for someone else's meeting (tests/support/test_meeting_membership.py).
    assert ticket.ticket_id and ticket.evidence.note == "Inget underlag: mötet no-such-meeting finns inte bland " \
                                                        "anmälarens möten"


async def test_a_connection_problem_before_the_meeting_asks_the_coordinator_to_rebook(system_factory, md,
                                                                                       person_token):
    system = await system_factory(["identity", "roster", "booking", "support"])
    coordinator = as_token(person_token("coordinator", unit=UNIT))
    booking = (await system.stub("booking").CreateBooking(booking_request(), metadata=coordinator)).booking
    assert booking.meeting_id
    await system.stub("roster").RegisterParticipant(roster_pb2.RegisterParticipantRequest(
        meeting_id=booking.meeting_id, full_name="Mona Kommun", role=roster_pb2.PARTICIPANT_ROLE_MUNICIPALITY_STAFF,
        person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID, id=MONA)), metadata=coordinator)

    ticket = await file(system, md("municipality_staff"), problem=pb.PROBLEM_KIND_CONNECTION,
                        description="Testade anslutningen i testrummet: ingen bild", meeting_id=booking.meeting_id,
                        request_rebook=True)
    assert ticket.rebook_requested
    assert ticket.evidence.meeting_state == "MEETING_STATE_SCHEDULED"
    seen = (await system.stub("booking").GetBooking(booking_pb2.GetBookingRequest(booking_id=booking.booking_id),
                                                    metadata=coordinator)).booking
    assert [r.ticket_id for r in seen.rebook_requests] == [ticket.ticket_id]
    assert "ingen bild" in seen.rebook_requests[0].reason
    # Booking records who asked: the reporter, through support.
    records = await system.access_records({"service": "booking", "action": "booking.rebook_request"})
    assert [(r["actor"], r.get("via")) for r in records] == [(MONA, "service:support")]


async def test_a_rebook_request_booking_could_not_take_is_sent_when_booking_is_back(system_factory, md,
                                                                                    person_token):
    system = await system_factory(["identity", "roster", "booking", "support"])
    coordinator = as_token(person_token("coordinator", unit=UNIT))
    booking = (await system.stub("booking").CreateBooking(booking_request(), metadata=coordinator)).booking
    await system.stop_service("booking")
    # The meeting's coordinator reports (a coordinator is in their own meeting).
    ticket = await file(system, md("coordinator"), problem=pb.PROBLEM_KIND_CONNECTION, description="Nätet svajar",
                        meeting_id=booking.meeting_id, request_rebook=True)
    assert not ticket.rebook_requested
    assert "Begäran om ombokning väntar: bokningen svarade inte" in ticket.evidence.note

    await system.start_service("booking")
    tickets = system.running["support"].component.bindings[0].servicer._tickets
    assert await tickets.sweep(dt.timedelta(0)) == 1
    seen = (await system.stub("booking").GetBooking(booking_pb2.GetBookingRequest(booking_id=booking.booking_id),
                                                    metadata=coordinator)).booking
    assert [r.ticket_id for r in seen.rebook_requests] == [ticket.ticket_id]
    after = (await system.stub("support").GetTicket(pb.GetTicketRequest(ticket_id=ticket.ticket_id),
                                                    metadata=md("support_desk"))).ticket
    assert after.rebook_requested


async def test_every_desk_action_on_a_meeting_report_is_access_logged_naming_the_patient(system_factory, md,
                                                                                          service_token):
    """The evidence is about a patient's meeting: each desk read and change of the ticket writes an
    access record naming the meeting's patient and care unit, and the desk's view never shows them."""
    system = await system_factory(["identity", "media", "roster", "support"])
    roster, support, coordinator, desk = system.stub("roster"), system.stub("support"), md("coordinator"), md(
        "support_desk")
    meeting = (await roster.CreateMeeting(meeting_request("booking-support-access"),
                                          metadata=as_token(service_token("booking")))).meeting
    ticket = await file(system, coordinator, problem=pb.PROBLEM_KIND_CONNECTION, description="Ljudet försvinner",
                        meeting_id=meeting.meeting_id)
    assert ticket.evidence.meeting_id == meeting.meeting_id and ticket.evidence.meeting_state
    tid = ticket.ticket_id
    await support.GetTicket(pb.GetTicketRequest(ticket_id=tid), metadata=desk)
    await support.TakeTicket(pb.TakeTicketRequest(ticket_id=tid), metadata=desk)
    await support.CommentTicket(pb.CommentTicketRequest(ticket_id=tid, text="Vi tittar"), metadata=desk)
    done = (await support.ChangeTicketState(pb.ChangeTicketStateRequest(
        ticket_id=tid, state=pb.TICKET_STATE_CLOSED, note="Headset bytt"), metadata=desk)).ticket
    assert "191212121212" not in str(done)
    records = await system.access_records({"service": "support", "actor": PEOPLE["support_desk"]["person_id"],
                                           "resource": f"tickets/{tid}"})
    assert [r["action"] for r in records] == ["support.ticket.read", "support.ticket.take", "support.ticket.comment",
                                              "support.ticket.state"]
    assert {(r["patient"], r["care_unit"]) for r in records} == {(PATIENT_PNR, "SE2321000057-7001")}
