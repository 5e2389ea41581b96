"""The calls booking makes (CreateMeeting, RescheduleMeeting, CancelMeeting), GetMeeting and
ResolveDialInCode, across identity and roster in-process on the real database."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest
from svpl.roster.v1 import roster_pb2

from devstack.samples import create_request, scheduled
from services.roster import codes
from tests.roster.helpers import md, reason


@pytest.fixture
async def system(system_factory):
    return await system_factory(["identity", "roster"])


async def test_create_meeting_is_idempotent_on_booking_id(system, service_token):
    roster, booking = system.stub("roster"), md(service_token("booking"))
    first = (await roster.CreateMeeting(create_request("b-1"), metadata=booking)).meeting
    again = (await roster.CreateMeeting(create_request("b-1", scheduled=scheduled()), metadata=booking)).meeting
    assert again.meeting_id == first.meeting_id and again.dial_in_code == first.dial_in_code
    assert first.state == roster_pb2.MEETING_STATE_SCHEDULED
    assert first.portal_url.endswith(f"/auth/rjl/login?meeting={first.meeting_id}")
    assert first.registered_count == 2  # the coordinator and the patient


async def test_concurrent_creates_for_one_booking_make_one_meeting(system, service_token):
    roster, booking = system.stub("roster"), md(service_token("booking"))
    replies = await asyncio.gather(*(roster.CreateMeeting(create_request("b-race"), metadata=booking)
                                     for _ in range(8)))
    assert len({r.meeting.meeting_id for r in replies}) == 1


async def test_dial_in_codes_are_unique_well_formed_and_resolve(system, service_token):
    roster, booking = system.stub("roster"), md(service_token("booking"))
    meetings = [(await roster.CreateMeeting(create_request(f"b-code-{i}"), metadata=booking)).meeting
                for i in range(20)]
    dial_codes = [m.dial_in_code for m in meetings]
    assert len(set(dial_codes)) == 20
    assert all(codes.well_formed(c) and len(c) == 10 for c in dial_codes)
    gateway = md(service_token("gateway"))
    found = await roster.ResolveDialInCode(roster_pb2.ResolveDialInCodeRequest(dial_in_code=dial_codes[3]),
                                           metadata=gateway)
    assert found.meeting.meeting_id == meetings[3].meeting_id
    typo = dial_codes[3][:-2] + str((int(dial_codes[3][-2]) + 1) % 10) + dial_codes[3][-1]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await roster.ResolveDialInCode(roster_pb2.ResolveDialInCodeRequest(dial_in_code=typo), metadata=gateway)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_create_meeting_rejects_bad_input_and_changes_nothing(system, service_token):
    roster, booking = system.stub("roster"), md(service_token("booking"))
    bad = [
        (create_request("b-bad-1", coordinator_hsa_id="not-an-hsa-id"), "coordinator_hsa_id"),
        (create_request("b-bad-2", patient="191212121213"), "patient.id"),
        (create_request("b-bad-3", scheduled=scheduled(length=-dt.timedelta(hours=2))), "scheduled.end"),
    ]
    for request, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await roster.CreateMeeting(request, metadata=booking)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.value.details()
    # Nothing was stored: a later valid create for the same booking succeeds.
    ok = await roster.CreateMeeting(create_request("b-bad-1"), metadata=booking)
    assert ok.meeting.state == roster_pb2.MEETING_STATE_SCHEDULED


async def test_only_booking_may_create_reschedule_or_cancel(system, service_token, person_token):
    roster = system.stub("roster")
    for token in (person_token("coordinator"), service_token("gateway")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await roster.CreateMeeting(create_request("b-who"), metadata=md(token))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await roster.CreateMeeting(create_request("b-who"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_reschedule_then_cancel_is_final(system, service_token, person_token):
    roster, booking = system.stub("roster"), md(service_token("booking"))
    m = (await roster.CreateMeeting(create_request("b-resched"), metadata=booking)).meeting
    new_time = scheduled(start_in=dt.timedelta(days=2))
    moved = await roster.RescheduleMeeting(
        roster_pb2.RescheduleMeetingRequest(meeting_id=m.meeting_id, scheduled=new_time), metadata=booking)
    assert moved.meeting.scheduled.start == new_time.start
    cancelled = await roster.CancelMeeting(roster_pb2.CancelMeetingRequest(meeting_id=m.meeting_id, reason="x"),
                                           metadata=booking)
    assert cancelled.meeting.state == roster_pb2.MEETING_STATE_CANCELLED
    again = await roster.CancelMeeting(roster_pb2.CancelMeetingRequest(meeting_id=m.meeting_id), metadata=booking)
    assert again.meeting.state == roster_pb2.MEETING_STATE_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await roster.RescheduleMeeting(
            roster_pb2.RescheduleMeetingRequest(meeting_id=m.meeting_id, scheduled=scheduled()), metadata=booking)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err.value) == "MEETING_CANCELLED"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await roster.OpenMeeting(roster_pb2.OpenMeetingRequest(meeting_id=m.meeting_id),
                                 metadata=md(person_token("coordinator")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_get_meeting_for_its_people_only(system, service_token, person_token):
    roster, booking = system.stub("roster"), md(service_token("booking"))
    m = (await roster.CreateMeeting(create_request("b-get"), metadata=booking)).meeting
    request = roster_pb2.GetMeetingRequest(meeting_id=m.meeting_id)
    for who in ("coordinator", "patient"):
        got = await roster.GetMeeting(request, metadata=md(person_token(who)))
        assert got.meeting.meeting_id == m.meeting_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await roster.GetMeeting(request, metadata=md(person_token("other_coordinator")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await roster.GetMeeting(roster_pb2.GetMeetingRequest(meeting_id="nope"), metadata=booking)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
