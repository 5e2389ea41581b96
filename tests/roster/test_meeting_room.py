"""Inside a live meeting: connected vs registered, the reconciliation, the agenda, and the
access records every read of the participant list leaves."""

from __future__ import annotations

import grpc
from pymongo import AsyncMongoClient
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2

from devstack.samples import PATIENT_PNR
from tests.roster.conftest import MEDIA_INSTANCE
from tests.roster.helpers import reason

R = roster_pb2


def phone(meeting_id: str, connection_id: str, connected: bool = True, participant_id: str = ""):
    return R.ReportConnectionRequest(meeting_id=meeting_id, connection_id=connection_id, kind=R.CONNECTION_KIND_PHONE,
                                     participant_id=participant_id, connected=connected, label="070-*** ** 12",
                                     media_instance=MEDIA_INSTANCE)


async def test_reconciliation_shows_an_unidentified_connection(world):
    m = await world.live()
    coordinator = world.who("coordinator")
    patient = await world.admit(m.meeting_id, "patient")
    webrtc = R.ReportConnectionRequest(meeting_id=m.meeting_id, connection_id="c-patient", kind=R.CONNECTION_KIND_WEBRTC,
                                       participant_id=patient.participant_id, connected=True,
                                       media_instance=MEDIA_INSTANCE)
    assert (await world.roster.ReportConnection(webrtc, metadata=world.media_md)).allowed
    assert (await world.roster.ReportConnection(phone(m.meeting_id, "c-phone"), metadata=world.media_md)).allowed
    rec = await world.roster.GetReconciliation(R.GetReconciliationRequest(meeting_id=m.meeting_id), metadata=coordinator)
    assert [p.full_name for p in rec.registered_and_connected] == ["Tolvan Tolvansson"]
    assert [p.full_name for p in rec.registered_not_connected] == ["Vera Samordnare"]
    assert [(c.connection_id, c.kind, c.label) for c in rec.connected_not_identified] == [
        ("c-phone", R.CONNECTION_KIND_PHONE, "070-*** ** 12")]
    # Everyone admitted sees the count and the names (the unknown caller counted, unnamed).
    listing = await world.roster.GetConnectedList(R.GetConnectedListRequest(meeting_id=m.meeting_id),
                                                  metadata=world.who("patient"))
    assert (listing.count, listing.unidentified_count, [p.full_name for p in listing.people]) == (
        2, 1, ["Tolvan Tolvansson"])
    # A registered participant who was never admitted does not.
    await world.register_next_of_kin(m.meeting_id)
    err = await world.refused(world.roster.GetConnectedList(R.GetConnectedListRequest(meeting_id=m.meeting_id),
                                                            metadata=world.who("next_of_kin")),
                              grpc.StatusCode.PERMISSION_DENIED)
    assert reason(err) == "NOT_ADMITTED"
    # Only the meeting's coordinators see the reconciliation.
    await world.refused(world.roster.GetReconciliation(R.GetReconciliationRequest(meeting_id=m.meeting_id),
                                                       metadata=world.who("other_coordinator")),
                        grpc.StatusCode.PERMISSION_DENIED)


async def test_unidentified_connection_is_identified_or_removed_for_good(world):
    m = await world.live()
    coordinator = world.who("coordinator")
    staff = await world.register(m.meeting_id, "Mona Kommun", R.PARTICIPANT_ROLE_MUNICIPALITY_STAFF,
                                 common_pb2.ID_KIND_HSA_ID, "SE2120000829-3001", organization="Jönköpings kommun")
    for cid in ("c-known", "c-stranger"):
        assert (await world.roster.ReportConnection(phone(m.meeting_id, cid), metadata=world.media_md)).allowed
    tied = await world.roster.IdentifyConnection(
        R.IdentifyConnectionRequest(meeting_id=m.meeting_id, connection_id="c-known",
                                    participant_id=staff.participant_id), metadata=coordinator)
    assert tied.connection.participant_id == staff.participant_id
    await world.roster.RemoveParticipant(R.RemoveParticipantRequest(meeting_id=m.meeting_id,
                                                                    connection_id="c-stranger"), metadata=coordinator)
    rec = await world.roster.GetReconciliation(R.GetReconciliationRequest(meeting_id=m.meeting_id), metadata=coordinator)
    assert [p.full_name for p in rec.registered_and_connected] == ["Mona Kommun"]
    assert not rec.connected_not_identified
    # Media's next report of the removed connection is refused.
    assert not (await world.roster.ReportConnection(phone(m.meeting_id, "c-stranger"),
                                                    metadata=world.media_md)).allowed
    # A disconnect takes a connection off the list.
    await world.roster.ReportConnection(phone(m.meeting_id, "c-known", connected=False), metadata=world.media_md)
    assert (await world.state(m.meeting_id)).connected_count == 0


async def test_agenda_orders_introductions_patient_then_next_of_kin_then_others(world):
    m = await world.live()
    coordinator = world.who("coordinator")
    await world.register(m.meeting_id, "Mona Kommun", R.PARTICIPANT_ROLE_MUNICIPALITY_STAFF,
                         common_pb2.ID_KIND_HSA_ID, "SE2120000829-3001")
    await world.register(m.meeting_id, "Fia Försäkringskassan", R.PARTICIPANT_ROLE_EXTERNAL,
                         common_pb2.ID_KIND_PERSONNUMMER, "200001012384")
    await world.register_next_of_kin(m.meeting_id)
    steps = []
    agenda = (await world.roster.GetAgenda(R.GetAgendaRequest(meeting_id=m.meeting_id),
                                           metadata=world.who("patient"))).agenda
    assert agenda.step == R.AGENDA_STEP_NOT_STARTED
    while agenda.step != R.AGENDA_STEP_INTRODUCTIONS:
        agenda = (await world.roster.AdvanceAgenda(R.AdvanceAgendaRequest(meeting_id=m.meeting_id,
                                                                          from_step=agenda.step),
                                                   metadata=coordinator)).agenda
        steps.append(agenda.step)
    # The routine's opening (sight and sound, then a private place and no recording) comes first.
    assert steps == [R.AGENDA_STEP_SEE_AND_HEAR, R.AGENDA_STEP_PRIVATE_AND_NOT_RECORDED,
                     R.AGENDA_STEP_WELCOME, R.AGENDA_STEP_PURPOSE_AND_CONFIDENTIALITY,
                     R.AGENDA_STEP_INDIVIDUAL_ON_REASON, R.AGENDA_STEP_INTRODUCTIONS]
    order = [(p.role, p.full_name) for p in agenda.speaking_order]
    assert order == [
        (R.PARTICIPANT_ROLE_PATIENT, "Tolvan Tolvansson"),
        (R.PARTICIPANT_ROLE_NEXT_OF_KIN, "Nils Närstående"),
        (R.PARTICIPANT_ROLE_COORDINATOR, "Vera Samordnare"),
        (R.PARTICIPANT_ROLE_MUNICIPALITY_STAFF, "Mona Kommun"),
        (R.PARTICIPANT_ROLE_EXTERNAL, "Fia Försäkringskassan"),
    ]
    assert agenda.current_speaker_participant_id == agenda.speaking_order[0].participant_id
    nxt = agenda.speaking_order[1].participant_id
    agenda = (await world.roster.SetCurrentSpeaker(R.SetCurrentSpeakerRequest(meeting_id=m.meeting_id,
                                                                              participant_id=nxt),
                                                   metadata=coordinator)).agenda
    assert agenda.current_speaker_participant_id == nxt
    # A double click (stale from_step) changes nothing.
    err = await world.refused(world.roster.AdvanceAgenda(
        R.AdvanceAgendaRequest(meeting_id=m.meeting_id, from_step=R.AGENDA_STEP_WELCOME), metadata=coordinator),
        grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(err) == "AGENDA_STEP_CHANGED"
    # The summary is taken at the summary step.
    await world.refused(world.roster.RecordSummary(R.RecordSummaryRequest(meeting_id=m.meeting_id, summary="x"),
                                                   metadata=coordinator), grpc.StatusCode.FAILED_PRECONDITION)
    for _ in range(2):
        agenda = (await world.roster.AdvanceAgenda(R.AdvanceAgendaRequest(meeting_id=m.meeting_id),
                                                   metadata=coordinator)).agenda
    assert agenda.step == R.AGENDA_STEP_SUMMARY and not agenda.current_speaker_participant_id
    agenda = (await world.roster.RecordSummary(R.RecordSummaryRequest(meeting_id=m.meeting_id,
                                                                      summary="Hemtjänst från måndag."),
                                               metadata=coordinator)).agenda
    assert agenda.summary == "Hemtjänst från måndag."
    # Only the coordinator moves the agenda.
    await world.refused(world.roster.AdvanceAgenda(R.AdvanceAgendaRequest(meeting_id=m.meeting_id),
                                                   metadata=world.who("patient")), grpc.StatusCode.PERMISSION_DENIED)


async def test_presence_and_confidentiality_assessment_are_recorded(world):
    m = await world.meeting()
    coordinator = world.who("coordinator")
    participants = (await world.roster.ListParticipants(R.ListParticipantsRequest(meeting_id=m.meeting_id),
                                                        metadata=coordinator)).participants
    patient = next(p for p in participants if p.role == R.PARTICIPANT_ROLE_PATIENT)
    assert patient.person.id == PATIENT_PNR
    got = await world.roster.SetPhysicalPresence(
        R.SetPhysicalPresenceRequest(meeting_id=m.meeting_id, participant_id=patient.participant_id,
                                     physically_present=True, note="Med kontaktpersonen på avdelning 12"),
        metadata=coordinator)
    assert got.participant.physically_present
    done = await world.roster.RecordConfidentialityAssessment(
        R.RecordConfidentialityAssessmentRequest(meeting_id=m.meeting_id, care_provider="Region Jönköpings län",
                                                 note="Samtycke inhämtat"), metadata=coordinator)
    assert done.meeting.confidentiality_assessed
    assert done.meeting.physically_present_note == "Med kontaktpersonen på avdelning 12"
    err = await world.refused(world.roster.RecordConfidentialityAssessment(
        R.RecordConfidentialityAssessmentRequest(meeting_id=m.meeting_id), metadata=coordinator),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert "care_provider" in err.details()


async def test_every_read_of_the_participant_list_is_access_logged(world, mongo):
    m = await world.live()
    coordinator = world.who("coordinator")
    await world.admit(m.meeting_id, "patient")
    await world.roster.ListParticipants(R.ListParticipantsRequest(meeting_id=m.meeting_id), metadata=coordinator)
    await world.roster.GetReconciliation(R.GetReconciliationRequest(meeting_id=m.meeting_id), metadata=coordinator)
    await world.roster.GetConnectedList(R.GetConnectedListRequest(meeting_id=m.meeting_id),
                                        metadata=world.who("patient"))
    client = AsyncMongoClient(mongo.uri)
    try:
        records = client[f"{world.system.prefix}_audit"]["access_records"]
        found = [(r["action"], r["actor"], r["patient"], r["care_unit"])
                 async for r in records.find({"resource": f"meeting/{m.meeting_id}"}).sort("at", 1)]
    finally:
        await client.close()
    assert found == [
        ("list_participants", "SE2321000057-1001", PATIENT_PNR, "SE2321000057-7001"),
        ("read_reconciliation", "SE2321000057-1001", PATIENT_PNR, "SE2321000057-7001"),
        ("read_connected_list", PATIENT_PNR, PATIENT_PNR, "SE2321000057-7001"),
    ]
