"""kill -9 the media instance hosting a live meeting: roster places the room on the other
instance when the participants' clients re-admit, they renegotiate there and see each other
again within 10 s, and the participant who was removed before does not come back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from svpl.common.v1 import common_pb2
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2 as R

from devstack.embedded_db import free_port
from services.roster import model
from services.runtime import mongo as runtime_mongo
from services.roster.metrics import ROOMS_MOVED
from tests.faults.meeting_clients import Client, MediaProcess
from tests.media.peers import wait_for
from tests.roster.conftest import World
from tests.roster.helpers import poll, reason

RECOVERY_SECONDS = 10.0
ROOT = Path(__file__).resolve().parents[2]


async def test_meeting_survives_its_media_instance_killed(system_factory, person_token, service_token, tmp_path):
    system = await system_factory(["identity", "media"], overrides={"media": {"instance_id": "media-stays"}})
    doomed = MediaProcess(system, free_port(), "media-doomed", tmp_path / "media-doomed.log").start()
    clients: list[Client] = []
    try:
        await system.start_service("roster", media_addresses=[system.address("media"), doomed.address])
        world = World(system, person_token, service_token)
        await doomed.wait_ready(world.roster_md)
        for busy in ("busy-1", "busy-2"):  # the in-process instance is busier: the room goes to the doomed one
            await world.media.OpenRoom(media_pb2.OpenRoomRequest(meeting_id=busy), metadata=world.roster_md)
        m = await world.live()
        assert m.media_instance == "media-doomed"
        staff = await world.register(m.meeting_id, "Rita Region", R.PARTICIPANT_ROLE_REGION_STAFF,
                                     common_pb2.ID_KIND_HSA_ID, "SE2321000057-2001")

        def client(name: str) -> Client:
            c = Client(name, world.roster, world.who(name), world.gateway, m.meeting_id).start()
            clients.append(c)
            return c

        coordinator, patient, removed = client("coordinator"), client("patient"), client("region_staff")
        everyone = (coordinator, patient, removed)
        # Each sees the other two before anything goes wrong.
        await wait_for(lambda: all(len(c.peer and c.peer.video_received() or []) == 2 for c in everyone), 20,
                       what="three participants seeing each other on the first instance")
        listing = R.GetConnectedListRequest(meeting_id=m.meeting_id)

        async def connected_names():
            return sorted(p.full_name for p in (await world.roster.GetConnectedList(
                listing, metadata=world.who("coordinator"))).people)

        await poll(lambda names: len(names) == 3, connected_names, "three connected")
        await world.roster.RemoveParticipant(R.RemoveParticipantRequest(
            meeting_id=m.meeting_id, participant_id=staff.participant_id, reason="fel person"),
            metadata=world.who("coordinator"))
        # The removed participant's client tries to come back, as any dropped client does, and is refused.
        await wait_for(lambda: removed.outcome == "ADMIT_REFUSAL_REMOVED", 10, what="the removed client to stop")
        await poll(lambda names: names == ["Tolvan Tolvansson", "Vera Samordnare"], connected_names,
                   "the removed participant to leave the connected list")

        moved_before = ROOMS_MOVED._value.get()
        doomed.kill()
        killed_at = time.monotonic()
        frames_before = {c.name: c.video_frames() for c in (coordinator, patient)}
        # The clients notice on their own, re-admit, and are placed on the other instance.
        await wait_for(lambda: all(c.joins == 2 and c.first_video_at() for c in (coordinator, patient)),
                       RECOVERY_SECONDS, what="both clients to see each other again on the other instance")
        recovered = {c.name: c.first_video_at() - killed_at for c in (coordinator, patient)}
        noticed = {c.name: c.lost_at[-1] - killed_at for c in (coordinator, patient)}
        print(f"\nkilled -> loss noticed {noticed}; killed -> first video again {recovered}; "
              f"frames before the kill {frames_before}")
        # And the video keeps coming (not one frame and a stall).
        await wait_for(lambda: all(c.video_frames() >= 15 for c in (coordinator, patient)), 10,
                       what="video to keep flowing after the move")
        assert ROOMS_MOVED._value.get() - moved_before == 1  # two re-admissions at once: moved once
        for c in (coordinator, patient):
            assert c.admission.media_instance == "media-stays"
            assert len(c.peer.video_received()) == 1  # only the other one: the removed one did not come back
        after = await world.state(m.meeting_id)
        assert (after.media_instance, after.state) == ("media-stays", R.MEETING_STATE_LIVE)
        room = await world.media.GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=m.meeting_id),
                                              metadata=world.roster_md)
        assert sorted(p.participant_id for p in room.participants) == sorted(
            c.admission.participant_id for c in (coordinator, patient))
        # No ghosts from the dead instance, and the removed participant is not among the connected.
        assert await connected_names() == ["Tolvan Tolvansson", "Vera Samordnare"]
        err = await world.refused(world.admit(m.meeting_id, "region_staff"), grpc.StatusCode.PERMISSION_DENIED)
        assert reason(err) == "ADMIT_REFUSAL_REMOVED"
        assert removed.joins == 1
    finally:
        for c in clients:
            await c.close()
        doomed.kill()


async def test_a_meeting_ended_while_its_instance_is_dead_is_closed_everywhere(system_factory, person_token,
                                                                              service_token, tmp_path):
    """Nobody re-admitted after the kill: End still closes the room for good (through another
    instance, which records the closed id in media's shared database), and the clean-up finishes."""
    system = await system_factory(["identity", "media"], overrides={"media": {"instance_id": "media-stays"}})
    doomed = MediaProcess(system, free_port(), "media-doomed", tmp_path / "media-doomed.log").start()
    try:
        await system.start_service("roster", media_addresses=[system.address("media"), doomed.address])
        world = World(system, person_token, service_token)
        await doomed.wait_ready(world.roster_md)
        await world.media.OpenRoom(media_pb2.OpenRoomRequest(meeting_id="busy-elsewhere"), metadata=world.roster_md)
        m = await world.live()
        assert m.media_instance == "media-doomed"
        doomed.kill()
        ended = await world.roster.EndMeeting(R.EndMeetingRequest(meeting_id=m.meeting_id),
                                              metadata=world.who("coordinator"))
        assert ended.meeting.state == R.MEETING_STATE_ENDED
        err = await world.refused(world.media.OpenRoom(media_pb2.OpenRoomRequest(meeting_id=m.meeting_id),
                                                       metadata=world.roster_md), grpc.StatusCode.FAILED_PRECONDITION)
        assert "closed" in err.details()
        client = runtime_mongo.connect(system.mongo_uri)
        try:
            stored = await client[f"{system.prefix}_roster"].meetings.find_one({"_id": m.meeting_id})
        finally:
            await client.close()
        assert stored["cleanup_pending"] is False  # not retried against the dead address forever
    finally:
        doomed.kill()


def test_a_room_moves_once_and_drops_the_lost_instance_connections():
    m = model.Meeting(id="m", booking_id="b", start=model.now(), end=model.now(), coordinator_hsa_id="c",
                      dial_in_code="1", portal_url="", state=model.LIVE, media_instance="a", media_control="a:1",
                      media_address="a:1")
    m.connections = [model.Connection("c1", model.WEBRTC, "p1", media_instance="a")]
    assert model.move_room(m, "a:1", "b", "b:1", "b:1")
    assert (m.media_instance, m.media_control, m.media_address, m.connections) == ("b", "b:1", "b:1", [])
    # A second re-admission that also saw instance a gone changes nothing: the room is on b.
    m.connections = [model.Connection("c2", model.WEBRTC, "p1", media_instance="b")]
    assert not model.move_room(m, "a:1", "c", "c:1", "c:1")
    assert (m.media_instance, [c.id for c in m.connections]) == ("b", ["c2"])
    m.state = model.ENDED
    with pytest.raises(model.FailedPrecondition):
        model.move_room(m, "b:1", "c", "c:1", "c:1")


@pytest.mark.slow
def test_portal_pages_reconnect_after_their_media_instance_is_killed(tmp_path):
    """The portal's JavaScript: two Chromium pages in a live meeting; the hosting media instance
    gets SIGKILL; both pages re-admit, renegotiate on the other instance and play the other's video
    again within 10 s (see browser_media_killed.py). In a private network namespace, as
    tests/gateway/test_browser.py (only loopback exists there, so WebRTC connects over it)."""
    from tests.gateway.test_browser import IP, NAMESPACE_SETUP

    for tool in ("unshare", IP, "/usr/bin/chromium", "/usr/bin/chromedriver"):
        assert shutil.which(tool), f"{tool} is needed (make system-deps)"
    env = {**os.environ, "SE_OFFLINE": "true", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}"}
    script = f"{NAMESPACE_SETUP} && exec {sys.executable} -m tests.faults.browser_media_killed {tmp_path}"
    result = subprocess.run(["unshare", "-rn", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=150)
    print(result.stdout)
    assert result.returncode == 0, f"scenario failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
