"""Done-when flows across identity, media and roster in-process on the real database:
who gets in, who is refused (and why), removal with no way back, and an end that is final."""

from __future__ import annotations

import grpc
from prometheus_client import REGISTRY
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2

from devstack.peers import Peer
from tests.polling import poll
from tests.roster.conftest import MEDIA_INSTANCE
from tests.roster.helpers import reason

DENIED, PRECONDITION = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION


def admissions(outcome: str) -> float:
    return REGISTRY.get_sample_value("svpl_roster_admissions_total", {"outcome": outcome}) or 0.0


async def test_unregistered_identity_is_refused(world):
    m = await world.live()
    refused_before = admissions("ADMIT_REFUSAL_NOT_REGISTERED")
    err = await world.refused(world.admit(m.meeting_id, "region_staff"), DENIED)
    assert reason(err) == "ADMIT_REFUSAL_NOT_REGISTERED"
    assert "registrerad" in err.details()  # the portal shows the Swedish text as it is
    # A citizen with a valid login but not on the list, too.
    err = await world.refused(world.admit(m.meeting_id, "next_of_kin"), DENIED)
    assert reason(err) == "ADMIT_REFUSAL_NOT_REGISTERED"
    assert admissions("ADMIT_REFUSAL_NOT_REGISTERED") == refused_before + 2  # counted for the dashboards


async def test_next_of_kin_only_with_1177(world):
    m = await world.live()
    nok = await world.register_next_of_kin(m.meeting_id)
    assert list(nok.allowed_methods) == [common_pb2.LOGIN_METHOD_E_SERVICES_1177]
    err = await world.refused(world.admit(m.meeting_id, "next_of_kin", method="bankid"), DENIED)
    assert reason(err) == "ADMIT_REFUSAL_WRONG_LOGIN_METHOD" and "1177" in err.details()
    admitted = await world.admit(m.meeting_id, "next_of_kin")  # logged in with 1177
    assert admitted.participant_id == nok.participant_id and admitted.join_token
    assert admitted.media_instance == MEDIA_INSTANCE and admitted.media_address
    # Registering a next of kin for BankID is bad input.
    err = await world.refused(world.register_next_of_kin(m.meeting_id, "200001012384",
                                                         methods=[common_pb2.LOGIN_METHOD_BANKID]),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert "allowed_methods" in err.details()
    err = await world.refused(world.register(m.meeting_id, "N", roster_pb2.PARTICIPANT_ROLE_NEXT_OF_KIN,
                                             common_pb2.ID_KIND_HSA_ID, "SE2321000057-9001"),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert "id_kind" in err.details()


async def test_join_token_is_bound_to_meeting_participant_and_instance(world):
    m = await world.live()
    admitted = await world.admit(m.meeting_id, "patient")
    verified = await world.system.stub("identity").VerifyToken(
        identity_pb2.VerifyTokenRequest(token=admitted.join_token),
        metadata=world.media_md)
    assert (verified.meeting_id, verified.participant_id, verified.media_instance) == (
        m.meeting_id, admitted.participant_id, MEDIA_INSTANCE)
    assert admitted.expires_at.seconds - verified.expires_at.seconds == 0


async def test_only_the_coordinator_gets_in_before_the_start(world):
    m = await world.meeting()
    err = await world.refused(world.admit(m.meeting_id, "coordinator"), PRECONDITION)
    assert reason(err) == "ADMIT_REFUSAL_NOT_STARTED"
    await world.roster.OpenMeeting(roster_pb2.OpenMeetingRequest(meeting_id=m.meeting_id),
                                   metadata=world.who("coordinator"))
    assert (await world.admit(m.meeting_id, "coordinator")).join_token
    err = await world.refused(world.admit(m.meeting_id, "patient"), PRECONDITION)
    assert reason(err) == "ADMIT_REFUSAL_NOT_STARTED"


async def test_only_the_meetings_coordinators_lead_it(world):
    m = await world.meeting()
    request = roster_pb2.OpenMeetingRequest(meeting_id=m.meeting_id)
    err = await world.refused(world.roster.OpenMeeting(request, metadata=world.who("other_coordinator")), DENIED)
    assert reason(err) == "NOT_MEETING_COORDINATOR"
    await world.refused(world.roster.OpenMeeting(request, metadata=world.who("patient")), DENIED)
    # A delegated coordinator (registered region staff, without the coordinator role) may lead it.
    await world.register(m.meeting_id, "Rita Region", roster_pb2.PARTICIPANT_ROLE_REGION_STAFF,
                         common_pb2.ID_KIND_HSA_ID, "SE2321000057-2001")
    await world.refused(world.roster.OpenMeeting(request, metadata=world.who("region_staff")), DENIED)
    await world.roster.DelegateCoordinator(
        roster_pb2.DelegateCoordinatorRequest(meeting_id=m.meeting_id, hsa_id="SE2321000057-2001"),
        metadata=world.who("coordinator"))
    opened = await world.roster.OpenMeeting(request, metadata=world.who("region_staff"))
    assert opened.meeting.state == roster_pb2.MEETING_STATE_OPEN and opened.meeting.media_instance == MEDIA_INSTANCE
    assert opened.meeting.media_address == world.system.address("media")  # the room's own instance
    assert list(opened.meeting.delegated_coordinator_hsa_ids) == ["SE2321000057-2001"]
    started = await world.roster.StartMeeting(roster_pb2.StartMeetingRequest(meeting_id=m.meeting_id),
                                              metadata=world.who("region_staff"))
    assert started.meeting.state == roster_pb2.MEETING_STATE_LIVE
    # A delegate may not delegate further; only the meeting's own coordinator does.
    await world.refused(world.roster.DelegateCoordinator(
        roster_pb2.DelegateCoordinatorRequest(meeting_id=m.meeting_id, hsa_id="SE2321000057-1001"),
        metadata=world.who("region_staff")), DENIED)
    room = await world.media.GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=m.meeting_id),
                                          metadata=world.roster_md)
    assert room.status == media_pb2.ROOM_STATUS_OPEN


async def test_removed_participant_cannot_come_back_by_any_path(world):
    m = await world.live()
    admitted = await world.admit(m.meeting_id, "patient")
    peer = Peer(publish=False, slots=1)
    try:
        await world.negotiate(peer, admitted, m.meeting_id)
        await poll(peer.connected.is_set, 15, what="the patient's peer to connect")
        listing = roster_pb2.GetConnectedListRequest(meeting_id=m.meeting_id)

        async def connected_names():
            return [p.full_name for p in (await world.roster.GetConnectedList(listing, metadata=world.who("coordinator"))).people]

        await poll(connected_names, 10, "media's connect report", until=lambda names: names == ["Tolvan Tolvansson"])
        await world.roster.RemoveParticipant(
            roster_pb2.RemoveParticipantRequest(meeting_id=m.meeting_id, participant_id=admitted.participant_id,
                                                reason="fel person"), metadata=world.who("coordinator"))
        await poll(peer.closed.is_set, 10, what="media to disconnect the removed participant")
        assert await connected_names() == []
    finally:
        await peer.close()
    # The old join token has not expired, but it no longer opens anything.
    again = Peer(publish=False, slots=1)
    try:
        err = await world.refused(world.negotiate(again, admitted, m.meeting_id), grpc.StatusCode.UNAUTHENTICATED)
        assert "revoked" in err.details()
    finally:
        await again.close()
    err = await world.refused(world.admit(m.meeting_id, "patient"), DENIED)
    assert reason(err) == "ADMIT_REFUSAL_REMOVED"
    report = roster_pb2.ReportConnectionRequest(meeting_id=m.meeting_id, connection_id="c-new",
                                                kind=roster_pb2.CONNECTION_KIND_WEBRTC,
                                                participant_id=admitted.participant_id, connected=True,
                                                media_instance=MEDIA_INSTANCE)
    assert not (await world.roster.ReportConnection(report, metadata=world.media_md)).allowed
    # Nor by registering them again.
    err = await world.refused(world.register(m.meeting_id, "Tolvan", roster_pb2.PARTICIPANT_ROLE_EXTERNAL,
                                             common_pb2.ID_KIND_PERSONNUMMER, "191212121212"), PRECONDITION)
    assert reason(err) == "PARTICIPANT_REMOVED"


async def test_after_end_nobody_stays_or_gets_back_in(world):
    m = await world.live()
    nok = await world.register_next_of_kin(m.meeting_id)
    patient = await world.admit(m.meeting_id, "patient")
    kin = await world.admit(m.meeting_id, "next_of_kin")
    peer = Peer(publish=False, slots=1)
    try:
        await world.negotiate(peer, patient, m.meeting_id)
        await poll(peer.connected.is_set, 15, what="the patient's peer to connect")
        ended = await world.roster.EndMeeting(roster_pb2.EndMeetingRequest(meeting_id=m.meeting_id),
                                              metadata=world.who("coordinator"))
        assert ended.meeting.state == roster_pb2.MEETING_STATE_ENDED and ended.meeting.connected_count == 0
        await poll(peer.closed.is_set, 10, what="the room to close")
    finally:
        await peer.close()
    for who in ("patient", "next_of_kin", "coordinator"):
        err = await world.refused(world.admit(m.meeting_id, who), PRECONDITION)
        assert reason(err) == "ADMIT_REFUSAL_FINISHED"
    # The next of kin's unused, unexpired join token opens nothing.
    late = Peer(publish=False, slots=1)
    try:
        await world.refused(world.negotiate(late, kin, m.meeting_id), grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await late.close()
    room = await world.media.GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=m.meeting_id),
                                          metadata=world.roster_md)
    assert room.status == media_pb2.ROOM_STATUS_CLOSED
    for pid in (patient.participant_id, nok.participant_id, ""):
        report = roster_pb2.ReportConnectionRequest(meeting_id=m.meeting_id, connection_id=f"late-{pid}",
                                                    participant_id=pid, connected=True,
                                                    kind=roster_pb2.CONNECTION_KIND_PHONE if not pid else
                                                    roster_pb2.CONNECTION_KIND_WEBRTC, media_instance=MEDIA_INSTANCE)
        assert not (await world.roster.ReportConnection(report, metadata=world.media_md)).allowed
    # And no RPC reopens it.
    for call in (world.roster.OpenMeeting(roster_pb2.OpenMeetingRequest(meeting_id=m.meeting_id),
                                          metadata=world.who("coordinator")),
                 world.roster.StartMeeting(roster_pb2.StartMeetingRequest(meeting_id=m.meeting_id),
                                           metadata=world.who("coordinator"))):
        await world.refused(call, PRECONDITION)
    assert (await world.state(m.meeting_id)).state == roster_pb2.MEETING_STATE_ENDED

