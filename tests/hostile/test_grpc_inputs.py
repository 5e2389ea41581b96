"""Hostile values straight at the services' gRPC contracts (past the gateway's validation):
`$`-prefixed and operator-looking strings, arbitrary text, crafted page tokens and out-of-range
timestamps in key read RPCs. The services build their queries from typed values, so such a string
finds only what equals it: never another record, never an INTERNAL error, and nothing stored changes."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from svpl.booking.v1 import booking_pb2
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2
from svpl.roster.v1 import roster_pb2
from svpl.support.v1 import support_pb2

from devstack.harness import as_token
from tests.gateway.conftest import COORDINATOR
from tests.gateway.flow import book_video_meeting
from tests.hostile.conftest import changed, settled

REFUSED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
           grpc.StatusCode.FAILED_PRECONDITION}
OPERATOR_TEXT = ["$gt", "$where", "$ne", "$regex", '{"$gt": ""}', '{"$where": "sleep(1000)"}', ".*", "^", "$",
                 "sleep(1000)", "\x00", "a\x00b", "１２３４５６", "²³⁴⁵⁶⁷⁸⁹", "9" * 40, "-1", "0" * 12]
hostile_text = st.one_of(st.sampled_from(OPERATOR_TEXT), st.text(max_size=60), st.text(max_size=30).map("$".__add__))
json_values = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | hostile_text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
                           max_leaves=6)


def as_page_token(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


page_tokens = st.one_of(
    hostile_text,
    json_values.map(as_page_token),
    # The services' own token shapes, with hostile values in them.
    st.fixed_dictionaries({"s": json_values, "i": json_values}).map(as_page_token),
    st.fixed_dictionaries({"t": json_values, "i": json_values}).map(as_page_token),
    st.fixed_dictionaries({"o": json_values, "q": json_values}).map(as_page_token),
    st.builds(lambda o: as_page_token({"s": "2030-01-01T00:00:00+00:00", "i": o}), json_values),
    st.integers(min_value=0, max_value=10**30).map(str),
)
timestamps = st.builds(lambda s, n: (s, n), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                       st.integers(min_value=-(2**31), max_value=2**31 - 1))


def time_range(start, end) -> common_pb2.TimeRange:
    period = common_pb2.TimeRange()
    for field, value in (("start", start), ("end", end)):
        if value is not None:
            getattr(period, field).seconds, getattr(period, field).nanos = value
    return period


async def outcome(call) -> tuple[grpc.StatusCode, object]:
    try:
        return grpc.StatusCode.OK, await call
    except grpc.aio.AioRpcError as err:
        assert err.code() in REFUSED, f"{err.code().name}: {err.details()}"
        return err.code(), None


@pytest.fixture
async def seeded(gateway, person_token, service_token):
    """A booked meeting (with its dial-in code) and a support ticket, and the callers who may read them."""
    app, system, new_browser = gateway
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    booking = await book_video_meeting(coordinator)
    meeting = (await coordinator.get(f"/api/v1/meetings/{booking['meeting_id']}")).json()["meeting"]
    report = await coordinator.post("/api/v1/support/reports", json={
        "problem": "PROBLEM_KIND_USAGE", "description": "Hör inget ljud", "meeting_id": booking["meeting_id"]})
    assert report.status_code == 200, report.text
    people = {"coordinator": as_token(person_token("coordinator")), "support": as_token(person_token("support_desk")),
              "gateway": as_token(service_token("gateway")), "booking": as_token(service_token("booking"))}
    before = await settled(system, frozenset({"audit.access_records"}))
    yield system, booking, meeting, people
    assert not changed(before, await settled(system, frozenset({"audit.access_records"})))


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(text=hostile_text, token=page_tokens)
@example(text="", token="")
@example(text=COORDINATOR, token="")
async def test_hostile_strings_find_nothing_else_and_are_never_internal(seeded, text, token):
    system, booking, meeting, who = seeded
    bookings, roster, support = system.stub("booking"), system.stub("roster"), system.stub("support")
    code, found = await outcome(bookings.GetBooking(booking_pb2.GetBookingRequest(booking_id=text),
                                                    metadata=who["coordinator"]))
    assert code != grpc.StatusCode.OK or found.booking.booking_id == text
    code, found = await outcome(bookings.ListBookings(booking_pb2.ListBookingsRequest(
        coordinator_hsa_id=text, page=common_pb2.PageRequest(page_token=token)), metadata=who["coordinator"]))
    assert code != grpc.StatusCode.OK or all(b.coordinator_hsa_id == text for b in found.bookings)
    code, found = await outcome(roster.GetMeeting(roster_pb2.GetMeetingRequest(meeting_id=text),
                                                  metadata=who["coordinator"]))
    assert code != grpc.StatusCode.OK or found.meeting.meeting_id == text
    code, found = await outcome(roster.ResolveDialInCode(roster_pb2.ResolveDialInCodeRequest(dial_in_code=text),
                                                         metadata=who["gateway"]))
    assert code != grpc.StatusCode.OK or found.meeting.dial_in_code == meeting["dial_in_code"]
    await outcome(roster.ListMyMeetings(roster_pb2.ListMyMeetingsRequest(page=common_pb2.PageRequest(page_token=token)),
                                        metadata=who["coordinator"]))
    code, found = await outcome(support.ListTickets(support_pb2.ListTicketsRequest(
        queue_id=text, page=common_pb2.PageRequest(page_token=token)), metadata=who["support"]))
    assert code != grpc.StatusCode.OK or not text or all(t.routing.queue.queue_id == text for t in found.tickets)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(start=st.none() | timestamps, end=st.none() | timestamps, age=st.integers(min_value=-(2**63), max_value=2**63 - 1))
async def test_out_of_range_times_are_invalid_argument_not_internal(seeded, start, end, age):
    system, _, _, who = seeded
    period = time_range(start, end)
    await outcome(system.stub("booking").ListBookings(booking_pb2.ListBookingsRequest(
        coordinator_hsa_id=COORDINATOR, period=period), metadata=who["coordinator"]))
    await outcome(system.stub("roster").ListMyMeetings(roster_pb2.ListMyMeetingsRequest(period=period),
                                                       metadata=who["coordinator"]))
    await outcome(system.stub("support").ListTickets(support_pb2.ListTicketsRequest(min_age_seconds=age),
                                                     metadata=who["support"]))


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(text=hostile_text, token=page_tokens)
@example(text="Vera", token=as_page_token({"o": float("inf"), "q": "x"}))
@example(text="Vera", token=as_page_token({"o": 10**30, "q": "x"}))
async def test_directory_search_takes_operator_text_literally(seeded, text, token):
    system, _, _, who = seeded
    code, found = await outcome(system.stub("identity").SearchDirectory(identity_pb2.SearchDirectoryRequest(
        name=text, page=common_pb2.PageRequest(page_token=token)), metadata=who["coordinator"]))
    if code == grpc.StatusCode.OK and text.strip() in ("$gt", "$ne", ".*", "^", "$where"):
        assert not found.people, f"{text!r} matched people"
