"""RosterService: thin gRPC layer (decode, call the domain, encode).

The ACCESS table says which kinds of caller reach each method; the domain (meetings.py)
then checks what only it can: "the coordinator of *this* meeting", "a registered,
not removed participant of *this* meeting".
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from services.roster import model
from services.roster.meetings import PersonInput, Roster
from services.runtime import auth
from services.runtime.auth import LOGGED_IN, persons_with, services
from services.runtime.errors import InvalidArgument
from services.runtime.timestamps import to_datetime
from services.runtime.timestamps import to_timestamp as ts

COORDINATOR = persons_with(auth.ROLE_COORDINATOR)
# Leading a meeting: its coordinator, or the region staff member it was delegated to (the
# domain checks that the caller's HSA-id is one of *this* meeting's coordinators).
LEADS = persons_with(auth.ROLE_COORDINATOR, auth.ROLE_REGION_STAFF)

ACCESS = {
    "CreateMeeting": services("booking"),
    "RescheduleMeeting": services("booking"),
    "CancelMeeting": services("booking"),
    "GetMeeting": LOGGED_IN | services("booking", "media", "gateway"),
    # Support reads a meeting only for a fault report, on the reporter's behalf, through this one
    # call (the domain checks the reporter is in the meeting): not through GetMeeting / GetConnectedList.
    "GetReportEvidence": services("support"),
    "ListMyMeetings": LOGGED_IN,
    "ResolveDialInCode": services("gateway", "media", "booking", "dialin"),
    "OpenMeeting": LEADS,
    "StartMeeting": LEADS,
    "DelegateCoordinator": COORDINATOR,
    "AbortMeeting": LEADS,
    "EndMeeting": LEADS,
    "RegisterParticipant": LEADS,
    "ListParticipants": LEADS,
    "UpdateParticipant": LEADS,
    "SetPhysicalPresence": LEADS,
    "RecordConfidentialityAssessment": LEADS,
    "RemoveParticipant": LEADS,
    "Admit": LOGGED_IN,
    "GetMyAdmission": LOGGED_IN,
    "ReportConnection": services("media", "dialin"),
    "AdmitConnection": services("dialin"),
    "EnterPersonalCode": services("dialin"),
    "GetMyPersonalCode": LOGGED_IN,
    "ReissuePersonalCode": LEADS,
    "IdentifyConnection": LEADS,
    "GetConnectedList": LOGGED_IN,
    "GetReconciliation": LEADS,
    "GetAgenda": LOGGED_IN,
    "AdvanceAgenda": LEADS,
    "SetCurrentSpeaker": LEADS,
    "RecordSummary": LEADS,
    "WatchMeeting": LOGGED_IN | services("dialin"),
}

# ---------------------------------------------------------------- enum <-> domain names

STATES = {
    model.SCHEDULED: roster_pb2.MEETING_STATE_SCHEDULED, model.OPEN: roster_pb2.MEETING_STATE_OPEN,
    model.LIVE: roster_pb2.MEETING_STATE_LIVE, model.ENDED: roster_pb2.MEETING_STATE_ENDED,
    model.ABORTED: roster_pb2.MEETING_STATE_ABORTED, model.CANCELLED: roster_pb2.MEETING_STATE_CANCELLED,
}
# (An enum's Value() is typed as a plain int.)
ROLES = {name: cast(roster_pb2.ParticipantRole, roster_pb2.ParticipantRole.Value(f"PARTICIPANT_ROLE_{name.upper()}"))
         for name in model.ROLES}
ROLE_NAMES = {v: k for k, v in ROLES.items()}
STEPS = {name: cast(roster_pb2.AgendaStep, roster_pb2.AgendaStep.Value(f"AGENDA_STEP_{name.upper()}"))
         for name in model.AGENDA}
STEP_NAMES = {v: k for k, v in STEPS.items()}
METHODS = {model.SITHS: common_pb2.LOGIN_METHOD_SITHS, model.BANKID: common_pb2.LOGIN_METHOD_BANKID,
           model.E_SERVICES_1177: common_pb2.LOGIN_METHOD_E_SERVICES_1177}
METHOD_NAMES = {v: k for k, v in METHODS.items()}
ID_KINDS = {model.HSA_ID: common_pb2.ID_KIND_HSA_ID, model.PERSONNUMMER: common_pb2.ID_KIND_PERSONNUMMER}
ID_KIND_NAMES = {v: k for k, v in ID_KINDS.items()}
KINDS = {model.WEBRTC: roster_pb2.CONNECTION_KIND_WEBRTC, model.PHONE: roster_pb2.CONNECTION_KIND_PHONE}
KIND_NAMES = {v: k for k, v in KINDS.items()}
EVENTS = {
    "snapshot": roster_pb2.MEETING_EVENT_KIND_SNAPSHOT, "state": roster_pb2.MEETING_EVENT_KIND_STATE_CHANGED,
    "connections": roster_pb2.MEETING_EVENT_KIND_CONNECTIONS_CHANGED,
    "agenda": roster_pb2.MEETING_EVENT_KIND_AGENDA_CHANGED,
    "removed": roster_pb2.MEETING_EVENT_KIND_PARTICIPANT_REMOVED,
    "participants": roster_pb2.MEETING_EVENT_KIND_PARTICIPANTS_CHANGED,
}


def time_range(r: common_pb2.TimeRange, field: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    return to_datetime(r.start, f"{field}.start"), to_datetime(r.end, f"{field}.end")


def person_input(ref: common_pb2.PersonRef) -> PersonInput:
    return PersonInput(ID_KIND_NAMES.get(ref.id_kind, ""), ref.id, ref.display_name)


def meeting_pb(m: model.Meeting, assessments: bool = False) -> roster_pb2.Meeting:
    """The meeting; the confidentiality assessments only with `assessments` (its coordinators')."""
    return roster_pb2.Meeting(
        meeting_id=m.id, booking_id=m.booking_id, state=STATES[m.state],
        scheduled=common_pb2.TimeRange(start=ts(m.start), end=ts(m.end)),
        coordinator_hsa_id=m.coordinator_hsa_id, delegated_coordinator_hsa_ids=m.delegates,
        dial_in_code=m.dial_in_code, portal_url=m.portal_url, media_instance=m.media_instance,
        media_address=m.media_address,
        confidentiality_assessed=bool(m.confidentiality), physically_present_note=m.physically_present_note,
        registered_count=len(m.active_participants()), connected_count=len(m.connections),
        started_at=ts(m.started_at), finished_at=ts(m.finished_at), care_unit_hsa_id=m.care_unit_hsa_id,
        patient_name=m.patient_name(),
        confidentiality_assessments=[
            roster_pb2.ConfidentialityAssessment(assessed_by_hsa_id=a.get("by", ""), care_provider=a.get("care_provider", ""),
                                                 assessed_at=ts(a.get("at")), note=a.get("note", ""))
            for a in m.confidentiality] if assessments else [],
    )


INBOX_NOTICES = {"pending": roster_pb2.INBOX_NOTICE_PENDING, "delivered": roster_pb2.INBOX_NOTICE_DELIVERED,
                 "failed": roster_pb2.INBOX_NOTICE_NOT_DELIVERED}


def participant_pb(p: model.Participant, connected: bool = False, inbox_notice: str = "") -> roster_pb2.Participant:
    return roster_pb2.Participant(
        participant_id=p.id, full_name=p.full_name, role=ROLES[p.role],
        person=common_pb2.PersonRef(id_kind=ID_KINDS[p.id_kind], id=p.person_id, display_name=p.full_name),
        allowed_methods=[METHODS[x] for x in p.methods], physically_present=p.physically_present,
        removed=p.removed, connected=connected, organization=p.organization,
        inbox_notice=INBOX_NOTICES.get(inbox_notice, roster_pb2.INBOX_NOTICE_UNSPECIFIED),
    )


def connection_pb(c: model.Connection) -> roster_pb2.Connection:
    return roster_pb2.Connection(connection_id=c.id, kind=KINDS.get(c.kind, roster_pb2.CONNECTION_KIND_UNSPECIFIED),
                                 participant_id=c.participant_id, label=c.label, connected_at=ts(c.connected_at))


def person_pb(p: model.Participant, by_phone: bool = False) -> roster_pb2.ConnectedPerson:
    return roster_pb2.ConnectedPerson(participant_id=p.id, full_name=p.full_name, role=ROLES[p.role], by_phone=by_phone)


def connected_pb(m: model.Meeting) -> roster_pb2.GetConnectedListResponse:
    ids, phones = m.connected_participant_ids(), m.phone_participant_ids()
    people = [person_pb(p, p.id in phones) for p in m.participants if p.id in ids]
    return roster_pb2.GetConnectedListResponse(
        count=len(people) + len(m.unidentified()), people=people, unidentified_count=len(m.unidentified()),
        with_patient=[person_pb(p) for p in m.active_participants() if p.physically_present])


def agenda_pb(m: model.Meeting) -> roster_pb2.Agenda:
    return roster_pb2.Agenda(step=STEPS[m.agenda_step], speaking_order=[person_pb(p) for p in m.speaking_order()],
                             current_speaker_participant_id=m.current_speaker, summary=m.summary)


class RosterServicer(roster_pb2_grpc.RosterServiceServicer):
    def __init__(self, roster: Roster) -> None:
        self._r = roster

    # ------------------------------------------------------------ booking's calls

    async def CreateMeeting(self, request, context):
        start, end = time_range(request.scheduled, "scheduled")
        m, _ = await self._r.create_meeting(request.booking_id, start, end, request.coordinator_hsa_id,
                                            request.coordinator_name, person_input(request.patient),
                                            request.care_unit_hsa_id)
        return roster_pb2.CreateMeetingResponse(meeting=meeting_pb(m))

    async def RescheduleMeeting(self, request, context):
        start, end = time_range(request.scheduled, "scheduled")
        m = await self._r.reschedule(request.meeting_id, start, end)
        return roster_pb2.RescheduleMeetingResponse(meeting=meeting_pb(m))

    async def CancelMeeting(self, request, context):
        m = await self._r.cancel(request.meeting_id, request.reason)
        return roster_pb2.CancelMeetingResponse(meeting=meeting_pb(m))

    async def GetMeeting(self, request, context):
        who = auth.caller()
        m = await self._r.get(request.meeting_id, who)
        return roster_pb2.GetMeetingResponse(meeting=meeting_pb(m, m.is_coordinator(who.id, who.id_kind)))

    async def GetReportEvidence(self, request, context):
        m = await self._r.report_evidence(request.meeting_id, auth.caller(), person_input(request.on_behalf_of))
        return roster_pb2.GetReportEvidenceResponse(
            state=STATES[m.state], registered_count=len(m.active_participants()),
            connected_count=connected_pb(m).count, media_address=m.media_address,
            patient=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=m.patient_personnummer)
            if m.patient_personnummer else None,
            care_unit_hsa_id=m.care_unit_hsa_id)

    async def ListMyMeetings(self, request, context):
        start, end = time_range(request.period, "period")
        found, token = await self._r.list_mine(auth.caller(), start, end, request.page.page_size,
                                               request.page.page_token)
        return roster_pb2.ListMyMeetingsResponse(meetings=[meeting_pb(m) for m in found],
                                                 page=common_pb2.PageResponse(next_page_token=token))

    async def ResolveDialInCode(self, request, context):
        m = await self._r.resolve_code(request.dial_in_code)
        return roster_pb2.ResolveDialInCodeResponse(meeting=meeting_pb(m))

    # ------------------------------------------------------------ lifecycle

    async def OpenMeeting(self, request, context):
        return roster_pb2.OpenMeetingResponse(meeting=meeting_pb(await self._r.open(request.meeting_id, auth.caller())))

    async def StartMeeting(self, request, context):
        return roster_pb2.StartMeetingResponse(
            meeting=meeting_pb(await self._r.start(request.meeting_id, auth.caller())))

    async def DelegateCoordinator(self, request, context):
        m = await self._r.delegate(request.meeting_id, auth.caller(), request.hsa_id)
        return roster_pb2.DelegateCoordinatorResponse(meeting=meeting_pb(m))

    async def AbortMeeting(self, request, context):
        m = await self._r.finish(request.meeting_id, auth.caller(), model.ABORTED, request.reason)
        return roster_pb2.AbortMeetingResponse(meeting=meeting_pb(m))

    async def EndMeeting(self, request, context):
        m = await self._r.finish(request.meeting_id, auth.caller(), model.ENDED, "")
        return roster_pb2.EndMeetingResponse(meeting=meeting_pb(m))

    # ------------------------------------------------------------ participants

    async def RegisterParticipant(self, request, context):
        methods = []
        for x in request.allowed_methods:
            if x not in METHOD_NAMES:
                raise InvalidArgument("allowed_methods", "SITHS, BankID or 1177 e-services")
            methods.append(METHOD_NAMES[x])
        p = await self._r.register(request.meeting_id, auth.caller(), request.full_name,
                                   ROLE_NAMES.get(request.role, ""), person_input(request.person), methods,
                                   request.physically_present, request.organization)
        return roster_pb2.RegisterParticipantResponse(participant=participant_pb(p))

    async def ListParticipants(self, request, context):
        m = await self._r.list_participants(request.meeting_id, auth.caller())
        ids = m.connected_participant_ids()
        notices = await self._r.inbox_notices(m)
        return roster_pb2.ListParticipantsResponse(participants=[participant_pb(p, p.id in ids, notices.get(p.id, ""))
                                                                 for p in m.participants])

    async def UpdateParticipant(self, request, context):
        p = await self._r.update_participant(request.meeting_id, auth.caller(), request.participant_id,
                                             request.full_name, ROLE_NAMES.get(request.role, ""), request.organization)
        return roster_pb2.UpdateParticipantResponse(participant=participant_pb(p))

    async def SetPhysicalPresence(self, request, context):
        p = await self._r.set_presence(request.meeting_id, auth.caller(), request.participant_id,
                                       request.physically_present, request.note)
        return roster_pb2.SetPhysicalPresenceResponse(participant=participant_pb(p))

    async def RecordConfidentialityAssessment(self, request, context):
        m = await self._r.record_confidentiality(request.meeting_id, auth.caller(), request.care_provider,
                                                 request.note)
        return roster_pb2.RecordConfidentialityAssessmentResponse(meeting=meeting_pb(m, assessments=True))

    async def RemoveParticipant(self, request, context):
        await self._r.remove(request.meeting_id, auth.caller(), request.participant_id, request.connection_id,
                             request.reason)
        return roster_pb2.RemoveParticipantResponse()

    # ------------------------------------------------------------ admission and connections

    async def Admit(self, request, context):
        a = await self._r.admit(request.meeting_id, auth.caller())
        return roster_pb2.AdmitResponse(participant_id=a.participant.id, join_token=a.token,
                                        expires_at=ts(a.expires_at), media_instance=a.media_instance,
                                        media_address=a.media_address)

    async def GetMyAdmission(self, request, context):
        p, m = await self._r.my_admission(request.meeting_id, auth.caller())
        return roster_pb2.GetMyAdmissionResponse(participant_id=p.id, media_instance=m.media_instance,
                                                 media_address=m.media_address)

    async def ReportConnection(self, request, context):
        report = await self._r.report_connection(
            request.meeting_id, request.connection_id, KIND_NAMES.get(request.kind, model.WEBRTC),
            request.participant_id, request.connected, request.label, request.media_instance)
        return roster_pb2.ReportConnectionResponse(allowed=report.allowed, participant_id=report.participant_id,
                                                   state=STATES.get(report.state, roster_pb2.MEETING_STATE_UNSPECIFIED))

    async def AdmitConnection(self, request, context):
        a = await self._r.admit_connection(request.meeting_id, request.connection_id)
        return roster_pb2.AdmitConnectionResponse(participant_id=a.participant.id, join_token=a.token,
                                                  expires_at=ts(a.expires_at), media_instance=a.media_instance,
                                                  media_address=a.media_address)

    async def EnterPersonalCode(self, request, context):
        p = await self._r.enter_personal_code(request.meeting_id, request.connection_id, request.personal_code,
                                              request.label)
        return roster_pb2.EnterPersonalCodeResponse(participant_id=p.id)

    async def GetMyPersonalCode(self, request, context):
        code = await self._r.my_personal_code(request.meeting_id, auth.caller())
        return roster_pb2.GetMyPersonalCodeResponse(personal_code=code)

    async def ReissuePersonalCode(self, request, context):
        p = await self._r.reissue_personal_code(request.meeting_id, auth.caller(), request.participant_id)
        return roster_pb2.ReissuePersonalCodeResponse(participant=participant_pb(p))

    async def IdentifyConnection(self, request, context):
        c = await self._r.identify(request.meeting_id, auth.caller(), request.connection_id, request.participant_id)
        return roster_pb2.IdentifyConnectionResponse(connection=connection_pb(c))

    async def GetConnectedList(self, request, context):
        return connected_pb(await self._r.connected(request.meeting_id, auth.caller()))

    async def GetReconciliation(self, request, context):
        m = await self._r.reconciliation(request.meeting_id, auth.caller())
        ids = m.connected_participant_ids()
        active = m.active_participants()
        return roster_pb2.GetReconciliationResponse(
            registered_and_connected=[participant_pb(p, True) for p in active if p.id in ids],
            registered_not_connected=[participant_pb(p) for p in active if p.id not in ids],
            connected_not_identified=[connection_pb(c) for c in m.unidentified()],
            by_phone=[connection_pb(c) for c in m.connections if c.participant_id and c.kind == model.PHONE],
        )

    # ------------------------------------------------------------ agenda

    async def GetAgenda(self, request, context):
        return roster_pb2.GetAgendaResponse(agenda=agenda_pb(await self._r.agenda(request.meeting_id, auth.caller())))

    async def AdvanceAgenda(self, request, context):
        from_step = STEP_NAMES.get(request.from_step, "")
        m = await self._r.advance(request.meeting_id, auth.caller(), from_step)
        return roster_pb2.AdvanceAgendaResponse(agenda=agenda_pb(m))

    async def SetCurrentSpeaker(self, request, context):
        m = await self._r.set_speaker(request.meeting_id, auth.caller(), request.participant_id)
        return roster_pb2.SetCurrentSpeakerResponse(agenda=agenda_pb(m))

    async def RecordSummary(self, request, context):
        m = await self._r.record_summary(request.meeting_id, auth.caller(), request.summary)
        return roster_pb2.RecordSummaryResponse(agenda=agenda_pb(m))

    # ------------------------------------------------------------ watch

    async def WatchMeeting(self, request, context):
        who = auth.caller()
        async for m, events in self._r.watch(request.meeting_id, who):
            # Names of connected people only for those who may see the connected list.
            me = None if who.is_service else m.participant_for(who.id, who.id_kind)
            sees_names = who.is_service or m.is_coordinator(who.id, who.id_kind) or (
                me is not None and me.admitted_at is not None)
            connected = connected_pb(m)
            if not sees_names:
                del connected.people[:]
                del connected.with_patient[:]
            for kind, pid in events:
                yield roster_pb2.WatchMeetingResponse(kind=EVENTS[kind], meeting=meeting_pb(m), connected=connected,
                                                      agenda=agenda_pb(m), removed_participant_id=pid,
                                                      at=ts(model.now()))

