"""SupportService: thin gRPC layer (decode, call the domain, encode).

Who may call what is declared in ACCESS (enforced by the shared interceptor); the
domain checks what only it can (the reporter's own ticket, filing on behalf, and the
desk's queue scope). The support desk is the role "support_desk", scoped by the routing
table's `staffed_by` (services/support/desk_scope.py): a desk member lists, reads and
works only tickets in the queues they staff - staffed_by "region" for the region's desk
(region_staff + support_desk), "reporter_organization" for a desk member of the ticket
reporter's own organisation. Anything else is PERMISSION_DENIED (reason NOT_YOUR_QUEUE);
the desk a ticket was escalated from keeps reading it.
"""

from __future__ import annotations

from typing import cast

from svpl.common.v1 import common_pb2
from svpl.support.v1 import support_pb2, support_pb2_grpc

from services.runtime import auth
from services.runtime.auth import LOGGED_IN, persons_with
from services.runtime.timestamps import to_timestamp as _ts
from services.support.model import Progress, Rebook, Ticket
from services.support.model import now as model_now
from services.support.reports import PublicReport, Report
from services.support.routing_table import QueueSpec, RoutingTable
from services.support.tickets import Tickets

DESK = persons_with(auth.ROLE_SUPPORT_DESK)

ACCESS = {
    "FileReport": LOGGED_IN,
    "GetTicket": LOGGED_IN,
    "ListTickets": DESK,
    "AssignTicket": DESK,
    "CommentTicket": LOGGED_IN,
    "EscalateTicket": DESK,
    "ChangeTicketState": DESK,
    "GetRoutingTable": LOGGED_IN | auth.services("gateway"),
    "TakeTicket": DESK,
    "FilePublicReport": auth.services("gateway"),
    "ListMyTickets": LOGGED_IN,
    "WatchTickets": LOGGED_IN,
}

_ID_KIND = {common_pb2.ID_KIND_HSA_ID: "hsa_id", common_pb2.ID_KIND_PERSONNUMMER: "personnummer"}
_ID_KIND_PB = {v: k for k, v in _ID_KIND.items()}


def _enum_in(enum, prefix: str, value: int) -> str:
    """REPORTER_KIND_REGION_STAFF -> "region_staff"; UNSPECIFIED or unknown -> ""."""
    if value == 0 or value not in enum.values():
        return "" if value == 0 else f"unknown-{value}"
    return enum.Name(value).removeprefix(prefix).lower()


def _enum_out(enum, prefix: str, value: str) -> int:
    return enum.Value(prefix + value.upper()) if value else 0


# The numbers are the enums' values: the generated messages take them (their .pyi names only the enum type).
def _reporter_kind(value: str) -> support_pb2.ReporterKind:
    return cast(support_pb2.ReporterKind, _enum_out(support_pb2.ReporterKind, "REPORTER_KIND_", value))


def _problem(value: str) -> support_pb2.ProblemKind:
    return cast(support_pb2.ProblemKind, _enum_out(support_pb2.ProblemKind, "PROBLEM_KIND_", value))


def _state(value: str) -> support_pb2.TicketState:
    return cast(support_pb2.TicketState, _enum_out(support_pb2.TicketState, "TICKET_STATE_", value))


def queue_pb(q: QueueSpec) -> support_pb2.Queue:
    return support_pb2.Queue(queue_id=q.id, name=q.name, email=q.email or "", phone=q.phone or "",
                             phone_option=q.phone_option or "", own_workplace=q.own_workplace,
                             contact_text=q.text())


def evidence_pb(t: Ticket) -> support_pb2.MeetingEvidence | None:
    ev = t.evidence
    evidence = None
    if ev:
        evidence = support_pb2.MeetingEvidence(
            meeting_id=ev["meeting_id"], meeting_state=ev["meeting_state"],
            registered_count=ev["registered_count"], connected_count=ev["connected_count"],
            captured_at=_ts(ev.get("captured_at")), note=ev.get("note", ""),
            quality=[support_pb2.QualityEvidence(
                participant_id=s["participant_id"], round_trip_ms=s["round_trip_ms"], packet_loss=s["packet_loss"],
                jitter_ms=s["jitter_ms"], inbound_bitrate_kbps=s["inbound_bitrate_kbps"],
                outbound_bitrate_kbps=s["outbound_bitrate_kbps"], warnings=s["warnings"],
                measured_at=_ts(s.get("measured_at"))) for s in ev["quality"]],
        )
    elif t.evidence_status == Progress.PENDING:
        evidence = support_pb2.MeetingEvidence(meeting_id=t.meeting_id, note="Underlaget hämtas")
    if t.rebook_note:
        evidence = evidence or support_pb2.MeetingEvidence(meeting_id=t.meeting_id)
        evidence.note = "; ".join(filter(None, [evidence.note, t.rebook_note]))
    return evidence


def ticket_pb(t: Ticket, routing: RoutingTable, reporter_view: bool = False) -> support_pb2.Ticket:
    """The ticket as a caller sees it; `reporter_view` (the reporter, not a desk of it) leaves out the
    desk's internal comments."""
    r = t.reporter
    queue = routing.queue(t.queue_id)
    return support_pb2.Ticket(
        ticket_id=t.id,
        reporter=support_pb2.Reporter(
            name=r.name, kind=_reporter_kind(r.kind), organization=r.organization, contact=r.contact,
            person=common_pb2.PersonRef(id=r.id, id_kind=_ID_KIND_PB.get(r.id_kind, common_pb2.ID_KIND_UNSPECIFIED),
                                        display_name=r.name),
        ),
        problem=_problem(t.problem),
        description=t.description,
        meeting_id=t.meeting_id,
        participant_id=t.participant_id,
        state=_state(t.state),
        routing=support_pb2.Routing(queue=queue_pb(queue) if queue else support_pb2.Queue(queue_id=t.queue_id),
                                    rule_id=t.rule_id),
        assignee=t.assignee,
        evidence=evidence_pb(t),
        history=[support_pb2.HistoryEntry(
            at=_ts(h.at), actor=h.actor, action=h.action, from_queue=h.from_queue,
            to_queue=h.to_queue, from_state=_state(h.from_state), to_state=_state(h.to_state),
            text=h.text, actor_name=h.actor_name, internal=h.internal)
            for h in t.history if not (reporter_view and h.internal)],
        created_at=_ts(t.created_at),
        first_response_at=_ts(t.first_response_at),
        rebook_requested=t.rebook_status == Rebook.DONE,
        not_municipality_fault=t.not_municipality_fault,
        assignee_name=t.assignee_name,
        number=t.number,
        public_report=t.public,
        dial_in_code=t.dial_in_code,
    )


class SupportServicer(support_pb2_grpc.SupportServiceServicer):
    def __init__(self, tickets: Tickets) -> None:
        self._tickets = tickets
        self._routing = tickets.routing

    def _out(self, t: Ticket) -> support_pb2.Ticket:
        """The ticket for the caller: its reporter (not a desk of it) without internal comments."""
        return ticket_pb(t, self._routing, self._tickets.reporter_only(t, auth.caller()))

    async def FileReport(self, request, context):
        rep = request.reporter
        report = Report(
            problem=_enum_in(support_pb2.ProblemKind, "PROBLEM_KIND_", request.problem),
            description=request.description,
            reporter_name=rep.name,
            reporter_id=rep.person.id,
            reporter_id_kind=_ID_KIND.get(rep.person.id_kind, ""),
            reporter_kind=_enum_in(support_pb2.ReporterKind, "REPORTER_KIND_", rep.kind),
            organization=rep.organization,
            contact=rep.contact,
            meeting_id=request.meeting_id,
            participant_id=request.participant_id,
            request_rebook=request.request_rebook,
            idempotency_key=request.idempotency_key,
        )
        return support_pb2.FileReportResponse(ticket=self._out(await self._tickets.file_report(report, auth.caller())))

    async def GetTicket(self, request, context):
        return support_pb2.GetTicketResponse(ticket=self._out(await self._tickets.get(request.ticket_id, auth.caller())))

    async def ListTickets(self, request, context):
        states = [_enum_in(support_pb2.TicketState, "TICKET_STATE_", s) for s in request.states]
        problems = [_enum_in(support_pb2.ProblemKind, "PROBLEM_KIND_", p) for p in request.problems]
        tickets, token = await self._tickets.list(
            auth.caller(), queue_id=request.queue_id, states=states, min_age_seconds=request.min_age_seconds,
            page_size=request.page.page_size, page_token=request.page.page_token, problems=problems,
            oldest_first=request.oldest_first, number=request.number)
        return support_pb2.ListTicketsResponse(tickets=[self._out(t) for t in tickets],
                                               page=common_pb2.PageResponse(next_page_token=token))

    async def AssignTicket(self, request, context):
        t = await self._tickets.assign(request.ticket_id, request.assignee, auth.caller())
        return support_pb2.AssignTicketResponse(ticket=self._out(t))

    async def CommentTicket(self, request, context):
        t = await self._tickets.comment(request.ticket_id, request.text, auth.caller(), internal=request.internal)
        return support_pb2.CommentTicketResponse(ticket=self._out(t))

    async def EscalateTicket(self, request, context):
        t = await self._tickets.escalate(request.ticket_id, request.reason, auth.caller())
        return support_pb2.EscalateTicketResponse(ticket=self._out(t))

    async def ChangeTicketState(self, request, context):
        state = _enum_in(support_pb2.TicketState, "TICKET_STATE_", request.state)
        t = await self._tickets.change_state(request.ticket_id, state, request.note, auth.caller())
        return support_pb2.ChangeTicketStateResponse(ticket=self._out(t))

    async def GetRoutingTable(self, request, context):
        t = self._routing
        return support_pb2.GetRoutingTableResponse(
            region=t.region,
            queues=[queue_pb(q) for q in t.queues],
            rules=[support_pb2.RoutingRule(
                rule_id=r.id, reporter_kinds=[_reporter_kind(k) for k in r.reporters],
                problem_kinds=[_problem(k) for k in r.problems], queue_id=r.queue,
                escalates_to=t.queue(r.queue).escalates_to or "") for r in t.rules],
            default_queue_id=t.default_queue,
            organizations=t.organizations,
            region_name=t.region_name,
        )

    async def TakeTicket(self, request, context):
        t = await self._tickets.take(request.ticket_id, auth.caller())
        return support_pb2.TakeTicketResponse(ticket=self._out(t))

    async def FilePublicReport(self, request, context):
        report = PublicReport(
            reporter_kind=_enum_in(support_pb2.ReporterKind, "REPORTER_KIND_", request.reporter_kind),
            name=request.name, organization=request.organization, contact=request.contact,
            problem=_enum_in(support_pb2.ProblemKind, "PROBLEM_KIND_", request.problem),
            description=request.description, dial_in_code=request.dial_in_code)
        t = await self._tickets.file_public_report(report, auth.caller())
        queue = self._routing.queue(t.queue_id)
        return support_pb2.FilePublicReportResponse(number=t.number, queue=queue_pb(queue) if queue else None)

    async def ListMyTickets(self, request, context):
        tickets, token = await self._tickets.list_mine(auth.caller(), request.page.page_size, request.page.page_token)
        return support_pb2.ListMyTicketsResponse(tickets=[self._out(t) for t in tickets],
                                                 page=common_pb2.PageResponse(next_page_token=token))

    async def WatchTickets(self, request, context):
        async for t in self._tickets.watch(auth.caller()):
            if t is None:
                yield support_pb2.WatchTicketsResponse(kind=support_pb2.TICKET_EVENT_KIND_SNAPSHOT,
                                                       at=_ts(model_now()))
                continue
            yield support_pb2.WatchTicketsResponse(kind=support_pb2.TICKET_EVENT_KIND_CHANGED, ticket_id=t.id,
                                                   queue_id=t.queue_id, state=_state(t.state),
                                                   assignee=t.assignee, at=_ts(t.updated_at))
