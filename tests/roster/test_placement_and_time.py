"""Where a room goes (the least-loaded media instance that accepts), what happens when none
can take it, the automatic close after the booked end, and the watch stream."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from svpl.identity.v1 import identity_pb2
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2 as R

from devstack.embedded_db import free_port
from devstack.samples import scheduled
from services.media.server import build as build_media
from services.runtime.server import start_server
from tests.polling import poll
from tests.roster.conftest import MEDIA_INSTANCE, World
from tests.roster.helpers import reason


async def test_room_goes_to_the_least_loaded_media_instance(system_factory, person_token, service_token):
    system = await system_factory(["identity", "media"], overrides={"media": {"instance_id": "media-a"}})
    port_b = free_port()
    settings_b = system.settings("media", grpc_port=port_b, instance_id="media-b",
                                 mongodb_database=f"{system.prefix}_media_b")
    component, keys = await build_media(settings_b)
    media_b = await start_server(component, keys, f"127.0.0.1:{port_b}")
    try:
        await system.start_service("roster", media_addresses=[system.address("media"), f"127.0.0.1:{port_b}"])
        world = World(system, person_token, service_token)
        for busy in ("busy-1", "busy-2"):  # load on instance a
            await world.media.OpenRoom(media_pb2.OpenRoomRequest(meeting_id=busy), metadata=world.roster_md)
        m = await world.meeting()
        opened = await world.roster.OpenMeeting(R.OpenMeetingRequest(meeting_id=m.meeting_id),
                                                metadata=world.who("coordinator"))
        assert opened.meeting.media_instance == "media-b"
        await world.roster.StartMeeting(R.StartMeetingRequest(meeting_id=m.meeting_id),
                                        metadata=world.who("coordinator"))
        admitted = await world.admit(m.meeting_id, "patient")
        assert (admitted.media_instance, admitted.media_address) == ("media-b", f"127.0.0.1:{port_b}")
        # Opening again changes nothing (no second room elsewhere).
        again = await world.roster.OpenMeeting(R.OpenMeetingRequest(meeting_id=m.meeting_id),
                                               metadata=world.who("coordinator"))
        assert again.meeting.media_instance == "media-b"
    finally:
        await media_b.stop(0)


async def test_media_instances_found_through_dns(system_factory, person_token, service_token):
    """Kubernetes: the media pods' headless Service name resolves to every pod; each is asked its load."""
    system = await system_factory(["identity", "media"], overrides={"media": {"instance_id": "media-dns"}})
    await system.start_service("roster", media_address=f"127.0.0.1:{free_port()}",  # nothing there
                               media_pods_dns=f"localhost:{system.ports['media']}")
    world = World(system, person_token, service_token)
    m = await world.meeting()
    opened = await world.roster.OpenMeeting(R.OpenMeetingRequest(meeting_id=m.meeting_id),
                                            metadata=world.who("coordinator"))
    assert opened.meeting.media_instance == "media-dns"


async def test_no_media_instance_leaves_the_meeting_scheduled(system_factory, person_token, service_token):
    system = await system_factory(["identity"])
    await system.start_service("roster", media_addresses=[f"127.0.0.1:{free_port()}"])
    world = World(system, person_token, service_token)
    m = await world.meeting()
    await world.refused(world.roster.OpenMeeting(R.OpenMeetingRequest(meeting_id=m.meeting_id),
                                                 metadata=world.who("coordinator")), grpc.StatusCode.UNAVAILABLE)
    assert (await world.state(m.meeting_id)).state == R.MEETING_STATE_SCHEDULED


async def test_meeting_never_ended_is_closed_after_its_booked_end(system_factory, person_token, service_token):
    system = await system_factory(["identity", "media", "roster"], overrides={
        "media": {"instance_id": MEDIA_INSTANCE},
        "roster": {"auto_close_after_seconds": 0.5, "auto_close_check_seconds": 0.1}})
    world = World(system, person_token, service_token)
    later = await world.meeting()
    m = await world.live(scheduled=scheduled(start_in=-dt.timedelta(minutes=30), length=dt.timedelta(minutes=30, seconds=1)))
    patient = await world.admit(m.meeting_id, "patient")
    await poll(lambda: world.state(m.meeting_id), 10, "the automatic close",
               until=lambda s: s.state == R.MEETING_STATE_ENDED)
    err = await world.refused(world.admit(m.meeting_id, "patient"), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(err) == "ADMIT_REFUSAL_FINISHED"
    room = await poll(lambda: world.media.GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=m.meeting_id),
                                                       metadata=world.roster_md), 10, "the room to close",
                      until=lambda r: r.status == media_pb2.ROOM_STATUS_CLOSED)
    assert not room.participants
    verify = await world.refused(world.system.stub("identity").VerifyToken(
        identity_pb2.VerifyTokenRequest(token=patient.join_token),
        metadata=world.media_md), grpc.StatusCode.UNAUTHENTICATED)
    assert "revoked" in verify.details()
    assert (await world.state(later.meeting_id)).state == R.MEETING_STATE_SCHEDULED


async def test_watch_gives_a_snapshot_then_changes_and_ends_with_the_meeting(world):
    m = await world.live()
    coordinator = world.who("coordinator")
    stream = world.roster.WatchMeeting(R.WatchMeetingRequest(meeting_id=m.meeting_id), metadata=coordinator)
    events = stream.__aiter__()
    first = await asyncio.wait_for(events.__anext__(), 5)
    assert first.kind == R.MEETING_EVENT_KIND_SNAPSHOT and first.meeting.state == R.MEETING_STATE_LIVE
    patient = await world.admit(m.meeting_id, "patient")
    await world.roster.ReportConnection(R.ReportConnectionRequest(
        meeting_id=m.meeting_id, connection_id="c1", kind=R.CONNECTION_KIND_WEBRTC,
        participant_id=patient.participant_id, connected=True, media_instance=MEDIA_INSTANCE), metadata=world.media_md)
    change = await asyncio.wait_for(events.__anext__(), 5)
    assert change.kind == R.MEETING_EVENT_KIND_CONNECTIONS_CHANGED
    assert [p.full_name for p in change.connected.people] == ["Tolvan Tolvansson"]
    await world.roster.AdvanceAgenda(R.AdvanceAgendaRequest(meeting_id=m.meeting_id), metadata=coordinator)
    change = await asyncio.wait_for(events.__anext__(), 5)
    assert change.kind == R.MEETING_EVENT_KIND_AGENDA_CHANGED and change.agenda.step == R.AGENDA_STEP_SEE_AND_HEAR
    await world.roster.RemoveParticipant(R.RemoveParticipantRequest(meeting_id=m.meeting_id,
                                                                    participant_id=patient.participant_id),
                                         metadata=coordinator)
    kinds = []
    while R.MEETING_EVENT_KIND_PARTICIPANT_REMOVED not in kinds:
        change = await asyncio.wait_for(events.__anext__(), 5)
        kinds.append(change.kind)
    assert change.removed_participant_id == patient.participant_id
    await world.roster.EndMeeting(R.EndMeetingRequest(meeting_id=m.meeting_id), metadata=coordinator)
    rest = [e async for e in stream]
    assert rest[-1].kind == R.MEETING_EVENT_KIND_STATE_CHANGED and rest[-1].meeting.state == R.MEETING_STATE_ENDED


async def test_watch_is_for_the_meetings_people_only(world):
    m = await world.live()
    stream = world.roster.WatchMeeting(R.WatchMeetingRequest(meeting_id=m.meeting_id),
                                       metadata=world.who("other_coordinator"))
    await world.refused(stream.read(), grpc.StatusCode.PERMISSION_DENIED)


async def test_list_my_meetings_by_time(world):
    first = await world.meeting(scheduled=scheduled(start_in=dt.timedelta(days=1)))
    second = await world.meeting(scheduled=scheduled(start_in=dt.timedelta(hours=2)))
    mine = await world.roster.ListMyMeetings(R.ListMyMeetingsRequest(), metadata=world.who("patient"))
    assert [x.meeting_id for x in mine.meetings] == [second.meeting_id, first.meeting_id]
    page = await world.roster.ListMyMeetings(R.ListMyMeetingsRequest(page={"page_size": 1}),
                                             metadata=world.who("coordinator"))
    assert [x.meeting_id for x in page.meetings] == [second.meeting_id] and page.page.next_page_token
    none = await world.roster.ListMyMeetings(R.ListMyMeetingsRequest(), metadata=world.who("next_of_kin"))
    assert not none.meetings
