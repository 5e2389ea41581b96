"""REST /api/v1 "support": the routing table and fault reports, relayed to support with the
person's own token (the reporter is the logged-in person)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import Field
from svpl.common.v1 import common_pb2
from svpl.support.v1 import support_pb2

from services.gateway.access import relays
from services.gateway.dependencies import Me
from services.gateway.routes.common import Body, ProblemKindName, answers, relayed
from services.runtime import auth

router = APIRouter(prefix="/api/v1", tags=["support"])


@router.get("/support/routing", responses=answers(support_pb2.GetRoutingTableResponse))
@relays("support", "GetRoutingTable")
async def routing_table(request: Request, me: Me):
    return await relayed(request, me, support_pb2.GetRoutingTableRequest())


class ReportBody(Body):
    problem: ProblemKindName
    description: str = Field(min_length=1, max_length=5000)
    meeting_id: str = Field("", max_length=128)
    participant_id: str = Field("", max_length=128)
    request_rebook: bool = False
    contact: str = Field("", max_length=200)
    idempotency_key: str = Field("", max_length=100, pattern=r"^[A-Za-z0-9_-]*$")


def reporter_kind(caller: auth.Caller) -> support_pb2.ReporterKind:
    if caller.has_role(auth.ROLE_MUNICIPALITY_STAFF):
        return support_pb2.REPORTER_KIND_MUNICIPALITY_STAFF
    if caller.has_role(auth.ROLE_REGION_STAFF):
        return support_pb2.REPORTER_KIND_REGION_STAFF
    if caller.has_role(auth.ROLE_CITIZEN):
        return support_pb2.REPORTER_KIND_CITIZEN
    return support_pb2.REPORTER_KIND_EXTERNAL_ACTOR


@router.post("/support/reports", responses=answers(support_pb2.FileReportResponse, 404, 409),
             summary="Report a problem: the answer names where the report went")
@relays("support", "FileReport")
async def file_report(request: Request, me: Me, body: ReportBody):
    who = me.caller
    id_kind = common_pb2.ID_KIND_HSA_ID if who.id_kind == "hsa_id" else common_pb2.ID_KIND_PERSONNUMMER
    msg = support_pb2.FileReportRequest(
        reporter=support_pb2.Reporter(name=who.name, person=common_pb2.PersonRef(id_kind=id_kind, id=who.id,
                                                                                display_name=who.name),
                                      kind=reporter_kind(who), organization=who.organization, contact=body.contact),
        problem=body.problem, description=body.description, meeting_id=body.meeting_id,
        participant_id=body.participant_id, request_rebook=body.request_rebook,
        idempotency_key=body.idempotency_key,
    )
    return await relayed(request, me, msg)
