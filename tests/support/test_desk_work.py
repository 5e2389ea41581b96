"""The desk's work beyond filing: taking a ticket (only one desk member can), the public report
(no login: a short number, no meeting data), a reporter's own reports without the desk's internal
notes, the live change feed (only one's own tickets), and the listing's filters and sorting."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import grpc
import pytest
from svpl.support.v1 import support_pb2 as pb

from devstack.harness import as_token
from services.support import model
from tests.polling import poll
from tests.support.conftest import DESK_A, DESK_B, MUNI_A, STAFF_A, STAFF_B, file

NUMBER = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")


async def _rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def test_ticket_numbers_are_short_random_and_read_back_as_typed():
    numbers = {model.new_number() for _ in range(2000)}
    assert len(numbers) == 2000 and all(NUMBER.match(n) for n in numbers)
    n = model.new_number()
    assert model.normalised_number(n.lower().replace("-", " ")) == n
    assert model.normalised_number("O1IL-2345") == "0111-2345"  # the letters a person mixes up with digits
    assert model.normalised_number("1234") == "" and model.normalised_number("ABCD-EFGU") == ""


async def test_two_desk_members_taking_one_ticket_at_once_one_wins(shared_support, md):
    stub = shared_support.stub("support")
    ticket = await file(shared_support, md("region_staff"))
    other_desk = md(person_id="SE2321000057-4009", id_kind="hsa_id", name="Siv Support", method="siths",
                    roles=["staff", "region_staff", "support_desk"], organization="Region Jönköpings län")
    request = pb.TakeTicketRequest(ticket_id=ticket.ticket_id)
    results = await asyncio.gather(stub.TakeTicket(request, metadata=md("support_desk")),
                                   stub.TakeTicket(request, metadata=other_desk), return_exceptions=True)
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "redan tagits av " + won[0].ticket.assignee_name in lost[0].details()
    after = (await stub.GetTicket(pb.GetTicketRequest(ticket_id=ticket.ticket_id), metadata=md("support_desk"))).ticket
    assert [h.action for h in after.history] == ["filed", "assigned"]
    # Taking it again is no change for the one who has it.
    again = await stub.TakeTicket(request, metadata=md("support_desk") if won[0].ticket.assignee_name == "Sam Support"
                                  else other_desk)
    assert len(again.ticket.history) == 2


async def test_a_public_report_gets_a_short_number_and_the_queues_contact_and_no_meeting_data(shared_support, md,
                                                                                            service_token):
    stub, gateway = shared_support.stub("support"), as_token(service_token("gateway"))
    reply = await stub.FilePublicReport(pb.FilePublicReportRequest(
        reporter_kind=pb.REPORTER_KIND_REGION_STAFF, name="Rut Ny", contact="070-123 45 67",
        problem=pb.PROBLEM_KIND_NETWORK_PASSWORD, description="Lösenordet efter SITHS-kortet fungerar inte",
        dial_in_code="123 456"), metadata=gateway)
    assert NUMBER.match(reply.number)
    assert reply.queue.queue_id == "region_it_teknik" and reply.queue.contact_text == "Ring 010 241 41 50, val 1 (Teknik)"
    found = (await stub.ListTickets(pb.ListTicketsRequest(number=reply.number.lower()),
                                    metadata=md("support_desk"))).tickets
    assert len(found) == 1
    t = found[0]
    assert t.public_report and t.dial_in_code == "123 456" and not t.meeting_id and not t.evidence.meeting_id
    assert (t.reporter.name, t.reporter.contact, t.reporter.person.id) == ("Rut Ny", "070-123 45 67", "")
    # Municipality staff name their municipality from the table's list: it reaches that municipality's IT.
    muni = await stub.FilePublicReport(pb.FilePublicReportRequest(
        reporter_kind=pb.REPORTER_KIND_MUNICIPALITY_STAFF, name="Mia Muni", organization="jönköpings  kommun",
        contact="mia@example.se", problem=pb.PROBLEM_KIND_TECHNICAL, description="Kommer inte till mötet"),
        metadata=gateway)
    assert muni.queue.queue_id == "kommunens_it"
    seen_a = (await stub.ListTickets(pb.ListTicketsRequest(number=muni.number), metadata=md(**DESK_A))).tickets
    seen_b = (await stub.ListTickets(pb.ListTicketsRequest(number=muni.number), metadata=md(**DESK_B))).tickets
    assert [x.reporter.organization for x in seen_a] == [MUNI_A] and seen_b == []
    # A person cannot file a "public" report, nor a bad one; each refusal names the field.
    err = await _rpc_error(stub.FilePublicReport(pb.FilePublicReportRequest(), metadata=md("region_staff")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    for fields, field in (
        (dict(organization="Narnia kommun", reporter_kind=pb.REPORTER_KIND_MUNICIPALITY_STAFF), "organization"),
        (dict(dial_in_code="12ab"), "dial_in_code"),
        (dict(name=""), "name"),
        (dict(name="A\u202eB"), "name"),
        (dict(reporter_kind=pb.REPORTER_KIND_UNSPECIFIED), "reporter_kind"),
        (dict(description="x" * 5000), "description"),
    ):
        request = dict(reporter_kind=pb.REPORTER_KIND_CITIZEN, name="Ann", contact="070", description="Fel",
                       problem=pb.PROBLEM_KIND_OTHER) | fields
        err = await _rpc_error(stub.FilePublicReport(pb.FilePublicReportRequest(**request), metadata=gateway))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.details(), (fields, err.details())


async def test_the_reporter_sees_own_reports_without_the_desks_internal_notes(shared_support, md):
    stub = shared_support.stub("support")
    ticket = await file(shared_support, md(**STAFF_B), description="Skrivaren skriver inte ut kallelsen")
    desk_b = md(**DESK_B)
    await stub.CommentTicket(pb.CommentTicketRequest(ticket_id=ticket.ticket_id, text="Internt: trasig toner",
                                                     internal=True), metadata=desk_b)
    await stub.CommentTicket(pb.CommentTicketRequest(ticket_id=ticket.ticket_id, text="Vi byter tonern i dag"),
                             metadata=desk_b)
    mine = (await stub.ListMyTickets(pb.ListMyTicketsRequest(), metadata=md(**STAFF_B))).tickets
    own = next(t for t in mine if t.ticket_id == ticket.ticket_id)
    assert [h.text for h in own.history if h.action == "commented"] == ["Vi byter tonern i dag"]
    assert all(t.reporter.person.id == STAFF_B["person_id"] for t in mine)
    assert ticket.ticket_id not in {t.ticket_id for t in (await stub.ListMyTickets(
        pb.ListMyTicketsRequest(), metadata=md(**STAFF_A))).tickets}
    desk_view = (await stub.GetTicket(pb.GetTicketRequest(ticket_id=ticket.ticket_id), metadata=desk_b)).ticket
    assert [h.internal for h in desk_view.history if h.action == "commented"] == [True, False]
    # A reporter writes no internal notes.
    err = await _rpc_error(stub.CommentTicket(pb.CommentTicketRequest(ticket_id=ticket.ticket_id, text="x",
                                                                      internal=True), metadata=md(**STAFF_B)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_change_feed_sends_only_the_callers_own_tickets(shared_support, md):
    stub = shared_support.stub("support")
    seen: dict[str, list[str]] = {"a": [], "b": []}

    async def follow(name, metadata):
        async for event in stub.WatchTickets(pb.WatchTicketsRequest(), metadata=metadata):
            seen[name].append(event.ticket_id if event.kind == pb.TICKET_EVENT_KIND_CHANGED else "snapshot")

    tasks = [asyncio.create_task(follow("a", md(**DESK_A))), asyncio.create_task(follow("b", md(**DESK_B)))]
    try:
        await poll(lambda: seen["a"] and seen["b"], 10, "both feeds open")
        ticket = await file(shared_support, md(**STAFF_A))
        await stub.TakeTicket(pb.TakeTicketRequest(ticket_id=ticket.ticket_id), metadata=md(**DESK_A))
        await poll(lambda: seen["a"].count(ticket.ticket_id) >= 2, 10, "desk A sees the new ticket and its taking")
        other = await file(shared_support, md(**STAFF_B))
        await poll(lambda: other.ticket_id in seen["b"], 10, "desk B sees its own municipality's ticket")
        assert ticket.ticket_id not in seen["b"] and other.ticket_id not in seen["a"]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_desk_lists_oldest_first_and_by_problem_kind(support, md):
    stub, desk = support.stub("support"), md("support_desk")
    filed = [await file(support, md("region_staff"), problem=kind) for kind in (
        pb.PROBLEM_KIND_TECHNICAL, pb.PROBLEM_KIND_CONNECTION, pb.PROBLEM_KIND_TECHNICAL)]
    newest = (await stub.ListTickets(pb.ListTicketsRequest(), metadata=desk)).tickets
    oldest = (await stub.ListTickets(pb.ListTicketsRequest(oldest_first=True), metadata=desk)).tickets
    assert [t.ticket_id for t in oldest] == [t.ticket_id for t in filed] == [t.ticket_id for t in newest][::-1]
    technical = (await stub.ListTickets(pb.ListTicketsRequest(problems=[pb.PROBLEM_KIND_TECHNICAL],
                                                              oldest_first=True), metadata=desk)).tickets
    assert [t.ticket_id for t in technical] == [filed[0].ticket_id, filed[2].ticket_id]
    # Paging oldest first keeps the order across pages.
    first = await stub.ListTickets(pb.ListTicketsRequest(oldest_first=True, page={"page_size": 2}), metadata=desk)
    rest = await stub.ListTickets(pb.ListTicketsRequest(oldest_first=True, page={
        "page_size": 2, "page_token": first.page.next_page_token}), metadata=desk)
    assert [t.ticket_id for t in [*first.tickets, *rest.tickets]] == [t.ticket_id for t in filed]
    err = await _rpc_error(stub.ListTickets(pb.ListTicketsRequest(number="nope"), metadata=desk))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "number" in err.details()


async def test_the_oldest_waiting_ticket_per_queue_is_a_gauge(support, md):
    from prometheus_client import REGISTRY

    first = await file(support, md("region_staff"))
    second = await file(support, md("region_staff"))
    tickets = support.running["support"].component.bindings[0].servicer._tickets
    await tickets.refresh_gauge()
    age = REGISTRY.get_sample_value("svpl_support_oldest_open_ticket_age_seconds", {"queue": "region_it_teknik"})
    assert 0 <= age < 60
    assert REGISTRY.get_sample_value("svpl_support_oldest_open_ticket_age_seconds", {"queue": "region_it_cosmic"}) == 0
    await support.stub("support").ChangeTicketState(pb.ChangeTicketStateRequest(
        ticket_id=first.ticket_id, state=pb.TICKET_STATE_RESOLVED, note="klart"), metadata=md("support_desk"))
    await tickets.refresh_gauge()
    now = dt.datetime.now(dt.timezone.utc)
    # The oldest still waiting is now the second ticket.
    after = REGISTRY.get_sample_value("svpl_support_oldest_open_ticket_age_seconds", {"queue": "region_it_teknik"})
    assert abs(after - (now - second.created_at.ToDatetime(dt.timezone.utc)).total_seconds()) < 0.5
    assert second.created_at.ToDatetime() > first.created_at.ToDatetime()
