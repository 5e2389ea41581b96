"""REST /api/v1 "agenda": a meeting's agenda, its steps, the current speaker and the summary, each
relayed to roster with the person's own token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import Field
from svpl.roster.v1 import roster_pb2

from services.gateway.access import relays
from services.gateway.dependencies import Me
from services.gateway.routes.common import AgendaStepName, Body, Id, answers, relayed

router = APIRouter(prefix="/api/v1", tags=["agenda"])


@router.get("/meetings/{meeting_id}/agenda", responses=answers(roster_pb2.GetAgendaResponse, 404))
@relays("roster", "GetAgenda")
async def get_agenda(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.GetAgendaRequest(meeting_id=meeting_id))


class AdvanceBody(Body):
    from_step: AgendaStepName


@router.post("/meetings/{meeting_id}/agenda/advance", responses=answers(roster_pb2.AdvanceAgendaResponse, 404, 409))
@relays("roster", "AdvanceAgenda")
async def advance_agenda(request: Request, me: Me, meeting_id: Id, body: AdvanceBody):
    return await relayed(request, me, roster_pb2.AdvanceAgendaRequest(meeting_id=meeting_id, from_step=body.from_step))


class SpeakerBody(Body):
    participant_id: str = Field(min_length=1, max_length=128)


@router.post("/meetings/{meeting_id}/agenda/speaker",
             responses=answers(roster_pb2.SetCurrentSpeakerResponse, 404, 409))
@relays("roster", "SetCurrentSpeaker")
async def set_speaker(request: Request, me: Me, meeting_id: Id, body: SpeakerBody):
    return await relayed(request, me, roster_pb2.SetCurrentSpeakerRequest(meeting_id=meeting_id,
                                                                         participant_id=body.participant_id))


class SummaryBody(Body):
    summary: str = Field(max_length=20_000)


@router.post("/meetings/{meeting_id}/agenda/summary", responses=answers(roster_pb2.RecordSummaryResponse, 404, 409))
@relays("roster", "RecordSummary")
async def record_summary(request: Request, me: Me, meeting_id: Id, body: SummaryBody):
    return await relayed(request, me, roster_pb2.RecordSummaryRequest(meeting_id=meeting_id, summary=body.summary))
