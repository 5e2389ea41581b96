"""Meeting ID + personal code with Debian's SIPp as the phone: the person enters directly as
themselves (no coordinator), and what someone keying other codes gets: nothing, three tries."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY
from svpl.roster.v1 import roster_pb2

from tests.dialin.test_phone_caller import call, enter, finished, in_room, live_meeting_with_browsers, unidentified
from tests.polling import poll

KEY = "p" * 40


def entries(result: str) -> float:
    return REGISTRY.get_sample_value("svpl_dialin_entries_total", {"result": result}) or 0.0


async def my_code(world, meeting_id: str, who: str) -> str:
    return (await world.roster.GetMyPersonalCode(roster_pb2.GetMyPersonalCodeRequest(meeting_id=meeting_id),
                                                 metadata=world.who(who))).personal_code


def logged(caplog) -> str:
    return "\n".join(f"{r.name} {r.getMessage()} {r.args}" for r in caplog.records)


@pytest.fixture
async def coded_world(dialin_factory):
    return await dialin_factory(roster={"personal_code_key": KEY})


@pytest.mark.slow
async def test_meeting_id_and_personal_code_enter_directly_as_that_person(coded_world, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    world = coded_world
    m, patient, speaker, listener, browsers = await live_meeting_with_browsers(world)
    code = await my_code(world, m.meeting_id, "patient")
    try:
        number = "0701239912"
        caller = await call(world, tmp_path, "coded", number, enter(tmp_path, "coded", f"{m.dial_in_code}#{code}#"))
        # In the room as the patient, without anyone letting them in; never an unidentified caller.
        await poll(lambda: in_room(world, m.meeting_id), timeout=25, what="the caller in the room as the patient",
                   until=lambda ids: ids == browsers | {patient.participant_id})
        assert await unidentified(world, m.meeting_id) == []
        connected = await world.roster.GetConnectedList(roster_pb2.GetConnectedListRequest(meeting_id=m.meeting_id),
                                                        metadata=world.who("coordinator"))
        assert [(p.full_name, p.by_phone) for p in connected.people if p.participant_id == patient.participant_id] \
            == [(patient.full_name, True)]
        assert number not in str(connected)
        await world.roster.EndMeeting(roster_pb2.EndMeetingRequest(meeting_id=m.meeting_id),
                                      metadata=world.who("coordinator"))
        assert await finished(caller, 10) == 0
    finally:
        await speaker.close()
        await listener.close()
    # Neither the code nor the number in any log record of any service.
    text = logged(caplog)
    assert code not in text and number not in text and "…12" in text


@pytest.mark.slow
async def test_other_peoples_old_and_removed_codes_get_nowhere_and_the_fourth_try_is_never_made(coded_world,
                                                                                                tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    world = coded_world
    m = await world.live()
    other = await world.live()
    roster = world.roster
    people = (await roster.ListParticipants(roster_pb2.ListParticipantsRequest(meeting_id=m.meeting_id),
                                            metadata=world.who("coordinator"))).participants
    patient = next(p for p in people if p.role == roster_pb2.PARTICIPANT_ROLE_PATIENT)
    kin = await world.register_next_of_kin(m.meeting_id)
    # Three codes that are nobody's now: the patient's re-issued (old) one, the next of kin's
    # after their removal, and the patient's code in another meeting.
    old = await my_code(world, m.meeting_id, "patient")
    await roster.ReissuePersonalCode(roster_pb2.ReissuePersonalCodeRequest(
        meeting_id=m.meeting_id, participant_id=patient.participant_id), metadata=world.who("coordinator"))
    removed = await my_code(world, m.meeting_id, "next_of_kin")
    await roster.RemoveParticipant(roster_pb2.RemoveParticipantRequest(
        meeting_id=m.meeting_id, participant_id=kin.participant_id), metadata=world.who("coordinator"))
    elsewhere = await my_code(world, other.meeting_id, "patient")
    current = await my_code(world, m.meeting_id, "patient")
    before = entries("wrong_code"), entries("code_found")
    # A fourth, right, code is keyed too: the call ends after the third wrong one, so it is never tried.
    number = "0701239934"
    proc = await call(world, tmp_path, "guess", number,
                      enter(tmp_path, "guess", f"{m.dial_in_code}#{old}#{removed}#{elsewhere}#{current}#"),
                      bye_within_ms=40000)
    assert await finished(proc, 60) == 0
    assert (entries("wrong_code") - before[0], entries("code_found") - before[1]) == (3, 0)
    assert await unidentified(world, m.meeting_id) == []
    assert await in_room(world, m.meeting_id) == set()
    text = logged(caplog)
    assert not any(c in text for c in (old, removed, elsewhere, current, number))
