"""Roster under concurrency, with two replicas on one database, and with identity away."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from svpl.identity.v1 import identity_pb2
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2 as R
from svpl.roster.v1 import roster_pb2_grpc

from devstack.embedded_db import EmbeddedMongo, free_port
from devstack.harness import ORDER, System
from services.roster.server import build as build_roster
from services.runtime.server import start_server
from tests.polling import poll
from tests.roster.conftest import MEDIA_INSTANCE, World
from tests.roster.helpers import reason


def connect(meeting_id: str, connection_id: str) -> R.ReportConnectionRequest:
    return R.ReportConnectionRequest(meeting_id=meeting_id, connection_id=connection_id,
                                     kind=R.CONNECTION_KIND_PHONE, connected=True, media_instance=MEDIA_INSTANCE)


async def test_concurrent_changes_are_none_of_them_lost(world):
    m = await world.live()
    replies = await asyncio.gather(*(world.roster.ReportConnection(connect(m.meeting_id, f"c{i}"),
                                                                   metadata=world.media_md) for i in range(25)))
    assert all(r.allowed for r in replies)
    assert (await world.state(m.meeting_id)).connected_count == 25


async def test_end_racing_admissions_leaves_nobody_admitted_after_it(world):
    m = await world.live()
    admits = [world.admit(m.meeting_id, "patient") for _ in range(10)]
    end = world.roster.EndMeeting(R.EndMeetingRequest(meeting_id=m.meeting_id), metadata=world.who("coordinator"))
    results = await asyncio.gather(end, *admits, return_exceptions=True)
    assert not isinstance(results[0], Exception)
    for result in results[1:]:
        if isinstance(result, grpc.aio.AioRpcError):
            assert reason(result) == "ADMIT_REFUSAL_FINISHED"
        else:  # admitted before the end: the token it got is revoked now
            err = None
            try:
                await world.system.stub("identity").VerifyToken(
                    identity_pb2.VerifyTokenRequest(token=result.join_token), metadata=world.media_md)
            except grpc.aio.AioRpcError as exc:
                err = exc
            assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_change_through_one_replica_reaches_a_watcher_on_another(world):
    system = world.system
    port = free_port()
    component, keys = await build_roster(system.settings("roster", grpc_port=port))
    replica = await start_server(component, keys, f"127.0.0.1:{port}")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        other = roster_pb2_grpc.RosterServiceStub(channel)
        m = await world.live()
        stream = other.WatchMeeting(R.WatchMeetingRequest(meeting_id=m.meeting_id), metadata=world.who("coordinator"))
        events = stream.__aiter__()
        assert (await asyncio.wait_for(events.__anext__(), 5)).kind == R.MEETING_EVENT_KIND_SNAPSHOT
        await world.roster.EndMeeting(R.EndMeetingRequest(meeting_id=m.meeting_id), metadata=world.who("coordinator"))
        change = await asyncio.wait_for(events.__anext__(), 5)
        assert change.kind == R.MEETING_EVENT_KIND_STATE_CHANGED
        assert change.meeting.state == R.MEETING_STATE_ENDED
    finally:
        await channel.close()
        await replica.stop(0)


async def test_end_while_identity_is_away_is_final_and_cleaned_up_when_it_is_back(system_factory, person_token,
                                                                                   service_token):
    system = await system_factory(["identity", "media", "roster"], overrides={
        "media": {"instance_id": MEDIA_INSTANCE},
        "roster": {"auto_close_check_seconds": 0.1}})
    world = World(system, person_token, service_token)
    m = await world.live()
    patient = await world.admit(m.meeting_id, "patient")
    await system.stop_service("identity")
    ended = await world.roster.EndMeeting(R.EndMeetingRequest(meeting_id=m.meeting_id),
                                          metadata=world.who("coordinator"))
    assert ended.meeting.state == R.MEETING_STATE_ENDED
    err = await world.refused(world.admit(m.meeting_id, "patient"), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(err) == "ADMIT_REFUSAL_FINISHED"
    room = await world.media.GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=m.meeting_id),
                                          metadata=world.roster_md)
    assert room.status == media_pb2.ROOM_STATUS_CLOSED
    await system.start_service("identity")

    async def verify():
        try:
            await system.stub("identity").VerifyToken(identity_pb2.VerifyTokenRequest(token=patient.join_token),
                                                      metadata=world.media_md)
            return "valid"
        except grpc.aio.AioRpcError as exc:
            return exc.details()

    assert "revoked" in await poll(verify, 15, "the retried revocation", until=lambda d: "revoked" in d)


async def test_watch_ends_unavailable_when_the_database_dies(tmp_path, keys_dir, service_token, person_token):
    """A change stream cut by a database crash ends the watch with UNAVAILABLE (the gateway
    reconnects), not an internal error."""
    database = EmbeddedMongo(tmp_path / "db").start()
    tokens = {name: service_token(name) for name in ORDER + ["gateway"]}
    system = System(database.uri, keys_dir, tokens, overrides={"media": {"instance_id": MEDIA_INSTANCE}})
    try:
        await system.start(["identity", "media", "roster"])
        world = World(system, person_token, service_token)
        m = await world.live()
        stream = world.roster.WatchMeeting(R.WatchMeetingRequest(meeting_id=m.meeting_id),
                                           metadata=world.who("coordinator"))
        assert (await asyncio.wait_for(stream.read(), 5)).kind == R.MEETING_EVENT_KIND_SNAPSHOT
        database.process.kill()
        database.process.wait()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(stream.read(), 20)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # Back again (same storage, same port): the services stop cleanly against it.
        database = EmbeddedMongo(tmp_path / "db", port=database.port).start()
    finally:
        await system.stop()
        database.stop()


async def test_a_meetings_many_watchers_share_one_change_stream_and_cannot_starve_its_writes(world):
    """120 watch streams on one meeting (what 120 open event pages cost roster before the gateway
    capped them): every one gets the snapshot and the change, and the coordinator's reads and
    writes still answer at once (they used to wait for the database connections the change
    streams held, and time out)."""
    m = await world.live()
    coordinator = world.who("coordinator")
    streams = [world.roster.WatchMeeting(R.WatchMeetingRequest(meeting_id=m.meeting_id), metadata=coordinator)
               for _ in range(120)]
    try:
        events = [s.__aiter__() for s in streams]
        snapshots = await asyncio.wait_for(asyncio.gather(*(e.__anext__() for e in events)), 20)
        assert {s.kind for s in snapshots} == {R.MEETING_EVENT_KIND_SNAPSHOT}
        for _ in range(3):
            await world.roster.ListParticipants(R.ListParticipantsRequest(meeting_id=m.meeting_id),
                                                metadata=coordinator, timeout=3)
        agenda = await world.roster.GetAgenda(R.GetAgendaRequest(meeting_id=m.meeting_id), metadata=coordinator,
                                              timeout=3)
        await world.roster.AdvanceAgenda(R.AdvanceAgendaRequest(meeting_id=m.meeting_id, from_step=agenda.agenda.step),
                                         metadata=coordinator, timeout=3)
        changes = await asyncio.wait_for(asyncio.gather(*(e.__anext__() for e in events)), 20)
        assert {c.kind for c in changes} == {R.MEETING_EVENT_KIND_AGENDA_CHANGED}
    finally:
        for s in streams:
            s.cancel()
