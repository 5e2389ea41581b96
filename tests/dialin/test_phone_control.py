"""The coordinator's control and the service's bounds, with SIPp as the caller: ending the meeting
hangs up every caller; wrong meeting IDs end the call after the third; a meeting not started says
so; INVITEs from outside the trunk's networks are refused."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY
from svpl.roster.v1 import roster_pb2

from devstack import sipp
from devstack.netns import DelayRelay
from devstack.sipp import free_udp_port
from tests.dialin.test_phone_caller import call, enter, finished, in_room, live_meeting_with_browsers, unidentified
from tests.polling import poll


def entries(result: str) -> float:
    return REGISTRY.get_sample_value("svpl_dialin_entries_total", {"result": result}) or 0.0


def three_wrong_ids(right: str, number: str) -> list:
    """A caller's SIPp steps keying three meeting IDs that are not `right` by SIP INFO, a pause apart."""
    wrong = "1234567" if right != "1234567" else "7654321"
    steps = [sipp.pause(500)]
    for i in range(3):
        steps += [sipp.info_keys(wrong + "#", number, first_cseq=2 + 10 * i), sipp.pause(300)]
    return steps


@pytest.mark.slow
async def test_ending_the_meeting_hangs_up_every_caller(dialin_world, tmp_path):
    world = dialin_world
    m, patient, speaker, listener, _ = await live_meeting_with_browsers(world)
    try:
        bridged = await call(world, tmp_path, "a", "0701111112", enter(tmp_path, "a", m.dial_in_code + "##"))
        lobby = await poll(lambda: unidentified(world, m.meeting_id), timeout=20, what="caller a in the lobby")
        await world.roster.IdentifyConnection(roster_pb2.IdentifyConnectionRequest(
            meeting_id=m.meeting_id, connection_id=lobby[0].connection_id, participant_id=patient.participant_id),
            metadata=world.who("coordinator"))
        await poll(lambda: in_room(world, m.meeting_id), timeout=20, what="caller a bridged",
                   until=lambda ids: patient.participant_id in ids)
        waiting = await call(world, tmp_path, "b", "0702222234", enter(tmp_path, "b", m.dial_in_code + "##"))
        await poll(lambda: unidentified(world, m.meeting_id), timeout=20, what="caller b in the lobby",
                   until=lambda c: [x.label for x in c] == ["Telefon, slutar på …34"])

        ended_at = time.monotonic()
        await world.roster.EndMeeting(roster_pb2.EndMeetingRequest(meeting_id=m.meeting_id),
                                      metadata=world.who("coordinator"))
        assert await asyncio.gather(finished(bridged, 10), finished(waiting, 10)) == [0, 0]
        assert time.monotonic() - ended_at < 2.5
        await poll(lambda: world.component.dialin.active == 0, timeout=5, what="no call left")
    finally:
        await speaker.close()
        await listener.close()


@pytest.mark.slow
async def test_three_wrong_meeting_ids_end_the_call_and_a_fourth_is_never_tried(dialin_world, tmp_path):
    """Keys by SIP INFO (the fallback for trunks without RFC 4733): 3 wrong IDs, then BYE."""
    world = dialin_world
    m = await world.live()
    before = entries("wrong"), entries("found")
    proc = await call(world, tmp_path, "wrong", "0703333356", three_wrong_ids(m.dial_in_code, "0703333356"),
                      bye_within_ms=20000)
    assert await finished(proc, 60) == 0
    assert (entries("wrong") - before[0], entries("found") - before[1]) == (3, 0)
    assert await unidentified(world, m.meeting_id) == []


@pytest.mark.slow
async def test_a_meeting_not_started_says_so_and_hangs_up(dialin_world, tmp_path):
    world = dialin_world
    m = await world.meeting()  # scheduled, not opened
    proc = await call(world, tmp_path, "early", "0704444478", enter(tmp_path, "early", m.dial_in_code + "##"),
                      bye_within_ms=20000)
    assert await finished(proc, 40) == 0
    assert REGISTRY.get_sample_value("svpl_dialin_calls_total", {"outcome": "not_started"}) >= 1


def bye_retransmissions() -> float:
    return REGISTRY.get_sample_value("svpl_dialin_bye_retransmissions_total") or 0.0


@pytest.mark.slow
async def test_a_bye_lost_on_the_trunk_is_sent_again_until_the_caller_answers(dialin_world, tmp_path):
    """The caller's line must not stay open when the service's BYE is lost (UDP): it goes again half a
    second later, the caller answers that one, and then no more are sent."""
    world = dialin_world
    m = await world.meeting()  # not started: the service says so and hangs up
    byes: list[bytes] = []

    def first_bye_lost(reply: bytes) -> bool:  # every BYE towards the caller counted, the first lost
        if reply.startswith(b"BYE "):
            byes.append(reply)
            return len(byes) == 1
        return False

    # The trunk's link: 127.0.0.2 at the service's port relays to the service, losing the first BYE back.
    link = DelayRelay("127.0.0.2", range(world.sip[1], world.sip[1] + 1), world.sip[0], 0.0, lose=first_bye_lost)
    await link.start()
    before = bye_retransmissions()
    try:
        scenario = sipp.scenario(tmp_path / "lossy.xml", "0704444411", enter(tmp_path, "lossy", m.dial_in_code + "##"),
                                 bye_within_ms=20000)
        proc = await sipp.run(scenario, ("127.0.0.2", world.sip[1]), free_udp_port(), free_udp_port())
        assert await finished(proc, 40) == 0  # a later BYE reached SIPp, which answered it
        await poll(lambda: not world.component.endpoint._byes, 5, "the BYE's retransmission over")
        # Sent again until answered (on a loaded machine the answer may cross one more), then no more.
        assert len(byes) >= 2 and bye_retransmissions() - before == len(byes) - 1
    finally:
        await link.stop()


@pytest.mark.slow
async def test_an_invite_from_outside_the_trunk_networks_is_refused_403(dialin_world, tmp_path):
    """The attacker who reaches the SIP port directly (127.0.0.2 is not the trunk's 127.0.0.1/32)."""
    world = dialin_world
    scenario = sipp.scenario(tmp_path / "outside.xml", "0705555590", [], refused=403)
    proc = await asyncio.create_subprocess_exec(
        sipp.SIPP, f"{world.sip[0]}:{world.sip[1]}", "-sf", str(scenario), "-m", "1", "-i", "127.0.0.2",
        "-p", str(free_udp_port()), "-mi", "127.0.0.2", "-mp", str(free_udp_port()), "-s", "dialin",
        "-timeout", "20s", "-nostdin", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        cwd=str(tmp_path))
    assert await finished(proc, 30) == 0
    assert world.component.dialin.active == 0


@pytest.mark.slow
async def test_a_draining_instance_answers_new_calls_503_and_keeps_its_calls_until_they_end(dialin_world, tmp_path):
    """SIGTERM's path (RunningServer.stop): not ready, new INVITEs 503 (the trunk tries another
    instance), the call in progress goes on; the stop completes when that call has ended."""
    world = dialin_world
    m = await world.live()
    first = await call(world, tmp_path, "kept", "0706666612", enter(tmp_path, "kept", m.dial_in_code + "##"))
    await poll(lambda: unidentified(world, m.meeting_id), timeout=20, what="the caller in the lobby")
    running = world.system.running.pop("dialin")
    stopping = asyncio.ensure_future(running.stop(60))
    try:
        await poll(lambda: not world.component.dialin.accepting, timeout=5, what="the instance draining")
        refused = await call(world, tmp_path, "new", "0706666634", [], refused=503)
        assert await finished(refused, 20) == 0
        assert first.returncode is None and not stopping.done()
        assert len(await unidentified(world, m.meeting_id)) == 1  # still waiting in the lobby
        await world.roster.EndMeeting(roster_pb2.EndMeetingRequest(meeting_id=m.meeting_id),
                                      metadata=world.who("coordinator"))
        assert await finished(first, 10) == 0
        await asyncio.wait_for(stopping, 15)
    finally:
        if not stopping.done():
            stopping.cancel()


@pytest.mark.slow
async def test_one_number_guessing_meeting_ids_is_stopped_by_the_rate_limit(dialin_factory, tmp_path):
    """The attacker who calls and keys IDs: with 2 entries an hour for a number, the third entry of
    their call is refused ("busy" message, BYE) before roster is asked, and counted as such."""
    world = await dialin_factory(entries_per_number_per_hour=2)
    m = await world.live()
    before = entries("wrong"), entries("rate_limited_number")
    proc = await call(world, tmp_path, "guess", "0708888890", three_wrong_ids(m.dial_in_code, "0708888890"),
                      bye_within_ms=20000)
    assert await finished(proc, 60) == 0
    assert (entries("wrong") - before[0], entries("rate_limited_number") - before[1]) == (2, 1)
