"""Who may do what, reschedule rules, listings, confirmations, access records, options."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from svpl.booking.v1 import booking_pb2 as pb
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2

from devstack.harness import as_token
from services.booking.options import OptionsError, load_options
from services.runtime import mongo as runtime_mongo
from tests.booking.conftest import (
    COORDINATOR,
    PATIENT,
    UNIT,
    create_request,
    in_days,
    party,
    ts,
)
from tests.polling import poll


async def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code()


async def test_coordinators_act_only_on_their_own_bookings_unit_staff_may_read(
        booking_system, coordinator, person_token):
    booking = booking_system.stub("booking")
    created = (await booking.CreateBooking(create_request(), metadata=coordinator)).booking
    other = as_token(person_token("other_coordinator", unit="SE2321000057-U999"))
    get = pb.GetBookingRequest(booking_id=created.booking_id)
    assert await _code(booking.GetBooking(get, metadata=other)) == grpc.StatusCode.PERMISSION_DENIED
    assert await _code(booking.CancelBooking(pb.CancelBookingRequest(booking_id=created.booking_id),
                                             metadata=other)) == grpc.StatusCode.PERMISSION_DENIED
    assert await _code(booking.RescheduleBooking(
        pb.RescheduleBookingRequest(booking_id=created.booking_id, start=ts(in_days(5))), metadata=other)
    ) == grpc.StatusCode.PERMISSION_DENIED
    # Booking on behalf of another coordinator is refused.
    assert await _code(booking.CreateBooking(create_request(coordinator_hsa_id="SE2321000057-1002"),
                                             metadata=coordinator)) == grpc.StatusCode.PERMISSION_DENIED
    unit_staff = as_token(person_token("region_staff", unit=UNIT))
    assert (await booking.GetBooking(get, metadata=unit_staff)).booking.booking_id == created.booking_id
    elsewhere = as_token(person_token("region_staff", unit="SE2321000057-U999"))
    assert await _code(booking.GetBooking(get, metadata=elsewhere)) == grpc.StatusCode.PERMISSION_DENIED
    # Staff without the coordinator role can't book at all (the ACCESS rule).
    assert await _code(booking.CreateBooking(create_request(), metadata=unit_staff)) == grpc.StatusCode.PERMISSION_DENIED


async def test_bad_input_is_refused_with_the_field_named(booking_system, coordinator):
    booking = booking_system.stub("booking")
    cases = {
        "patient_personnummer": create_request(patient_personnummer="191212121213"),
        "booking_unit_hsa_id": create_request(booking_unit_hsa_id="XX123"),
        "start": create_request(start=in_days(-1)),
        "duration_minutes": create_request(duration_minutes=0),
        "care_service": create_request(care_service="Tandvård"),
        "contact_type": create_request(contact_type="Brevduva"),
        "parties[0].channel": create_request(parties=[party("X", channel=pb.CHANNEL_UNSPECIFIED)]),
        "parties[0].address": create_request(parties=[party("X", address=" ")]),
    }
    for field, request in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await booking.CreateBooking(request, metadata=coordinator)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert err.value.details().startswith(field), (field, err.value.details())
    listed = await booking.ListBookings(pb.ListBookingsRequest(coordinator_hsa_id=COORDINATOR), metadata=coordinator)
    assert not listed.bookings


async def test_reschedule_moves_the_meeting_and_reinvites_but_a_past_booking_cannot_move(
        booking_system, coordinator, receiver, service_token, mongo):
    booking, roster = booking_system.stub("booking"), booking_system.stub("roster")
    created = (await booking.CreateBooking(create_request(parties=[party("Hemtjänst Syd")]),
                                           metadata=coordinator)).booking
    new_start = in_days(6)
    moved = (await booking.RescheduleBooking(pb.RescheduleBookingRequest(
        booking_id=created.booking_id, start=ts(new_start), duration_minutes=45), metadata=coordinator)).booking
    assert moved.start.ToDatetime(tzinfo=dt.timezone.utc) == new_start and moved.duration_minutes == 45
    meeting = (await roster.GetMeeting(roster_pb2.GetMeetingRequest(meeting_id=created.meeting_id),
                                       metadata=as_token(service_token("booking")))).meeting
    assert meeting.scheduled.start.ToDatetime(tzinfo=dt.timezone.utc) == new_start
    assert meeting.scheduled.end.ToDatetime(tzinfo=dt.timezone.utc) == new_start + dt.timedelta(minutes=45)
    messages = await poll(lambda: _at_least(receiver.accepted, 2), 15, "the invitation and the new time received")
    assert sorted(m["subject"].split(":")[0] for m in messages) == ["Kallelse", "Ändrad tid"]

    # A booking whose time has passed can't be moved (its start is put in the past directly in the database).
    client = runtime_mongo.connect(mongo.uri)
    try:
        await client[f"{booking_system.prefix}_booking"].bookings.update_one(
            {"_id": created.booking_id}, {"$set": {"start": in_days(-0.01)}})
    finally:
        await client.close()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await booking.RescheduleBooking(pb.RescheduleBookingRequest(booking_id=created.booking_id,
                                                                    start=ts(in_days(7))), metadata=coordinator)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "past" in err.value.details()
    # ... but after the visit its final status can be set.
    done = (await booking.UpdateBookingStatus(pb.UpdateBookingStatusRequest(
        booking_id=created.booking_id, status=pb.BOOKING_STATUS_FULFILLED), metadata=coordinator)).booking
    assert done.status == pb.BOOKING_STATUS_FULFILLED


async def test_parties_confirm_with_names_and_the_coordinator_sees_each_state(
        booking_system, coordinator, person_token):
    booking = booking_system.stub("booking")
    created = (await booking.CreateBooking(create_request(parties=[party("Hemtjänst Norr"), party("Avd 5")]),
                                           metadata=coordinator)).booking

    async def delivered():
        invs = (await booking.ListInvitations(pb.ListInvitationsRequest(booking_id=created.booking_id),
                                              metadata=coordinator)).invitations
        return invs if all(i.state == pb.INVITATION_STATE_DELIVERED for i in invs) else None

    invs = await poll(delivered, 15, "every invitation delivered")
    municipality = as_token(person_token("municipality_staff"))
    confirmed = (await booking.ConfirmInvitation(pb.ConfirmInvitationRequest(
        invitation_id=invs[0].invitation_id, attendee_names=["Mona Kommun", " Karl Karlsson "]),
        metadata=municipality)).invitation
    assert confirmed.state == pb.INVITATION_STATE_CONFIRMED
    assert list(confirmed.attendee_names) == ["Mona Kommun", "Karl Karlsson"]
    states = {i.party.name: (i.state, list(i.attendee_names)) for i in (await booking.ListInvitations(
        pb.ListInvitationsRequest(booking_id=created.booking_id), metadata=coordinator)).invitations}
    assert states == {"Hemtjänst Norr": (pb.INVITATION_STATE_CONFIRMED, ["Mona Kommun", "Karl Karlsson"]),
                      "Avd 5": (pb.INVITATION_STATE_DELIVERED, [])}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await booking.ConfirmInvitation(pb.ConfirmInvitationRequest(invitation_id=invs[1].invitation_id),
                                        metadata=municipality)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    added = (await booking.InviteParties(pb.InvitePartiesRequest(
        booking_id=created.booking_id, parties=[party("Patienten", kind=pb.PARTY_KIND_PATIENT)]),
        metadata=coordinator)).invitations
    # Queued with the booking's change; the dispatcher may already have delivered it by the time the
    # answer is read back.
    assert len(added) == 1 and added[0].state in (pb.INVITATION_STATE_INVITED, pb.INVITATION_STATE_DELIVERED)
    assert added[0].party.name == "Patienten"

    async def added_delivered():
        invs = (await booking.ListInvitations(pb.ListInvitationsRequest(booking_id=created.booking_id),
                                              metadata=coordinator)).invitations
        return [i for i in invs if i.invitation_id == added[0].invitation_id
                and i.state == pb.INVITATION_STATE_DELIVERED] or None

    await poll(added_delivered, 15, "the added party's invitation delivered")


async def test_list_paginates_filters_by_time_and_finds_by_dial_in_code(booking_system, coordinator):
    booking = booking_system.stub("booking")
    starts = [in_days(d) for d in (1, 2, 3, 4, 5)]
    made = [(await booking.CreateBooking(create_request(start=s, care_service="Mottagningsbesök",
                                                        contact_type="Besök"), metadata=coordinator)).booking
            for s in starts]
    seen, token, pages = [], "", 0
    while True:
        answer = await booking.ListBookings(pb.ListBookingsRequest(
            booking_unit_hsa_id=UNIT, page=common_pb2.PageRequest(page_size=2, page_token=token)),
            metadata=coordinator)
        seen += [b.booking_id for b in answer.bookings]
        pages += 1
        token = answer.page.next_page_token
        if not token:
            break
    assert seen == [b.booking_id for b in made] and pages == 3
    window = await booking.ListBookings(pb.ListBookingsRequest(
        coordinator_hsa_id=COORDINATOR,
        period=common_pb2.TimeRange(start=ts(starts[1]), end=ts(starts[3]))), metadata=coordinator)
    assert [b.booking_id for b in window.bookings] == [made[1].booking_id, made[2].booking_id]
    bad = pb.ListBookingsRequest(booking_unit_hsa_id=UNIT, page=common_pb2.PageRequest(page_token="garbage!"))
    assert await _code(booking.ListBookings(bad, metadata=coordinator)) == grpc.StatusCode.INVALID_ARGUMENT

    video = (await booking.CreateBooking(create_request(), metadata=coordinator)).booking
    found = (await booking.FindBookingByDialInCode(pb.FindBookingByDialInCodeRequest(
        dial_in_code=video.dial_in_code), metadata=coordinator)).booking
    assert found.booking_id == video.booking_id
    missing = pb.FindBookingByDialInCodeRequest(dial_in_code="000000000")
    assert await _code(booking.FindBookingByDialInCode(missing, metadata=coordinator)) == grpc.StatusCode.NOT_FOUND


async def test_every_read_and_write_of_a_booking_leaves_an_access_record(
        booking_system, coordinator, service_token, mongo):
    booking = booking_system.stub("booking")
    created = (await booking.CreateBooking(create_request(), metadata=coordinator)).booking
    await booking.GetBooking(pb.GetBookingRequest(booking_id=created.booking_id), metadata=coordinator)
    rebook = (await booking.RequestRebook(pb.RequestRebookRequest(
        meeting_id=created.meeting_id, reason="dålig uppkoppling hos kommunen", ticket_id="T-1"),
        metadata=as_token(service_token("support")))).request
    assert rebook.request_id
    await booking.CancelBooking(pb.CancelBookingRequest(booking_id=created.booking_id), metadata=coordinator)
    client = runtime_mongo.connect(mongo.uri)
    try:
        records = await client[f"{booking_system.prefix}_audit"].access_records.find(
            {"resource": f"booking:{created.booking_id}"}).to_list()
    finally:
        await client.close()
    by_action = {r["action"]: r for r in records}
    assert {"booking.create", "booking.read", "booking.rebook_request", "booking.cancel"} <= set(by_action)
    assert all(r["patient"] == PATIENT and r["care_unit"] == UNIT for r in records)
    assert by_action["booking.read"]["actor"] == COORDINATOR
    assert by_action["booking.rebook_request"]["actor"] == "service:support"


async def test_a_rebook_request_made_for_a_reporter_names_the_reporter(booking_system, coordinator, service_token,
                                                                        mongo):
    """Support asks for the person who reported (issue #14): the request and its access record name them,
    via support."""
    booking = booking_system.stub("booking")
    created = (await booking.CreateBooking(create_request(), metadata=coordinator)).booking
    support = as_token(service_token("support"))
    reporter = common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id="198112289874")
    await booking.RequestRebook(pb.RequestRebookRequest(
        meeting_id=created.meeting_id, reason="ingen bild", ticket_id="T-R", on_behalf_of=reporter), metadata=support)
    bad = pb.RequestRebookRequest(meeting_id=created.meeting_id, reason="x", ticket_id="T-X",
                                  on_behalf_of=common_pb2.PersonRef(id="1" * 101))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await booking.RequestRebook(bad, metadata=support)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("on_behalf_of.id:")
    client = runtime_mongo.connect(mongo.uri)
    try:
        record = await client[f"{booking_system.prefix}_audit"].access_records.find_one(
            {"resource": f"booking:{created.booking_id}", "action": "booking.rebook_request"})
        stored = await client[f"{booking_system.prefix}_booking"].bookings.find_one({"_id": created.booking_id})
    finally:
        await client.close()
    assert (record["actor"], record["via"]) == ("198112289874", "service:support")
    assert [(r["requested_by"], r["requested_via"]) for r in stored["rebook_requests"]] == [
        ("198112289874", "service:support")]


async def test_options_come_from_configuration_and_email_is_refused_even_when_configured(
        system_factory, coordinator, person_token, tmp_path):
    options = tmp_path / "region.yaml"
    options.write_text(
        "region: test\ncare_services: [SIP-möte, Besök]\ncontact_types: [Video team, Telefon]\n"
        "video_meeting: {care_service: SIP-möte, contact_type: Video team}\n"
        "party_channels: [secure_messaging, phone, email]\n", encoding="utf-8")
    system = await system_factory(["identity", "roster", "booking"],
                                  overrides={"booking": {"booking_options_file": str(options)}})
    booking = system.stub("booking")
    answer = await booking.ListBookingOptions(pb.ListBookingOptionsRequest(),
                                              metadata=as_token(person_token("patient")))
    assert list(answer.care_services) == ["SIP-möte", "Besök"]
    assert (answer.video_care_service, answer.video_contact_type) == ("SIP-möte", "Video team")
    video = (await booking.CreateBooking(create_request(care_service="SIP-möte", contact_type="Video team"),
                                         metadata=coordinator)).booking
    assert video.meeting_id
    email = create_request(care_service="SIP-möte", contact_type="Telefon",
                           parties=[party("FK", channel=pb.CHANNEL_EMAIL, address="a@fk.se")])
    assert await _code(booking.CreateBooking(email, metadata=coordinator)) == grpc.StatusCode.INVALID_ARGUMENT


def test_an_invalid_options_file_stops_the_service_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("region: x\ncare_services: [A]\ncontact_types: [B]\n"
                   "video_meeting: {care_service: A, contact_type: Nope}\n", encoding="utf-8")
    with pytest.raises(OptionsError, match="video_meeting.contact_type"):
        load_options(bad)
    with pytest.raises(OptionsError, match="does not exist"):
        load_options(tmp_path / "missing.yaml")


async def _at_least(mapping, n):
    return list(mapping.values()) if len(mapping) >= n else None


async def test_a_repeated_rebook_request_for_one_ticket_is_kept_once(booking_system, coordinator, service_token):
    booking = booking_system.stub("booking")
    created = (await booking.CreateBooking(create_request(), metadata=coordinator)).booking
    support = as_token(service_token("support"))
    ask = pb.RequestRebookRequest(meeting_id=created.meeting_id, reason="bruten anslutning", ticket_id="T-9")
    first = (await booking.RequestRebook(ask, metadata=support)).request
    again = (await booking.RequestRebook(ask, metadata=support)).request
    assert again.request_id == first.request_id
    other = (await booking.RequestRebook(pb.RequestRebookRequest(
        meeting_id=created.meeting_id, reason="ny felanmälan", ticket_id="T-10"), metadata=support)).request
    assert other.request_id != first.request_id
    stored = (await booking.GetBooking(pb.GetBookingRequest(booking_id=created.booking_id),
                                       metadata=coordinator)).booking
    assert [r.ticket_id for r in stored.rebook_requests] == ["T-9", "T-10"]
