"""Personal dial-in codes: derived, never stored; shown to their owner only; re-issued by the
coordinator; entered by the dial-in service only; guessing capped per meeting."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from svpl.roster.v1 import roster_pb2

from devstack.harness import as_token
from services.roster import model as M
from services.roster.personal_codes import MARKER, PersonalCodes
from services.runtime.errors import FailedPrecondition, PermissionDenied
from tests.polling import poll
from tests.roster.conftest import MEDIA_INSTANCE, World
from tests.roster.helpers import reason
from tests.roster.test_model import meeting
from tests.roster.test_next_of_kin_inbox import _messages, inbox, ntjp, roster_settings  # noqa: F401 - fixtures

KEY = "c" * 40
CODES = PersonalCodes(KEY, 8)


def code_of(m: M.Meeting, participant_id: str, codes: PersonalCodes = CODES) -> str:
    p = m.participant(participant_id)
    assert p is not None
    return codes.code(m.id, p.id, p.code_nonce)


def enter(m: M.Meeting, code: str, connection: str = "phone-1", cap: int = 20) -> M.Participant | None:
    return M.enter_personal_code(m, connection, "Telefon, slutar på …12", CODES.match(m.id, m.participants, code), cap)


# ---------------------------------------------------------------- the rules, directly


def test_a_code_is_eight_digits_stable_and_only_its_owners():
    m = meeting(M.LIVE)
    mine, theirs = code_of(m, "p-pat"), code_of(m, "p-coord")
    assert len(mine) == 8 and mine.isdigit() and mine == code_of(m, "p-pat") and mine != theirs
    # The same registration in another meeting, or under another key, has another code.
    other = meeting(M.LIVE)
    other.id = "m2"
    other.participants[1].code_nonce = m.participants[1].code_nonce
    assert code_of(other, "p-pat") != mine
    assert code_of(m, "p-pat", PersonalCodes("d" * 40, 8)) != mine
    assert PersonalCodes("", 8).code(m.id, "p-pat", m.participants[1].code_nonce) == ""  # codes off
    # The stored form has no code in it.
    assert mine not in str(m.to_doc())


def test_the_right_code_identifies_the_caller_as_its_owner():
    m = meeting(M.LIVE)
    assert enter(m, code_of(m, "p-pat")).id == "p-pat"
    (c,) = m.connections
    assert (c.id, c.kind, c.participant_id, c.label) == ("phone-1", M.PHONE, "p-pat", "Telefon, slutar på …12")
    assert m.wrong_personal_codes == 0


def test_a_reissued_code_stops_the_old_one():
    m = meeting(M.LIVE)
    old = code_of(m, "p-pat")
    M.reissue_code(m, "p-pat")
    assert code_of(m, "p-pat") != old
    assert enter(m, old) is None and m.wrong_personal_codes == 1
    assert enter(m, code_of(m, "p-pat")).id == "p-pat"


def test_a_removed_persons_code_is_nobodys():
    m = meeting(M.LIVE)
    code = code_of(m, "p-pat")
    M.remove(m, "p-pat")
    assert enter(m, code) is None and m.connections == []
    with pytest.raises(Exception, match="no such registered participant"):
        M.reissue_code(m, "p-pat")


def test_wrong_codes_are_capped_per_meeting_whoever_keys_them():
    m = meeting(M.LIVE)
    right = code_of(m, "p-pat")
    wrong = f"{(int(right) + 1) % 10**8:08d}"
    for i in range(3):
        assert enter(m, wrong, connection=f"phone-{i}", cap=3) is None
    with pytest.raises(FailedPrecondition) as err:
        enter(m, right, connection="phone-9", cap=3)
    assert err.value.reason == "PERSONAL_CODES_LOCKED" and m.connections == []


def test_meeting_state_banned_and_connected_rules_still_apply():
    m = meeting(M.SCHEDULED)
    with pytest.raises(FailedPrecondition) as err:
        enter(m, code_of(m, "p-pat"))
    assert err.value.reason == M.NOT_STARTED_REFUSAL
    m = meeting(M.LIVE)
    m.banned_connections.append("phone-1")
    with pytest.raises(PermissionDenied) as denied:
        enter(m, code_of(m, "p-pat"))
    assert denied.value.reason == M.REMOVED
    m = meeting(M.LIVE)
    assert M.report_connection(m, "webrtc-1", M.WEBRTC, "p-pat", True, "", "")
    with pytest.raises(FailedPrecondition) as err:
        enter(m, code_of(m, "p-pat"), connection="phone-2")
    assert err.value.reason == "ALREADY_CONNECTED"
    m = meeting(M.LIVE)
    M.finish(m, M.ENDED, "done")
    with pytest.raises(FailedPrecondition) as err:
        enter(m, "12345678")
    assert err.value.reason == M.FINISHED


def test_a_registration_stored_before_personal_codes_has_none():
    m = meeting(M.LIVE)
    doc = m.to_doc()
    for p in doc["participants"]:
        del p["code_nonce"]
    again = M.Meeting.from_doc(doc)
    assert [p.code_nonce for p in again.participants] == ["", ""]
    assert CODES.match(again.id, again.participants, "00000000") is None


@given(st.text(max_size=12))
def test_garbage_never_matches(entered):
    m = meeting(M.LIVE)
    right = {code_of(m, p.id) for p in m.participants}
    assert (CODES.match(m.id, m.participants, entered) is not None) == (entered in right)


def test_the_body_marker_is_filled_in_only_when_sent():
    assert CODES.render(f"kod {MARKER}.", "m1", "p1", "n") == f"kod {CODES.code('m1', 'p1', 'n')}."


# ---------------------------------------------------------------- the contract, over gRPC


@pytest.fixture
async def coded(system_factory, person_token, service_token, inbox, ntjp):  # noqa: F811 - fixtures
    system = await system_factory(["identity", "media", "roster"], overrides={
        "media": {"instance_id": MEDIA_INSTANCE},
        "roster": roster_settings(inbox, ntjp, personal_code_key=KEY, personal_code_max_wrong_per_meeting=4)})
    world = CodedWorld(system, person_token, service_token)
    world.dialin = as_token(service_token("dialin"))
    return world


class CodedWorld(World):
    dialin: tuple = ()


async def my_code(world: World, meeting_id: str, who: str) -> str:
    reply = await world.roster.GetMyPersonalCode(roster_pb2.GetMyPersonalCodeRequest(meeting_id=meeting_id),
                                                 metadata=world.who(who))
    return reply.personal_code


async def enter_rpc(world: CodedWorld, meeting_id: str, code: str, connection: str = "phone-aa", md=None):
    return await world.roster.EnterPersonalCode(roster_pb2.EnterPersonalCodeRequest(
        meeting_id=meeting_id, connection_id=connection, personal_code=code, label="Telefon, slutar på …12"),
        metadata=md or world.dialin)


async def test_each_person_reads_their_own_code_and_the_coordinator_reissues_it(coded, mongo, inbox):  # noqa: F811
    world = coded
    m = await world.live()
    nok = await world.register_next_of_kin(m.meeting_id)
    patient_code, kin_code = await my_code(world, m.meeting_id, "patient"), await my_code(world, m.meeting_id,
                                                                                        "next_of_kin")
    assert len(patient_code) == 8 and patient_code != kin_code
    # The next of kin's 1177 invitation carries their own code (filled in as it was sent).
    sent = await poll(lambda: _messages(inbox), 15, "the 1177 invitation", until=lambda msgs: len(msgs) == 1)
    (body,) = [x["body"] for x in sent.values()]
    assert kin_code in body and m.dial_in_code in body and patient_code not in body and MARKER not in body
    # Nowhere in roster's database, the outbox included.
    client: AsyncMongoClient = AsyncMongoClient(mongo.uri)
    try:
        db = client[f"{world.system.prefix}_roster"]
        stored = str([d async for d in db["meetings"].find()]) + str([d async for d in db["outbox"].find()])
    finally:
        await client.close()
    assert patient_code not in stored and kin_code not in stored

    # The coordinator re-issues the next of kin's: a new 1177 message with the new code; the old one is dead.
    reply = await world.roster.ReissuePersonalCode(roster_pb2.ReissuePersonalCodeRequest(
        meeting_id=m.meeting_id, participant_id=nok.participant_id), metadata=world.who("coordinator"))
    assert reply.participant.participant_id == nok.participant_id
    assert kin_code not in str(reply)
    new = await my_code(world, m.meeting_id, "next_of_kin")
    assert new != kin_code
    sent = await poll(lambda: _messages(inbox), 15, "the new code's 1177 message", until=lambda msgs: len(msgs) == 2)
    assert any(new in x["body"] and "Ny personlig kod" in x["subject"] for x in sent.values())
    err = await world.refused(enter_rpc(world, m.meeting_id, kin_code), grpc.StatusCode.NOT_FOUND)
    assert kin_code not in (err.details() or "")
    assert (await enter_rpc(world, m.meeting_id, new)).participant_id == nok.participant_id


async def test_what_a_logged_in_attacker_tries_with_codes(coded):
    world = coded
    m = await world.live()
    patient_code = await my_code(world, m.meeting_id, "patient")
    # A person who is not in the meeting gets no code; a participant cannot re-issue; only the dial-in enters.
    err = await world.refused(world.roster.GetMyPersonalCode(
        roster_pb2.GetMyPersonalCodeRequest(meeting_id=m.meeting_id), metadata=world.who("municipality_staff")),
        grpc.StatusCode.PERMISSION_DENIED)
    assert reason(err) == M.NOT_REGISTERED
    patient = next(p for p in (await world.roster.ListParticipants(roster_pb2.ListParticipantsRequest(
        meeting_id=m.meeting_id), metadata=world.who("coordinator"))).participants
        if p.role == roster_pb2.PARTICIPANT_ROLE_PATIENT)
    await world.refused(world.roster.ReissuePersonalCode(roster_pb2.ReissuePersonalCodeRequest(
        meeting_id=m.meeting_id, participant_id=patient.participant_id), metadata=world.who("patient")),
        grpc.StatusCode.PERMISSION_DENIED)
    for md in (world.who("patient"), world.gateway, world.media_md):
        await world.refused(enter_rpc(world, m.meeting_id, patient_code, md=md), grpc.StatusCode.PERMISSION_DENIED)
    # A code of another meeting is nobody's here.
    other = await world.live()
    await world.refused(enter_rpc(world, other.meeting_id, patient_code), grpc.StatusCode.NOT_FOUND)
    bad = await world.refused(enter_rpc(world, m.meeting_id, "12ab"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "personal_code" in str(bad.trailing_metadata())
    # Guesses beyond the meeting's cap (4 here): then even the right code waits for the coordinator.
    wrong = f"{(int(patient_code) + 1) % 10**8:08d}"
    for i in range(4):
        await world.refused(enter_rpc(world, m.meeting_id, wrong, connection=f"phone-{i}"), grpc.StatusCode.NOT_FOUND)
    err = await world.refused(enter_rpc(world, m.meeting_id, patient_code), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(err) == "PERSONAL_CODES_LOCKED"
    assert list((await world.roster.GetReconciliation(roster_pb2.GetReconciliationRequest(
        meeting_id=m.meeting_id), metadata=world.who("coordinator"))).registered_and_connected) == []
    # The other meeting's cap is its own.
    other_code = await my_code(world, other.meeting_id, "patient")
    assert (await enter_rpc(world, other.meeting_id, other_code)).participant_id
    # Removed: no code any more.
    await world.roster.RemoveParticipant(roster_pb2.RemoveParticipantRequest(
        meeting_id=m.meeting_id, participant_id=patient.participant_id), metadata=world.who("coordinator"))
    await world.refused(world.roster.GetMyPersonalCode(roster_pb2.GetMyPersonalCodeRequest(
        meeting_id=m.meeting_id), metadata=world.who("patient")), grpc.StatusCode.PERMISSION_DENIED)


async def test_without_a_key_there_are_no_codes(world, service_token):
    m = await world.live()
    assert await my_code(world, m.meeting_id, "patient") == ""
    err = await world.refused(enter_rpc(world, m.meeting_id, "12345678", md=as_token(service_token("dialin"))),
                              grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(err) == "PERSONAL_CODES_OFF"
