"""Booking through its contract, with real identity and roster in-process on the real database."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from svpl.booking.v1 import booking_pb2 as pb
from svpl.roster.v1 import roster_pb2

from devstack.harness import as_token
from tests.booking.conftest import (
    COORDINATOR,
    SIP,
    VIDEO_TEAM,
    create_request,
    in_days,
    party,
    ts,
)
from tests.polling import poll


async def test_only_the_sip_video_combination_creates_a_room(booking_system, coordinator, service_token):
    booking = booking_system.stub("booking")
    roster = booking_system.stub("roster")
    video = (await booking.CreateBooking(create_request(), metadata=coordinator)).booking
    assert video.meeting_id and video.dial_in_code and video.portal_url and not video.meeting_pending
    assert video.status == pb.BOOKING_STATUS_BOOKED
    meeting = (await roster.GetMeeting(roster_pb2.GetMeetingRequest(meeting_id=video.meeting_id),
                                       metadata=as_token(service_token("booking")))).meeting
    assert meeting.booking_id == video.booking_id and meeting.state == roster_pb2.MEETING_STATE_SCHEDULED
    assert meeting.dial_in_code == video.dial_in_code

    for care_service, contact_type in [(SIP, "Distanskontakt video"), ("Mottagningsbesök", VIDEO_TEAM),
                                       ("Mottagningsbesök", "Besök")]:
        plain = (await booking.CreateBooking(create_request(care_service=care_service, contact_type=contact_type),
                                             metadata=coordinator)).booking
        assert plain.status == pb.BOOKING_STATUS_BOOKED
        assert not plain.meeting_id and not plain.dial_in_code and not plain.meeting_pending


async def test_retried_create_with_the_same_key_gives_one_booking_and_one_room(booking_system, coordinator):
    booking = booking_system.stub("booking")
    request = create_request(key="retry-key-1", parties=[party("Hemtjänst Norr")])
    first = (await booking.CreateBooking(request, metadata=coordinator)).booking
    again = [(await booking.CreateBooking(request, metadata=coordinator)).booking for _ in range(3)]
    assert {b.booking_id for b in again} == {first.booking_id}
    assert {b.meeting_id for b in again} == {first.meeting_id}
    listed = (await booking.ListBookings(pb.ListBookingsRequest(coordinator_hsa_id=COORDINATOR),
                                         metadata=coordinator)).bookings
    assert [b.booking_id for b in listed] == [first.booking_id]
    rooms = (await booking_system.stub("roster").ListMyMeetings(roster_pb2.ListMyMeetingsRequest(),
                                                                metadata=coordinator)).meetings
    assert [m.meeting_id for m in rooms if m.booking_id == first.booking_id] == [first.meeting_id]
    assert len((await booking.ListInvitations(pb.ListInvitationsRequest(booking_id=first.booking_id),
                                              metadata=coordinator)).invitations) == 1
    # Concurrent first attempts with one key: still one booking and one room.
    racing = create_request(key="race-key", parties=[party("Hemtjänst Mitt")])
    raced = await asyncio.gather(*(booking.CreateBooking(racing, metadata=coordinator) for _ in range(4)))
    assert len({r.booking.booking_id for r in raced}) == 1 and len({r.booking.meeting_id for r in raced}) == 1
    rooms = (await booking_system.stub("roster").ListMyMeetings(roster_pb2.ListMyMeetingsRequest(),
                                                                metadata=coordinator)).meetings
    assert len([m for m in rooms if m.booking_id == raced[0].booking.booking_id]) == 1
    # The same key with different content is refused, not silently answered with the old booking.
    changed = create_request(key="retry-key-1", duration_minutes=90)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await booking.CreateBooking(changed, metadata=coordinator)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "idempotency_key" in err.value.details()


async def test_email_is_refused_and_nothing_is_booked(booking_system, coordinator):
    booking = booking_system.stub("booking")
    request = create_request(parties=[party("Försäkringskassan", channel=pb.CHANNEL_EMAIL,
                                            kind=pb.PARTY_KIND_EXTERNAL_BODY, address="handlaggare@fk.se")])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await booking.CreateBooking(request, metadata=coordinator)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parties[0].channel" in err.value.details() and "e-mail" in err.value.details()
    listed = await booking.ListBookings(pb.ListBookingsRequest(coordinator_hsa_id=COORDINATOR), metadata=coordinator)
    assert not listed.bookings


async def test_party_without_secure_channel_gets_a_phone_task_and_no_message(booking_system, coordinator, receiver):
    booking = booking_system.stub("booking")
    request = create_request(parties=[party("Avdelning 12", channel=pb.CHANNEL_PHONE, kind=pb.PARTY_KIND_INPATIENT_WARD,
                                            address="036-32 10 00"), party("Hemtjänst Söder")])
    created = (await booking.CreateBooking(request, metadata=coordinator)).booking

    async def states():
        invs = (await booking.ListInvitations(pb.ListInvitationsRequest(booking_id=created.booking_id),
                                              metadata=coordinator)).invitations
        by_name = {i.party.name: i for i in invs}
        return by_name if by_name["Hemtjänst Söder"].state == pb.INVITATION_STATE_DELIVERED else None

    by_name = await poll(states, 15, "the invitation delivered")
    assert by_name["Avdelning 12"].state == pb.INVITATION_STATE_PHONE_TASK
    # Exactly one message was sent: to the secure-messaging party, none for the phone party.
    assert [m["recipient"] for m in receiver.accepted.values()] == ["cosmic:hemtjänst-söder"]
    tasks = (await booking.ListPhoneTasks(pb.ListPhoneTasksRequest(), metadata=coordinator)).tasks
    assert len(tasks) == 1 and tasks[0].party.name == "Avdelning 12" and tasks[0].booking_id == created.booking_id
    assert created.dial_in_code in tasks[0].instructions and created.portal_url in tasks[0].instructions
    done = (await booking.CompletePhoneTask(pb.CompletePhoneTaskRequest(task_id=tasks[0].task_id),
                                            metadata=coordinator)).task
    assert done.done
    assert not (await booking.ListPhoneTasks(pb.ListPhoneTasksRequest(), metadata=coordinator)).tasks


async def test_cancel_makes_the_meeting_unjoinable_and_notifies_parties(booking_system, coordinator, receiver,
                                                                          service_token):
    booking, roster = booking_system.stub("booking"), booking_system.stub("roster")
    created = (await booking.CreateBooking(create_request(parties=[party("Hemtjänst Öst")]),
                                           metadata=coordinator)).booking
    await poll(lambda: _received(receiver, 1), 15, "the invitation received")
    cancelled = (await booking.CancelBooking(pb.CancelBookingRequest(booking_id=created.booking_id,
                                                                     reason="patienten inlagd"),
                                             metadata=coordinator)).booking
    assert cancelled.status == pb.BOOKING_STATUS_CANCELLED
    meeting = (await roster.GetMeeting(roster_pb2.GetMeetingRequest(meeting_id=created.meeting_id),
                                       metadata=as_token(service_token("booking")))).meeting
    assert meeting.state == roster_pb2.MEETING_STATE_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await roster.OpenMeeting(roster_pb2.OpenMeetingRequest(meeting_id=created.meeting_id), metadata=coordinator)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    notices = await poll(lambda: _received(receiver, 2), 15, "the cancellation notice received")
    assert any("Inställt" in m["subject"] for m in notices)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await booking.RescheduleBooking(pb.RescheduleBookingRequest(booking_id=created.booking_id,
                                                                    start=ts(in_days(4))), metadata=coordinator)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def _received(receiver, n):
    return list(receiver.accepted.values()) if len(receiver.accepted) >= n else None
