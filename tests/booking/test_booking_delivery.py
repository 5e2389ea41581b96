"""Invitations are never lost and never duplicated at the receiver; room creation survives
roster being down. Real identity + roster in-process, real database, HTTP receiver."""

from __future__ import annotations

from svpl.booking.v1 import booking_pb2 as pb
from svpl.roster.v1 import roster_pb2

from devstack.harness import as_token
from tests.booking.conftest import FAST_OUTBOX, create_request, party
from tests.polling import poll


async def _invitations(booking, booking_id, who):
    return (await booking.ListInvitations(pb.ListInvitationsRequest(booking_id=booking_id), metadata=who)).invitations


async def test_dispatcher_killed_mid_delivery_then_restarted_delivers_every_invitation_exactly_once(
        booking_system, coordinator, receiver):
    booking = booking_system.stub("booking")
    names = ["Hemtjänst Norr", "Avdelning 7", "Försäkringskassan", "Primärvården Öst"]
    receiver.hang_after_accepting = True  # the receiver keeps each message but the answer never comes
    created = (await booking.CreateBooking(create_request(parties=[party(n) for n in names]),
                                           metadata=coordinator)).booking
    await poll(lambda: _true(receiver.hanging.is_set()), 15, "the receiver holding a delivery")
    await booking_system.stop_service("booking")  # kills the dispatcher mid-delivery
    kept_before_kill = set(receiver.accepted)
    assert kept_before_kill  # some messages reached the receiver, none was recorded as delivered

    receiver.hang_after_accepting = False
    await booking_system.start_service("booking")  # a new dispatcher, once the dead one's leases expire

    async def all_delivered():
        invs = await _invitations(booking, created.booking_id, coordinator)
        return invs if all(i.state == pb.INVITATION_STATE_DELIVERED for i in invs) else None

    invitations = await poll(all_delivered, 15, "every invitation delivered by the new dispatcher")
    assert len(invitations) == len(names)
    # Exactly once at the receiver: one kept message per party ...
    assert len(receiver.accepted) == len(names)
    assert sorted(m["recipient"] for m in receiver.accepted.values()) == sorted(party(n).address for n in names)
    # ... although the killed deliveries were sent again (duplicates suppressed by message id).
    assert all(receiver.posts[m] == 2 for m in kept_before_kill)
    assert all(i.delivery_attempts >= 1 and i.last_error == "" for i in invitations)
    body = next(iter(receiver.accepted.values()))["body"]
    assert created.portal_url in body and created.dial_in_code in body


async def test_roster_down_books_with_meeting_pending_and_the_room_is_made_when_it_returns(
        system_factory, receiver, coordinator, service_token):
    system = await system_factory(["identity", "booking"],
                                  overrides={"booking": {"cosmic_link_url": receiver.url, **FAST_OUTBOX,
                                                         "call_timeout_seconds": 1.0}})
    booking = system.stub("booking")
    request = create_request(key="while-roster-down", parties=[party("Hemtjänst Väst"),
                                                               party("Avd 3", channel=pb.CHANNEL_PHONE,
                                                                     address="036-100 00")])
    pending = (await booking.CreateBooking(request, metadata=coordinator)).booking
    assert pending.meeting_pending and not pending.meeting_id and pending.status == pb.BOOKING_STATUS_BOOKED
    invs = await _invitations(booking, pending.booking_id, coordinator)
    assert {i.state for i in invs} == {pb.INVITATION_STATE_INVITED}  # they wait for the room's details
    assert not receiver.accepted
    assert not (await booking.ListPhoneTasks(pb.ListPhoneTasksRequest(), metadata=coordinator)).tasks
    retried = (await booking.CreateBooking(request, metadata=coordinator)).booking
    assert retried.booking_id == pending.booking_id and retried.meeting_pending
    # A booking cancelled while its room is still pending: the room, once made, is cancelled too.
    doomed = (await booking.CreateBooking(create_request(), metadata=coordinator)).booking
    assert doomed.meeting_pending
    await booking.CancelBooking(pb.CancelBookingRequest(booking_id=doomed.booking_id), metadata=coordinator)

    await system.start_service("roster")

    async def room_made():
        b = (await booking.GetBooking(pb.GetBookingRequest(booking_id=pending.booking_id),
                                      metadata=coordinator)).booking
        return b if not b.meeting_pending else None

    done = await poll(room_made, 30, "the pending booking's room made")
    assert done.meeting_id and done.dial_in_code and done.portal_url
    meeting = (await system.stub("roster").GetMeeting(roster_pb2.GetMeetingRequest(meeting_id=done.meeting_id),
                                                      metadata=as_token(service_token("booking")))).meeting
    assert meeting.booking_id == done.booking_id
    message = (await poll(lambda: _first(receiver.accepted), 15, "the invitation received"))
    assert done.dial_in_code in message["body"]
    tasks = (await booking.ListPhoneTasks(pb.ListPhoneTasksRequest(), metadata=coordinator)).tasks
    assert len(tasks) == 1 and done.dial_in_code in tasks[0].instructions
    async def doomed_room():
        b = (await booking.GetBooking(pb.GetBookingRequest(booking_id=doomed.booking_id),
                                      metadata=coordinator)).booking
        return b if b.meeting_id and not b.meeting_pending else None

    doomed = await poll(doomed_room, 30, "the doomed booking's room made")
    state = (await system.stub("roster").GetMeeting(roster_pb2.GetMeetingRequest(meeting_id=doomed.meeting_id),
                                                    metadata=as_token(service_token("booking")))).meeting.state
    assert doomed.status == pb.BOOKING_STATUS_CANCELLED and state == roster_pb2.MEETING_STATE_CANCELLED
    # Still one booking and one room after another retry.
    again = (await booking.CreateBooking(request, metadata=coordinator)).booking
    assert (again.booking_id, again.meeting_id) == (done.booking_id, done.meeting_id)


async def _true(value):
    return value


async def _first(mapping):
    return next(iter(mapping.values()), None)
