"""A phone caller through Debian's SIPp against the dial-in service and a live meeting with real
WebRTC participants (aiortc): what the person on the phone does, and what the coordinator does
about them."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY
from svpl.common.v1 import common_pb2
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2

from devstack import sipp
from devstack.peers import Peer
from devstack.sipp import free_udp_port
from tests.dialin.tones import ListeningPeer
from tests.polling import poll

NUMBER = "0701234512"
CALLER_TONE = 1000.0  # what the caller plays; the coordinator's browser sends 440 Hz


async def call(world, tmp_path, name: str, number: str, steps, **kw) -> asyncio.subprocess.Process:
    scenario = sipp.scenario(tmp_path / f"{name}.xml", number, steps, **kw)
    return await sipp.run(scenario, world.sip, free_udp_port(), free_udp_port())


async def finished(proc: asyncio.subprocess.Process, within: float) -> int:
    _, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode


def enter(tmp_path, name: str, keys: str, then_tone: float = 0.0):
    """Key the meeting ID as RFC 4733 events (after the welcome starts), then optionally a tone."""
    steps = [sipp.pause(800), sipp.play(sipp.pcap(tmp_path / f"{name}-keys.pcap", sipp.keys_packets(keys)))]
    if then_tone:
        steps += [sipp.pause(len(keys) * 250 + 200),
                  sipp.play(sipp.pcap(tmp_path / f"{name}-tone.pcap", sipp.tone_packets(CALLER_TONE, 40.0)))]
    return steps


def outcomes(*names: str) -> list[float]:
    return [REGISTRY.get_sample_value("svpl_dialin_calls_total", {"outcome": n}) or 0.0 for n in names]


async def unidentified(world, meeting_id: str) -> list[roster_pb2.Connection]:
    return list((await world.reconciliation(meeting_id)).connected_not_identified)


async def in_room(world, meeting_id: str) -> set[str]:
    state = await world.media_stub.GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=meeting_id),
                                                metadata=world.roster_md)
    return {p.participant_id for p in state.participants if p.connection_state == "connected"}


async def live_meeting_with_browsers(world):
    """A live meeting: the coordinator in the room sending a 440 Hz tone, region staff listening."""
    m = await world.live()
    await world.register(m.meeting_id, "Rita Region", roster_pb2.PARTICIPANT_ROLE_REGION_STAFF,
                         common_pb2.ID_KIND_HSA_ID, "SE2321000057-2001")
    speaker, listener = Peer(slots=2), ListeningPeer(slots=3)
    admitted = [await world.admit(m.meeting_id, "coordinator"), await world.admit(m.meeting_id, "region_staff")]
    await world.negotiate(speaker, admitted[0], m.meeting_id)
    await world.negotiate(listener, admitted[1], m.meeting_id)
    browsers = {a.participant_id for a in admitted}
    await poll(lambda: in_room(world, m.meeting_id), timeout=15, what="both browsers in the room",
               until=lambda ids: ids == browsers)
    patient = next(p for p in (await world.roster.ListParticipants(
        roster_pb2.ListParticipantsRequest(meeting_id=m.meeting_id), metadata=world.who("coordinator"))).participants
        if p.role == roster_pb2.PARTICIPANT_ROLE_PATIENT)
    return m, patient, speaker, listener, browsers


@pytest.mark.slow
async def test_caller_waits_in_the_lobby_is_let_in_talks_and_is_removed_and_refused_next_time(dialin_world, tmp_path):
    world = dialin_world
    m, patient, speaker, listener, browsers = await live_meeting_with_browsers(world)
    before = outcomes("removed", "refused")
    try:
        caller = await call(world, tmp_path, "first", NUMBER, enter(tmp_path, "first", m.dial_in_code + "##",
                                                                     then_tone=CALLER_TONE))
        # The coordinator sees an unidentified phone connection, the number masked.
        lobby = await poll(lambda: unidentified(world, m.meeting_id), timeout=20, what="the caller in the lobby")
        assert [c.label for c in lobby] == ["Telefon, slutar på …12"]
        assert lobby[0].kind == roster_pb2.CONNECTION_KIND_PHONE
        assert NUMBER not in str(await world.reconciliation(m.meeting_id))
        # In the lobby the caller has no way into the room: it holds only the two browsers.
        assert await in_room(world, m.meeting_id) == browsers
        assert not listener.hears(CALLER_TONE)

        # The coordinator lets them in as the patient: the caller joins the room and is heard.
        await world.roster.IdentifyConnection(roster_pb2.IdentifyConnectionRequest(
            meeting_id=m.meeting_id, connection_id=lobby[0].connection_id, participant_id=patient.participant_id),
            metadata=world.who("coordinator"))
        await poll(lambda: in_room(world, m.meeting_id), timeout=20, what="the caller bridged into the room",
                   until=lambda ids: patient.participant_id in ids)
        await poll(lambda: listener.hears(CALLER_TONE), timeout=20, what="the caller's tone at a WebRTC listener")
        assert world.component.dialin.bridged == 1

        # Removed: a Swedish message, then BYE within 2 s.
        removed_at = time.monotonic()
        await world.roster.RemoveParticipant(roster_pb2.RemoveParticipantRequest(
            meeting_id=m.meeting_id, participant_id=patient.participant_id), metadata=world.who("coordinator"))
        assert await finished(caller, 10) == 0
        assert time.monotonic() - removed_at < 2.5
        assert world.component.dialin.active == 0

        # The same number calls back: told so and hung up on; the coordinator never sees it again.
        again = await call(world, tmp_path, "again", NUMBER, enter(tmp_path, "again", m.dial_in_code + "##"),
                           bye_within_ms=20000)
        assert await finished(again, 40) == 0
        assert await unidentified(world, m.meeting_id) == []
        assert [b - a for a, b in zip(before, outcomes("removed", "refused"), strict=True)] == [1, 1]
    finally:
        await speaker.close()
        await listener.close()
