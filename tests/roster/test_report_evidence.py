"""Reads of a meeting are access-logged, and support reads a meeting only for a reporter who is in it
(security issue #14: hold against an attacker who is already logged in).

- GetMeeting and GetAgenda leave an access record naming the caller (a person, or service:<name>),
  and the patient's extract lists them (item 7).
- GetReportEvidence (support only) answers for a registered, not removed participant or a coordinator
  (or delegate), on their behalf, and NOT_FOUND - the very same answer - for a meeting that does not
  exist and for someone else's meeting; its access record names the person, via service:support (item 3).
"""

from __future__ import annotations

from typing import Any

import grpc
from pymongo import AsyncMongoClient
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2
from svpl.roster.v1 import roster_pb2 as R

from devstack.harness import as_token
from devstack.samples import COORDINATOR_HSA, PATIENT_PNR
from tests.conftest import PEOPLE

REGION_STAFF_HSA = PEOPLE["region_staff"]["person_id"]
KIN_PNR = PEOPLE["next_of_kin"]["person_id"]
MONA_HSA = PEOPLE["municipality_staff"]["person_id"]


def hsa(person_id: str) -> common_pb2.PersonRef:
    return common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID, id=person_id)


def pnr(person_id: str) -> common_pb2.PersonRef:
    return common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=person_id)


async def _extract(world, patient: str = PATIENT_PNR) -> list[tuple[str, str, str]]:
    """The patient's access-log extract, as identity serves it: (service, action, actor)."""
    officer = as_token(world.person_token(person_id="SE2321000057-5001", id_kind="hsa_id", name="Lena Logg",
                                          method="siths", roles=["staff", "region_staff", "access_log"]))
    reply = await world.system.stub("identity").ListAccessRecords(
        identity_pb2.ListAccessRecordsRequest(patient_personnummer=patient, page={"page_size": 500}),
        metadata=officer)
    return [(r.service, r.action, r.actor) for r in reply.records]


async def _records(world, mongo, meeting_id: str) -> list[dict]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.uri)
    try:
        return await client[f"{world.system.prefix}_audit"]["access_records"].find(
            {"resource": f"meeting/{meeting_id}"}).sort("at", 1).to_list()
    finally:
        await client.close()


async def test_reading_a_meeting_and_its_agenda_appears_in_the_patients_extract(world):
    m = await world.live()
    await world.roster.GetMeeting(R.GetMeetingRequest(meeting_id=m.meeting_id), metadata=world.who("patient"))
    await world.roster.GetAgenda(R.GetAgendaRequest(meeting_id=m.meeting_id), metadata=world.who("patient"))
    await world.roster.GetAgenda(R.GetAgendaRequest(meeting_id=m.meeting_id), metadata=world.who("coordinator"))
    await world.state(m.meeting_id)  # GetMeeting as the booking service
    extract = await _extract(world)
    for expected in [("roster", "read_meeting", PATIENT_PNR), ("roster", "read_agenda", PATIENT_PNR),
                     ("roster", "read_agenda", COORDINATOR_HSA), ("roster", "read_meeting", "service:booking")]:
        assert expected in extract, (expected, extract)
    # A refused read reads nothing and records nothing.
    await world.refused(world.roster.GetAgenda(R.GetAgendaRequest(meeting_id=m.meeting_id),
                                               metadata=world.who("region_staff")), grpc.StatusCode.PERMISSION_DENIED)
    assert not any(actor == REGION_STAFF_HSA for _, _, actor in await _extract(world))


async def test_report_evidence_is_only_for_people_in_the_meeting_and_names_them(world, mongo, service_token):
    support = as_token(service_token("support"))
    m = await world.live()
    await world.register_next_of_kin(m.meeting_id)
    staff = await world.register(m.meeting_id, "Mona Kommun", R.PARTICIPANT_ROLE_MUNICIPALITY_STAFF,
                                 common_pb2.ID_KIND_HSA_ID, MONA_HSA)
    await world.roster.RemoveParticipant(R.RemoveParticipantRequest(
        meeting_id=m.meeting_id, participant_id=staff.participant_id, reason="fel person"),
        metadata=world.who("coordinator"))

    def ask(meeting_id: str, person: common_pb2.PersonRef):
        return world.roster.GetReportEvidence(R.GetReportEvidenceRequest(meeting_id=meeting_id, on_behalf_of=person),
                                              metadata=support)

    # In the meeting: the coordinator, the patient, a registered next of kin.
    for person in (hsa(COORDINATOR_HSA), pnr(PATIENT_PNR), pnr(KIN_PNR)):
        reply = await ask(m.meeting_id, person)
        assert reply.state == R.MEETING_STATE_LIVE and reply.registered_count == 3 and reply.media_address
    # Not in it (never registered; removed; a personnummer given as an HSA-id), or no such meeting:
    # one and the same answer.
    answers = set()
    for meeting_id, person in ((m.meeting_id, hsa(REGION_STAFF_HSA)), (m.meeting_id, hsa(MONA_HSA)),
                               (m.meeting_id, hsa(PATIENT_PNR)), ("0" * 32, hsa(COORDINATOR_HSA)),
                               ("0" * 32, hsa(REGION_STAFF_HSA))):
        err = await world.refused(ask(meeting_id, person), grpc.StatusCode.NOT_FOUND)
        answers.add(err.details())
    assert len(answers) == 1, answers

    # The access records name the person support read for, via support; never support alone.
    records = [r for r in await _records(world, mongo, m.meeting_id) if r["action"] == "read_report_evidence"]
    assert [(r["actor"], r.get("via"), r["patient"], r["purpose"]) for r in records] == [
        (COORDINATOR_HSA, "service:support", PATIENT_PNR, "fault report"),
        (PATIENT_PNR, "service:support", PATIENT_PNR, "fault report"),
        (KIN_PNR, "service:support", PATIENT_PNR, "fault report"),
    ]
    assert ("roster", "read_report_evidence", KIN_PNR) in await _extract(world)

    # Bad input names the field; only support may ask.
    err = await world.refused(ask(m.meeting_id, common_pb2.PersonRef(id=PATIENT_PNR)),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert err.details().startswith("on_behalf_of.id_kind:")
    err = await world.refused(ask(m.meeting_id, common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID)),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert err.details().startswith("on_behalf_of.id:")
    err = await world.refused(ask("", hsa(COORDINATOR_HSA)), grpc.StatusCode.INVALID_ARGUMENT)
    assert err.details().startswith("meeting_id:")
    for caller in (world.who("coordinator"), world.booking, world.gateway):
        await world.refused(world.roster.GetReportEvidence(
            R.GetReportEvidenceRequest(meeting_id=m.meeting_id, on_behalf_of=hsa(COORDINATOR_HSA)), metadata=caller),
            grpc.StatusCode.PERMISSION_DENIED)
