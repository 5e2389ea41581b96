"""REST /api/v1 "meetings": a meeting's life (open, start, end, abort), its participants, who is
physically present with the patient, removals, who is connected, identifying a phone caller, personal
dial-in codes (the person's own; the coordinator re-issues), the
reconciliation, delegating the coordinator role and the confidentiality assessment, each relayed to
roster with the person's own token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, Field
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2

from services.gateway.access import relays
from services.gateway.dependencies import Me
from services.gateway.routes.common import (
    Body,
    Id,
    IdKindName,
    LoginMethodName,
    ParticipantRoleName,
    answers,
    relayed,
    time_range,
)

router = APIRouter(prefix="/api/v1", tags=["meetings"])


@router.get("/meetings", responses=answers(roster_pb2.ListMyMeetingsResponse))
@relays("roster", "ListMyMeetings")
async def list_meetings(request: Request, me: Me,
                        start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
                        end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
                        page_token: Annotated[str, Query(max_length=500)] = ""):
    msg = roster_pb2.ListMyMeetingsRequest(period=time_range(start, end),
                                           page=common_pb2.PageRequest(page_token=page_token))
    return await relayed(request, me, msg)


@router.get("/meetings/{meeting_id}", responses=answers(roster_pb2.GetMeetingResponse, 404))
@relays("roster", "GetMeeting")
async def get_meeting(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.GetMeetingRequest(meeting_id=meeting_id))


def _lifecycle(rpc: str, request_cls, response_cls, summary: str):
    @relays("roster", rpc)
    async def handler(request: Request, me: Me, meeting_id: Id):
        return await relayed(request, me, request_cls(meeting_id=meeting_id))

    handler.__name__ = f"{rpc[0].lower()}{rpc[1:]}"
    return handler, answers(response_cls, 404, 409), summary


for _path, (_rpc, _req, _resp, _summary) in {
    "open": ("OpenMeeting", roster_pb2.OpenMeetingRequest, roster_pb2.OpenMeetingResponse, "Open the meeting room"),
    "start": ("StartMeeting", roster_pb2.StartMeetingRequest, roster_pb2.StartMeetingResponse, "Start the meeting"),
    "end": ("EndMeeting", roster_pb2.EndMeetingRequest, roster_pb2.EndMeetingResponse,
            "End the meeting: final, nobody can stay or rejoin"),
}.items():
    _handler, _responses, _summary = _lifecycle(_rpc, _req, _resp, _summary)
    router.add_api_route(f"/meetings/{{meeting_id}}/{_path}", _handler, methods=["POST"], responses=_responses,
                         summary=_summary)


class AbortBody(Body):
    reason: str = Field("", max_length=1000)


@router.post("/meetings/{meeting_id}/abort", responses=answers(roster_pb2.AbortMeetingResponse, 404, 409))
@relays("roster", "AbortMeeting")
async def abort_meeting(request: Request, me: Me, meeting_id: Id, body: AbortBody):
    return await relayed(request, me, roster_pb2.AbortMeetingRequest(meeting_id=meeting_id, reason=body.reason))


class PersonBody(Body):
    id_kind: IdKindName
    id: str = Field(min_length=1, max_length=40)


class RegisterBody(Body):
    full_name: str = Field(min_length=1, max_length=200)
    role: ParticipantRoleName
    person: PersonBody
    allowed_methods: list[LoginMethodName] = Field(default_factory=list, max_length=4)
    physically_present: bool = False
    organization: str = Field("", max_length=200)


@router.get("/meetings/{meeting_id}/participants", responses=answers(roster_pb2.ListParticipantsResponse, 404))
@relays("roster", "ListParticipants")
async def list_participants(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.ListParticipantsRequest(meeting_id=meeting_id))


@router.post("/meetings/{meeting_id}/participants",
             responses=answers(roster_pb2.RegisterParticipantResponse, 404, 409))
@relays("roster", "RegisterParticipant")
async def register_participant(request: Request, me: Me, meeting_id: Id, body: RegisterBody):
    msg = roster_pb2.RegisterParticipantRequest(
        meeting_id=meeting_id, full_name=body.full_name, role=body.role,
        person=common_pb2.PersonRef(id_kind=body.person.id_kind, id=body.person.id, display_name=body.full_name),
        allowed_methods=body.allowed_methods, physically_present=body.physically_present,
        organization=body.organization,
    )
    return await relayed(request, me, msg)


class UpdateBody(Body):
    full_name: str = Field(min_length=1, max_length=200)
    role: ParticipantRoleName
    organization: str = Field("", max_length=200)


@router.post("/meetings/{meeting_id}/participants/{participant_id}",
            responses=answers(roster_pb2.UpdateParticipantResponse, 404, 409),
            summary="Correct a registration: name, role and organisation")
@relays("roster", "UpdateParticipant")
async def update_participant(request: Request, me: Me, meeting_id: Id, participant_id: Id, body: UpdateBody):
    return await relayed(request, me, roster_pb2.UpdateParticipantRequest(
        meeting_id=meeting_id, participant_id=participant_id, full_name=body.full_name, role=body.role,
        organization=body.organization))


@router.get("/meetings/{meeting_id}/personal-code", responses=answers(roster_pb2.GetMyPersonalCodeResponse, 403, 404),
            summary="The caller's own personal code for dialling in (empty when personal codes are off)")
@relays("roster", "GetMyPersonalCode")
async def my_personal_code(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.GetMyPersonalCodeRequest(meeting_id=meeting_id))


@router.post("/meetings/{meeting_id}/participants/{participant_id}/personal-code",
             responses=answers(roster_pb2.ReissuePersonalCodeResponse, 404, 409),
             summary="A new personal code for a participant (the old one stops working; the coordinator never sees it)")
@relays("roster", "ReissuePersonalCode")
async def reissue_personal_code(request: Request, me: Me, meeting_id: Id, participant_id: Id):
    return await relayed(request, me, roster_pb2.ReissuePersonalCodeRequest(meeting_id=meeting_id,
                                                                            participant_id=participant_id))


class RemovalBody(Body):
    participant_id: str = Field("", max_length=128)
    connection_id: str = Field("", max_length=128)
    reason: str = Field("", max_length=1000)


@router.post("/meetings/{meeting_id}/removals", responses=answers(roster_pb2.RemoveParticipantResponse, 404, 409),
             summary="Remove a participant or an unidentified connection (they cannot come back)")
@relays("roster", "RemoveParticipant")
async def remove_participant(request: Request, me: Me, meeting_id: Id, body: RemovalBody):
    msg = roster_pb2.RemoveParticipantRequest(meeting_id=meeting_id, participant_id=body.participant_id,
                                              connection_id=body.connection_id, reason=body.reason)
    return await relayed(request, me, msg)


@router.get("/meetings/{meeting_id}/connected", responses=answers(roster_pb2.GetConnectedListResponse, 404))
@relays("roster", "GetConnectedList")
async def connected_list(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.GetConnectedListRequest(meeting_id=meeting_id))


@router.get("/meetings/{meeting_id}/reconciliation", responses=answers(roster_pb2.GetReconciliationResponse, 404))
@relays("roster", "GetReconciliation")
async def reconciliation(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.GetReconciliationRequest(meeting_id=meeting_id))


class AssessmentBody(Body):
    care_provider: str = Field(min_length=1, max_length=200)
    note: str = Field("", max_length=2000)


@router.post("/meetings/{meeting_id}/confidentiality-assessment",
             responses=answers(roster_pb2.RecordConfidentialityAssessmentResponse, 404, 409))
@relays("roster", "RecordConfidentialityAssessment")
async def confidentiality_assessment(request: Request, me: Me, meeting_id: Id, body: AssessmentBody):
    msg = roster_pb2.RecordConfidentialityAssessmentRequest(meeting_id=meeting_id, care_provider=body.care_provider,
                                                            note=body.note)
    return await relayed(request, me, msg)


class PresenceBody(Body):
    participant_id: str = Field(min_length=1, max_length=128)
    physically_present: bool
    note: str = Field("", max_length=1000, description="Who is in the room with the patient, and where")


@router.post("/meetings/{meeting_id}/physical-presence",
             responses=answers(roster_pb2.SetPhysicalPresenceResponse, 404, 409),
             summary="Record whether a participant is physically present with the patient (also during the meeting)")
@relays("roster", "SetPhysicalPresence")
async def physical_presence(request: Request, me: Me, meeting_id: Id, body: PresenceBody):
    return await relayed(request, me, roster_pb2.SetPhysicalPresenceRequest(
        meeting_id=meeting_id, participant_id=body.participant_id, physically_present=body.physically_present,
        note=body.note))


class IdentificationBody(Body):
    connection_id: str = Field(min_length=1, max_length=128)
    participant_id: str = Field(min_length=1, max_length=128)


@router.post("/meetings/{meeting_id}/identifications",
             responses=answers(roster_pb2.IdentifyConnectionResponse, 404, 409),
             summary="Tie an unidentified connection (a phone caller) to a registered participant")
@relays("roster", "IdentifyConnection")
async def identify_connection(request: Request, me: Me, meeting_id: Id, body: IdentificationBody):
    return await relayed(request, me, roster_pb2.IdentifyConnectionRequest(
        meeting_id=meeting_id, connection_id=body.connection_id, participant_id=body.participant_id))


class DelegateBody(Body):
    hsa_id: str = Field(min_length=1, max_length=31)


@router.post("/meetings/{meeting_id}/delegates", responses=answers(roster_pb2.DelegateCoordinatorResponse, 404, 409),
             summary="Let another registered region staff member co-lead the meeting")
@relays("roster", "DelegateCoordinator")
async def delegate_coordinator(request: Request, me: Me, meeting_id: Id, body: DelegateBody):
    return await relayed(request, me, roster_pb2.DelegateCoordinatorRequest(meeting_id=meeting_id, hsa_id=body.hsa_id))
