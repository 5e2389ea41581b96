"""baresip as the caller: it records what it hears, and the room's tone is in the recording."""

from __future__ import annotations

import pytest
from svpl.roster.v1 import roster_pb2

from tests.dialin.baresip import Baresip
from tests.dialin.test_phone_caller import in_room, live_meeting_with_browsers, unidentified
from tests.dialin.tones import tone_share
from tests.polling import poll

SPEAKER_TONE = 440.0  # devstack.peers.SyntheticAudio, the coordinator's browser microphone


async def let_in(world, phone: Baresip, m, patient, uri: str) -> None:
    """Dial `uri`, key the meeting ID, wait in the lobby, and be identified as the patient by the coordinator."""
    await phone.command("dial", uri)
    await poll(lambda: world.component.dialin.active, timeout=15, what=lambda: "the call answered\n" + phone.log())
    await phone.command("sndcode", m.dial_in_code + "##")  # the ID, then "#" for no personal code: the lobby
    lobby = await poll(lambda: unidentified(world, m.meeting_id), timeout=20,
                       what=lambda: "the caller in the lobby\n" + phone.log())
    await world.roster.IdentifyConnection(roster_pb2.IdentifyConnectionRequest(
        meeting_id=m.meeting_id, connection_id=lobby[0].connection_id, participant_id=patient.participant_id),
        metadata=world.who("coordinator"))
    await poll(lambda: in_room(world, m.meeting_id), timeout=30, what="the caller bridged",
               until=lambda ids: patient.participant_id in ids)


@pytest.mark.slow
async def test_the_caller_hears_a_webrtc_participants_tone(dialin_world, tmp_path):
    world = dialin_world
    m, patient, speaker, listener, _ = await live_meeting_with_browsers(world)
    phone = Baresip(tmp_path / "baresip", "0707777712")
    try:
        await phone.start()
        await let_in(world, phone, m, patient, f"sip:dialin@{world.sip[0]}:{world.sip[1]}")

        def tone_in_recording() -> float:
            samples, rate = phone.heard()
            return tone_share(samples[-rate:], rate, SPEAKER_TONE) if len(samples) >= rate else 0.0

        await poll(tone_in_recording, timeout=30, what="the room's tone in what the caller recorded",
                   until=lambda share: share >= 0.5)
    finally:
        await phone.stop()
        await speaker.close()
        await listener.close()
