"""Tickets: escalation from municipality IT to region IT with the whole history, the state
machine, the support desk's list / assign / comment, who may read what, idempotent filing,
and the metrics."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY
from svpl.common.v1 import common_pb2
from svpl.support.v1 import support_pb2 as pb

from tests.support.conftest import DESK_A, MUNI_A, STAFF_A, file


async def _rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def _metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_escalation_keeps_the_whole_history(shared_support, md):
    # The municipality's own IT works it first, then the region's desk.
    stub, muni_desk, desk = shared_support.stub("support"), md(**DESK_A), md("support_desk")
    before = _metric("svpl_support_escalations_total", from_queue="kommunens_it", to_queue="region_it_teknik")
    responses = _metric("svpl_support_first_response_seconds_count", queue="kommunens_it")
    ticket = await file(shared_support, md(**STAFF_A), problem=pb.PROBLEM_KIND_TECHNICAL,
                        description="Når inte mötestjänsten fast nätet är bra")
    assert ticket.routing.queue.queue_id == "kommunens_it"
    tid = ticket.ticket_id
    # The reporter adds a detail: that is not a response.
    await stub.CommentTicket(pb.CommentTicketRequest(ticket_id=tid, text="Gäller alla datorer"),
                             metadata=md(**STAFF_A))
    await stub.AssignTicket(pb.AssignTicketRequest(ticket_id=tid, assignee="kommun-it-1"), metadata=muni_desk)
    await stub.CommentTicket(pb.CommentTicketRequest(ticket_id=tid, text="Nätet och datorn kontrollerade"),
                             metadata=muni_desk)
    escalated = (await stub.EscalateTicket(pb.EscalateTicketRequest(
        ticket_id=tid, reason="Kommunens nät och utrustning fungerar"), metadata=muni_desk)).ticket
    assert escalated.state == pb.TICKET_STATE_ESCALATED and escalated.not_municipality_fault
    assert not ticket.not_municipality_fault
    assert escalated.routing.queue.queue_id == "region_it_teknik"
    assert escalated.routing.queue.contact_text == "Ring 010 241 41 50, val 1 (Teknik)"
    await stub.AssignTicket(pb.AssignTicketRequest(ticket_id=tid, assignee="region-it-7"), metadata=desk)
    await stub.ChangeTicketState(pb.ChangeTicketStateRequest(ticket_id=tid, state=pb.TICKET_STATE_RESOLVED,
                                                             note="Brandväggsregel rättad"), metadata=desk)
    final = (await stub.GetTicket(pb.GetTicketRequest(ticket_id=tid), metadata=md(**STAFF_A))).ticket

    steps = [(h.action, h.from_queue, h.to_queue, h.from_state, h.to_state) for h in final.history]
    assert steps == [
        ("filed", "", "kommunens_it", 0, pb.TICKET_STATE_NEW),
        ("commented", "", "", 0, 0),
        ("assigned", "kommunens_it", "kommunens_it", pb.TICKET_STATE_NEW, pb.TICKET_STATE_ASSIGNED),
        ("commented", "", "", 0, 0),
        ("escalated", "kommunens_it", "region_it_teknik", pb.TICKET_STATE_ASSIGNED, pb.TICKET_STATE_ESCALATED),
        ("assigned", "region_it_teknik", "region_it_teknik", pb.TICKET_STATE_ESCALATED, pb.TICKET_STATE_ASSIGNED),
        ("state", "region_it_teknik", "region_it_teknik", pb.TICKET_STATE_ASSIGNED, pb.TICKET_STATE_RESOLVED),
    ]
    # The reporter filed it and added a detail; the municipality's IT and then the region's desk did the rest.
    assert [h.actor for h in final.history[:2]] == ["SE2120000829-3001"] * 2
    assert [h.actor for h in final.history[2:5]] == [DESK_A["person_id"]] * 3
    assert [h.actor for h in final.history[5:]] == ["SE2321000057-4001"] * 2
    assert final.history[4].text == "Inte kommunens fel: Kommunens nät och utrustning fungerar"
    assert final.history[3].text == "Nätet och datorn kontrollerade"
    times = [h.at.ToDatetime() for h in final.history]
    assert times == sorted(times)
    assert final.first_response_at == final.history[2].at  # the desk's first action
    assert _metric("svpl_support_first_response_seconds_count", queue="kommunens_it") == responses + 1
    assert _metric("svpl_support_escalations_total", from_queue="kommunens_it",
                   to_queue="region_it_teknik") == before + 1
    # Region IT does not escalate further.
    err = await _rpc_error(stub.EscalateTicket(pb.EscalateTicketRequest(ticket_id=tid, reason="igen"), metadata=desk))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_invalid_transitions_are_refused_and_change_nothing(shared_support, md):
    stub, desk = shared_support.stub("support"), md("support_desk")
    ticket = await file(shared_support, md("region_staff"))
    tid = ticket.ticket_id
    await stub.ChangeTicketState(pb.ChangeTicketStateRequest(ticket_id=tid, state=pb.TICKET_STATE_CLOSED),
                                 metadata=desk)
    for call in (
        stub.ChangeTicketState(pb.ChangeTicketStateRequest(ticket_id=tid, state=pb.TICKET_STATE_WAITING), metadata=desk),
        stub.AssignTicket(pb.AssignTicketRequest(ticket_id=tid, assignee="x"), metadata=desk),
        stub.CommentTicket(pb.CommentTicketRequest(ticket_id=tid, text="hej"), metadata=desk),
    ):
        err = await _rpc_error(call)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = (await stub.GetTicket(pb.GetTicketRequest(ticket_id=tid), metadata=desk)).ticket
    assert after.state == pb.TICKET_STATE_CLOSED and len(after.history) == 2
    # Region IT's own tickets have nowhere to escalate to.
    other = await file(shared_support, md("region_staff"))
    err = await _rpc_error(stub.EscalateTicket(pb.EscalateTicketRequest(ticket_id=other.ticket_id, reason="r"),
                                               metadata=desk))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    err = await _rpc_error(stub.ChangeTicketState(pb.ChangeTicketStateRequest(
        ticket_id=other.ticket_id, state=pb.TICKET_STATE_NEW), metadata=desk))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_the_desk_and_the_reporter_see_a_ticket(shared_support, md):
    stub = shared_support.stub("support")
    ticket = await file(shared_support, md("patient"), problem=pb.PROBLEM_KIND_CONNECTION)
    request = pb.GetTicketRequest(ticket_id=ticket.ticket_id)
    assert (await stub.GetTicket(request, metadata=md("patient"))).ticket.ticket_id == ticket.ticket_id
    assert (await stub.GetTicket(request, metadata=md("support_desk"))).ticket.ticket_id == ticket.ticket_id
    err = await _rpc_error(stub.GetTicket(request, metadata=md("next_of_kin")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await _rpc_error(stub.ListTickets(pb.ListTicketsRequest(), metadata=md("region_staff")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # The reporter's personnummer is patient data: the desk's read is in the access log.
    audit = shared_support.prefix + "_audit"
    from pymongo import AsyncMongoClient
    client = AsyncMongoClient(shared_support.mongo_uri)
    try:
        records = await client[audit]["access_records"].find(
            {"patient": "191212121212", "actor": "SE2321000057-4001", "service": "support"}).to_list()
    finally:
        await client.close()
    assert any(ticket.ticket_id in r["resource"] for r in records)


async def test_reporting_for_someone_else_is_for_the_desk_only(shared_support, md):
    someone = pb.Reporter(name="Kalle Kommun", kind=pb.REPORTER_KIND_MUNICIPALITY_STAFF,
                          person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID, id="SE2120000829-3999"),
                          organization=MUNI_A)
    err = await _rpc_error(file(shared_support, md("region_staff"), reporter=someone))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    ticket = await file(shared_support, md("support_desk"), reporter=someone)
    assert ticket.reporter.person.id == "SE2120000829-3999" and ticket.routing.queue.queue_id == "kommunens_it"
    assert ticket.history[0].actor == "SE2321000057-4001"
    # Issue #14 (8): a name the desk types in cannot carry control or direction characters.
    for name in ("Kalle\u202e Kommun", "Kalle\x00", "Kalle\r\nKommun"):
        spoofed = pb.Reporter(name=name, kind=someone.kind, person=someone.person, organization=MUNI_A)
        err = await _rpc_error(file(shared_support, md("support_desk"), reporter=spoofed))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("reporter.name:")


async def test_a_person_reporting_as_themselves_is_named_by_their_login_not_by_the_request(shared_support, md):
    """Issue #14 (9c): name and organisation come from the login. A request that names someone else
    (or another organisation, which decides which desk sees the ticket) is refused, naming the field."""
    staff, citizen = md(**STAFF_A), md("patient")
    for who, reporter, field in (
            (staff, pb.Reporter(name="Someone Else"), "reporter.name"),
            (staff, pb.Reporter(name="Someone Else", organization="Other kommun"), "reporter.name"),
            (staff, pb.Reporter(organization="Other kommun"), "reporter.organization"),
            (citizen, pb.Reporter(name="Someone Else"), "reporter.name"),
            # A citizen's login names no organisation: they cannot give one either.
            (citizen, pb.Reporter(organization="Other kommun"), "reporter.organization")):
        err = await _rpc_error(file(shared_support, who, reporter=reporter))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith(field + ":"), (
            reporter, err.details())
    # The login's own name (spelled loosely) or none at all: the ticket shows the login's.
    for reporter in (pb.Reporter(name="  mona   KOMMUN "), pb.Reporter()):
        ticket = await file(shared_support, staff, reporter=reporter)
        assert (ticket.reporter.name, ticket.reporter.organization) == ("Mona Kommun", MUNI_A)
    ticket = await file(shared_support, citizen)
    assert (ticket.reporter.name, ticket.reporter.organization) == ("Tolvan Tolvansson", "")


@pytest.mark.parametrize("fields, field", [
    (dict(problem=pb.PROBLEM_KIND_UNSPECIFIED), "problem"),
    (dict(description="   "), "description"),
    (dict(description="x" * 4001), "description"),
    (dict(participant_id="p1"), "participant_id"),
    (dict(request_rebook=True, problem=pb.PROBLEM_KIND_USAGE, meeting_id="m"), "request_rebook"),
    (dict(idempotency_key="bad key with spaces"), "idempotency_key"),
])
async def test_bad_reports_are_refused_naming_the_field(shared_support, md, fields, field):
    err = await _rpc_error(file(shared_support, md("region_staff"), **fields))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(field + ":")


async def test_a_retry_with_the_same_idempotency_key_returns_the_same_ticket(shared_support, md):
    who = md("region_staff")
    first = await file(shared_support, who, idempotency_key="k-1", description="Skrivaren skriver inte ut")
    again = await file(shared_support, who, idempotency_key="k-1", description="Skrivaren skriver inte ut")
    assert again.ticket_id == first.ticket_id and len(again.history) == 1
    err = await _rpc_error(file(shared_support, who, idempotency_key="k-1", description="Något annat"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The same key from another person is another report.
    other = await file(shared_support, md("municipality_staff"), idempotency_key="k-1",
                       description="Skrivaren skriver inte ut")
    assert other.ticket_id != first.ticket_id


async def test_desk_lists_by_queue_state_and_age_in_pages(support, md):
    stub, desk = support.stub("support"), md(**DESK_A)
    ids = [(await file(support, md(**STAFF_A), description=f"fel {i}")).ticket_id for i in range(5)]
    await file(support, md("region_staff"))  # another queue
    await stub.AssignTicket(pb.AssignTicketRequest(ticket_id=ids[0]), metadata=desk)

    seen, token = [], ""
    while True:
        page = await stub.ListTickets(pb.ListTicketsRequest(
            queue_id="kommunens_it", states=[pb.TICKET_STATE_NEW],
            page=common_pb2.PageRequest(page_size=2, page_token=token)), metadata=desk)
        assert len(page.tickets) <= 2
        seen += [t.ticket_id for t in page.tickets]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids[1:]))  # newest first, each once, the assigned one left out
    assigned = await stub.ListTickets(pb.ListTicketsRequest(states=[pb.TICKET_STATE_ASSIGNED]), metadata=desk)
    assert [t.ticket_id for t in assigned.tickets] == [ids[0]]
    assert assigned.tickets[0].assignee == DESK_A["person_id"]
    old = await stub.ListTickets(pb.ListTicketsRequest(min_age_seconds=3600), metadata=desk)
    assert list(old.tickets) == []
    err = await _rpc_error(stub.ListTickets(pb.ListTicketsRequest(page=common_pb2.PageRequest(page_token="!!")),
                                            metadata=desk))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_open_tickets_gauge_follows_the_database(support, md):
    await file(support, md(**STAFF_A))
    await file(support, md(**STAFF_A))
    tickets = support.running["support"].component.bindings[0].servicer._tickets
    await tickets.refresh_gauge()
    assert _metric("svpl_support_open_tickets", queue="kommunens_it", state="new") == 2
    assert _metric("svpl_support_open_tickets", queue="region_it_cosmic", state="new") == 0
