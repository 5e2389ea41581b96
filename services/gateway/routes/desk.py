"""REST /api/v1 "desk": the support desk's queue and tickets, a reporter's own reports, and the
public fault report (no login).

The desk's routes relay the person's own token: support decides who works which ticket (the
routing table's staffed_by: a municipality's IT sees only its own staff's tickets). The queue view
follows changes live over the WebSocket /api/v1/desk/events (support.WatchTickets, relayed by the
meeting events' machinery, services/gateway/realtime.py).

The public report is the one support call made without a login: with the gateway's own token,
rate limited per client address (the trusted-proxy aware address, as the logins are), and its
body cannot carry a meeting, evidence or a rebook request (unknown fields are refused, and the
contract message has none). Its answer is the short ticket number and the queue's contact
details: nothing that looks a ticket up, so the number is no oracle into other tickets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, WebSocket
from pydantic import Field
from svpl.support.v1 import support_pb2

from services.gateway import access, realtime
from services.gateway.dependencies import BackendsDep, Me, PublicReportLimiterDep, SettingsDep
from services.gateway.problems import Problem
from services.gateway.routes.common import (
    Body,
    Id,
    ProblemKindName,
    ReporterKindName,
    TicketStateName,
    answers,
    as_service,
    relayed,
    reply,
)
from services.gateway.security import client_address
from services.runtime import clients

router = APIRouter(prefix="/api/v1", tags=["desk"])

TICKETS_SNAPSHOT = "TICKET_EVENT_KIND_SNAPSHOT"
# The length limits of free text (support checks them too; here they are the 400 before any call).
TEXT_MAX = 4000


# ------------------------------------------------------------------ the desk's queue


@router.get("/desk/tickets", responses=answers(support_pb2.ListTicketsResponse),
            summary="The desk's queue: the tickets of the queues the caller staffs")
@access.relays("support", "ListTickets")
async def list_tickets(request: Request, me: Me,
                       state: Annotated[list[TicketStateName], Query()] = [],  # noqa: B006 - FastAPI's query list
                       problem: Annotated[list[ProblemKindName], Query()] = [],  # noqa: B006
                       order: Annotated[str, Query(pattern="^(newest|oldest)$")] = "newest",
                       queue: Annotated[str, Query(max_length=64)] = "",
                       number: Annotated[str, Query(max_length=20)] = "",
                       page_token: Annotated[str, Query(max_length=500)] = ""):
    return await relayed(request, me, support_pb2.ListTicketsRequest(
        queue_id=queue, states=state, problems=problem, oldest_first=order == "oldest", number=number,
        page={"page_token": page_token}))


@router.get("/desk/tickets/{ticket_id}", responses=answers(support_pb2.GetTicketResponse, 404),
            summary="One ticket with the reporter, the problem, the meeting's evidence and the whole history")
@access.relays("support", "GetTicket")
async def get_ticket(request: Request, me: Me, ticket_id: Id):
    return await relayed(request, me, support_pb2.GetTicketRequest(ticket_id=ticket_id))


@router.post("/desk/tickets/{ticket_id}/take", responses=answers(support_pb2.TakeTicketResponse, 404, 409),
             summary="Take the ticket (assign it to me) unless someone else has: 409 ALREADY_TAKEN")
@access.relays("support", "TakeTicket")
async def take_ticket(request: Request, me: Me, ticket_id: Id):
    return await relayed(request, me, support_pb2.TakeTicketRequest(ticket_id=ticket_id))


class CommentBody(Body):
    text: str = Field(min_length=1, max_length=TEXT_MAX)
    # A desk note the reporter does not see.
    internal: bool = False


@router.post("/desk/tickets/{ticket_id}/comments", responses=answers(support_pb2.CommentTicketResponse, 404, 409),
             summary="Comment on a ticket (the desk of its queue, or its reporter)")
@access.relays("support", "CommentTicket")
async def comment_ticket(request: Request, me: Me, ticket_id: Id, body: CommentBody):
    return await relayed(request, me, support_pb2.CommentTicketRequest(ticket_id=ticket_id, text=body.text,
                                                                       internal=body.internal))


class StateBody(Body):
    state: TicketStateName
    note: str = Field("", max_length=TEXT_MAX)


@router.post("/desk/tickets/{ticket_id}/state", responses=answers(support_pb2.ChangeTicketStateResponse, 404, 409),
             summary="Move a ticket to waiting, resolved or closed")
@access.relays("support", "ChangeTicketState")
async def change_state(request: Request, me: Me, ticket_id: Id, body: StateBody):
    return await relayed(request, me, support_pb2.ChangeTicketStateRequest(ticket_id=ticket_id, state=body.state,
                                                                           note=body.note))


class CloseBody(Body):
    resolution: str = Field(min_length=1, max_length=TEXT_MAX)


@router.post("/desk/tickets/{ticket_id}/close", responses=answers(support_pb2.ChangeTicketStateResponse, 404, 409),
             summary="Close a ticket with its resolution")
@access.relays("support", "ChangeTicketState")
async def close_ticket(request: Request, me: Me, ticket_id: Id, body: CloseBody):
    return await relayed(request, me, support_pb2.ChangeTicketStateRequest(
        ticket_id=ticket_id, state=support_pb2.TICKET_STATE_CLOSED, note=body.resolution))


class EscalateBody(Body):
    reason: str = Field(min_length=1, max_length=TEXT_MAX)


@router.post("/desk/tickets/{ticket_id}/escalation", responses=answers(support_pb2.EscalateTicketResponse, 404, 409),
             summary="Escalate to the next queue (municipality IT -> the region's IT support) with the reason")
@access.relays("support", "EscalateTicket")
async def escalate_ticket(request: Request, me: Me, ticket_id: Id, body: EscalateBody):
    return await relayed(request, me, support_pb2.EscalateTicketRequest(ticket_id=ticket_id, reason=body.reason))


@router.websocket("/desk/events")
@access.relays("support", "WatchTickets")
async def desk_events(ws: WebSocket, backends: BackendsDep, settings: SettingsDep,
                      streams: realtime.EventStreamsDep) -> None:
    """Changes to the caller's tickets (ids, queue, state; never content): the queue view reloads."""
    if await realtime.refused_origin(ws, settings):
        return
    await realtime.stream_events(
        ws, backends, streams, lambda session: "tickets:" + session.caller.actor(),
        lambda session: access.stub_method(ws, backends.support)(
            support_pb2.WatchTicketsRequest(), metadata=clients.metadata(session.token)),
        TICKETS_SNAPSHOT)


# ------------------------------------------------------------------ the reporter's own reports


@router.get("/support/my-reports", responses=answers(support_pb2.ListMyTicketsResponse),
            summary="My own reports: state and the desk's comments to me")
@access.relays("support", "ListMyTickets")
async def my_reports(request: Request, me: Me, page_token: Annotated[str, Query(max_length=500)] = ""):
    return await relayed(request, me, support_pb2.ListMyTicketsRequest(page={"page_token": page_token}))


# ------------------------------------------------------------------ reporting without a login


@router.get("/public/support", responses=answers(support_pb2.GetRoutingTableResponse),
            summary="Where faults go and how to reach each desk (no login needed)")
@access.login("support", "GetRoutingTable")
async def public_support(request: Request, backends: BackendsDep, settings: SettingsDep):
    return reply(await access.stub_method(request, backends.support)(support_pb2.GetRoutingTableRequest(),
                                                                      **as_service(backends, settings)))


class PublicReportBody(Body):
    reporter_kind: ReporterKindName
    name: str = Field(min_length=1, max_length=200)
    organization: str = Field("", max_length=200)
    contact: str = Field(min_length=1, max_length=200)
    problem: ProblemKindName
    description: str = Field(min_length=1, max_length=TEXT_MAX)
    dial_in_code: str = Field("", max_length=24, pattern=r"^[0-9 -]*$")


@router.post("/public/reports", responses=answers(support_pb2.FilePublicReportResponse),
             summary="Report a fault without logging in: the answer is a short ticket number and whom to call")
@access.login("support", "FilePublicReport")
async def public_report(request: Request, body: PublicReportBody, backends: BackendsDep, settings: SettingsDep,
                        limiter: PublicReportLimiterDep):
    wait = limiter.hit(client_address(request))
    if wait:
        raise Problem(429, "för många felanmälningar från den här adressen: vänta en stund eller ring supporten",
                      reason="TOO_MANY_REPORTS", headers={"Retry-After": str(int(wait) + 1)})
    return reply(await access.stub_method(request, backends.support)(support_pb2.FilePublicReportRequest(
        reporter_kind=body.reporter_kind, name=body.name, organization=body.organization, contact=body.contact,
        problem=body.problem, description=body.description, dial_in_code=body.dial_in_code),
        **as_service(backends, settings)))
