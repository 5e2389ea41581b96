"""The support desk sees and works only its own queues (the routing table's staffed_by):
the region's desk the region's queues, a municipality's IT only its own staff's tickets in
"your own workplace IT". Every desk x ticket x operation; paging with a scoped filter; an
escalated ticket moving from municipality A's desk to the region's; where a reporter without
an organisation lands; the reporter's organisation is their login's; a bad staffed_by."""

from __future__ import annotations

import grpc
import pytest
from pymongo import AsyncMongoClient
from svpl.common.v1 import common_pb2
from svpl.support.v1 import support_pb2 as pb

from services.support import routing_table
from services.support.routing_table import RoutingTableError
from tests.support.conftest import DESK_A, DESK_B, DESK_REGION, MUNI_A, STAFF_A, STAFF_B, file

DESKS = {"region": DESK_REGION, "muni_a": DESK_A, "muni_b": DESK_B}
# Who reports, and the queue the table sends it to (technical problem, filed as themselves).
REPORTERS = {
    "region_staff": ("region_staff", "region_it_teknik"),
    "patient": ("patient", "e_tjanster_1177"),
    "staff_a": (STAFF_A, "kommunens_it"),
    "staff_b": (STAFF_B, "kommunens_it"),
}
# The one desk that works each reporter's ticket.
WORKS = {"region_staff": "region", "patient": "region", "staff_a": "muni_a", "staff_b": "muni_b"}
OPERATIONS = ["get", "list", "assign", "comment", "escalate", "state"]


def _who(md, login):
    return md(login) if isinstance(login, str) else md(**login)


async def _outcome(call) -> tuple[grpc.StatusCode, str]:
    try:
        await call
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""


def _refused(code, details) -> bool:
    return code == grpc.StatusCode.PERMISSION_DENIED and "not in a queue you staff" in details


async def _operate(stub, op: str, ticket_id: str, who) -> tuple[grpc.StatusCode, str]:
    if op == "get":
        return await _outcome(stub.GetTicket(pb.GetTicketRequest(ticket_id=ticket_id), metadata=who))
    if op == "list":  # listed = allowed; left out of the caller's own list = refused
        page = await stub.ListTickets(pb.ListTicketsRequest(page=common_pb2.PageRequest(page_size=500)), metadata=who)
        listed = ticket_id in {t.ticket_id for t in page.tickets}
        return (grpc.StatusCode.OK, "") if listed else (grpc.StatusCode.PERMISSION_DENIED, "not in a queue you staff")
    if op == "assign":
        return await _outcome(stub.AssignTicket(pb.AssignTicketRequest(ticket_id=ticket_id), metadata=who))
    if op == "comment":
        return await _outcome(stub.CommentTicket(pb.CommentTicketRequest(ticket_id=ticket_id, text="Vi tittar på det"),
                                                 metadata=who))
    if op == "escalate":
        return await _outcome(stub.EscalateTicket(pb.EscalateTicketRequest(ticket_id=ticket_id, reason="Nätet ok"),
                                                  metadata=who))
    return await _outcome(stub.ChangeTicketState(pb.ChangeTicketStateRequest(
        ticket_id=ticket_id, state=pb.TICKET_STATE_WAITING), metadata=who))


async def test_each_desk_lists_reads_and_works_only_its_own_queues(shared_support, md):
    """Region desk vs municipality A's vs B's x a ticket in each queue x every operation. A fresh
    ticket per (reporter, operation); the desks that must be refused try first (and change nothing),
    then the one desk that works it."""
    stub = shared_support.stub("support")
    wrong = []
    for reporter, (login, queue) in REPORTERS.items():
        for op in OPERATIONS:
            ticket = await file(shared_support, _who(md, login))
            assert ticket.routing.queue.queue_id == queue
            order = sorted(DESKS, key=lambda desk: desk == WORKS[reporter])  # the allowed desk last
            for desk in order:
                code, details = await _operate(stub, op, ticket.ticket_id, md(**DESKS[desk]))
                allowed = desk == WORKS[reporter]
                # Allowed: done, or refused for another reason (region queues escalate nowhere).
                if allowed and (_refused(code, details) or code not in (
                        grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION)):
                    wrong.append((reporter, op, desk, "should be allowed", code.name, details))
                if allowed and code == grpc.StatusCode.FAILED_PRECONDITION and not (
                        op == "escalate" and queue != "kommunens_it"):
                    wrong.append((reporter, op, desk, "should be allowed", code.name, details))
                if not allowed and not _refused(code, details):
                    wrong.append((reporter, op, desk, "should be refused", code.name, details))
                if not allowed:  # a refusal changes nothing
                    now = (await stub.GetTicket(pb.GetTicketRequest(ticket_id=ticket.ticket_id),
                                                metadata=_who(md, login))).ticket
                    assert (now.state, len(now.history), now.routing.queue.queue_id) == (
                        pb.TICKET_STATE_NEW, 1, queue), (reporter, op, desk)
    assert not wrong, "\n".join(map(str, wrong))


async def test_a_refused_read_of_a_patients_ticket_is_not_logged_an_allowed_one_is(shared_support, md):
    stub = shared_support.stub("support")
    ticket = await file(shared_support, md("patient"), problem=pb.PROBLEM_KIND_CONNECTION)
    request = pb.GetTicketRequest(ticket_id=ticket.ticket_id)
    code, _ = await _outcome(stub.GetTicket(request, metadata=md(**DESK_A)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    await stub.GetTicket(request, metadata=md(**DESK_REGION))
    client = AsyncMongoClient(shared_support.mongo_uri)
    try:
        records = await client[shared_support.prefix + "_audit"]["access_records"].find(
            {"patient": "191212121212", "service": "support", "resource": {"$regex": ticket.ticket_id}}).to_list()
    finally:
        await client.close()
    assert {r["actor"] for r in records} == {DESK_REGION["person_id"]}


async def test_a_queue_filter_outside_the_callers_queues_is_refused(shared_support, md):
    stub = shared_support.stub("support")
    await file(shared_support, md(**STAFF_A))
    region_without_org = {**DESK_REGION, "organization": ""}
    for desk, queue in ((region_without_org, "kommunens_it"), (DESK_A, "region_it_teknik"),
                        (DESK_B, "e_tjanster_1177")):
        code, details = await _outcome(stub.ListTickets(pb.ListTicketsRequest(queue_id=queue), metadata=md(**desk)))
        assert code == grpc.StatusCode.PERMISSION_DENIED and f"you do not staff queue {queue}" in details
    # "Your own workplace IT" is staffed per organisation: the region's desk staffs it only for the
    # region's own reporters (none here), so it may ask and gets none of the municipalities' tickets.
    own = await stub.ListTickets(pb.ListTicketsRequest(queue_id="kommunens_it"), metadata=md(**DESK_REGION))
    assert list(own.tickets) == []
    # A municipality desk member the directory gives no organisation staffs nothing, and reads nothing.
    lost = md(**{**DESK_A, "person_id": "SE2120000829-4999", "organization": ""})
    code, details = await _outcome(stub.ListTickets(pb.ListTicketsRequest(), metadata=lost))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "you staff no support queue" in details
    ticket = await file(shared_support, md(**STAFF_A))
    code, _ = await _outcome(stub.GetTicket(pb.GetTicketRequest(ticket_id=ticket.ticket_id), metadata=lost))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def support_get(system, ticket_id, who):
    return (await system.stub("support").GetTicket(pb.GetTicketRequest(ticket_id=ticket_id), metadata=who)).ticket


async def _all_pages(stub, who, size: int, **filters) -> tuple[list[str], int]:
    seen, token, pages = [], "", 0
    while True:
        page = await stub.ListTickets(pb.ListTicketsRequest(
            page=common_pb2.PageRequest(page_size=size, page_token=token), **filters), metadata=who)
        assert len(page.tickets) <= size
        seen += [t.ticket_id for t in page.tickets]
        pages += 1
        token = page.page.next_page_token
        if not token:
            return seen, pages


async def test_paging_a_scoped_listing_returns_exactly_the_callers_tickets(support, md):
    stub = support.stub("support")
    filed: dict[str, list[str]] = {"a": [], "b": [], "region": []}
    # Interleaved, so every page boundary falls among other desks' tickets.
    for i in range(5):
        filed["a"].append((await file(support, md(**STAFF_A), description=f"A {i}")).ticket_id)
        if i < 3:
            filed["b"].append((await file(support, md(**STAFF_B), description=f"B {i}")).ticket_id)
        if i < 2:
            filed["region"].append((await file(support, md("region_staff"), description=f"R {i}")).ticket_id)
    newest_first = {k: list(reversed(v)) for k, v in filed.items()}
    assert await _all_pages(stub, md(**DESK_A), 2, queue_id="kommunens_it") == (newest_first["a"], 3)
    assert await _all_pages(stub, md(**DESK_A), 2) == (newest_first["a"], 3)
    assert await _all_pages(stub, md(**DESK_B), 2) == (newest_first["b"], 2)
    assert await _all_pages(stub, md(**DESK_REGION), 1) == (newest_first["region"], 2)
    # A state filter on top of the scope: A's desk assigns two; the rest of A's are still new.
    for tid in filed["a"][:2]:
        await stub.AssignTicket(pb.AssignTicketRequest(ticket_id=tid), metadata=md(**DESK_A))
    assert await _all_pages(stub, md(**DESK_A), 2, states=[pb.TICKET_STATE_NEW]) == (newest_first["a"][:3], 2)
    assert (await _all_pages(stub, md(**DESK_B), 2, states=[pb.TICKET_STATE_ASSIGNED]))[0] == []


async def test_escalation_hands_the_ticket_to_the_regions_desk(shared_support, md):
    stub = shared_support.stub("support")
    region, desk_a, desk_b, reporter = md(**DESK_REGION), md(**DESK_A), md(**DESK_B), md(**STAFF_A)
    ticket = await file(shared_support, reporter, description="Skrivaren i Jönköping skriver inte")
    tid = ticket.ticket_id
    get = pb.GetTicketRequest(ticket_id=tid)

    async def all_ids(who) -> list[str]:
        return (await _all_pages(stub, who, 500))[0]

    assert tid not in await all_ids(region)
    assert _refused(*await _outcome(stub.GetTicket(get, metadata=region)))
    await stub.EscalateTicket(pb.EscalateTicketRequest(ticket_id=tid, reason="Kommunens nät fungerar"),
                              metadata=desk_a)

    # The region's desk now sees and works it, with the whole history.
    assert tid in await all_ids(region)
    seen = (await stub.GetTicket(get, metadata=region)).ticket
    assert seen.routing.queue.queue_id == "region_it_teknik"
    assert [h.action for h in seen.history] == ["filed", "escalated"]
    await stub.AssignTicket(pb.AssignTicketRequest(ticket_id=tid), metadata=region)
    # Municipality A's desk keeps reading it (the whole history) but no longer lists or works it.
    assert tid not in await all_ids(desk_a)
    followed = (await stub.GetTicket(get, metadata=desk_a)).ticket
    assert [h.action for h in followed.history] == ["filed", "escalated", "assigned"]
    for op in ("assign", "comment", "escalate", "state"):
        assert _refused(*await _operate(stub, op, tid, desk_a)), op
    # Municipality B's desk never had it and still cannot touch it.
    for op in OPERATIONS:
        assert _refused(*await _operate(stub, op, tid, desk_b)), op
    # The reporter still reads and comments on their own ticket.
    await stub.CommentTicket(pb.CommentTicketRequest(ticket_id=tid, text="Tack"), metadata=reporter)
    final = (await stub.GetTicket(get, metadata=reporter)).ticket
    assert [h.action for h in final.history] == ["filed", "escalated", "assigned", "commented"]


async def test_a_reporter_without_an_organisation_reaches_region_it_not_an_unstaffed_queue(shared_support, md):
    """Municipality IT is found by the reporter's organisation: without one, no desk would ever
    see the ticket, so it goes where municipality IT escalates to (region IT support)."""
    ticket = await file(shared_support, md("municipality_staff"), problem=pb.PROBLEM_KIND_TECHNICAL)
    assert ticket.routing.queue.queue_id == "region_it_teknik" and ticket.routing.rule_id == "municipality-first-line"
    assert "ingen organisation angiven, därför till Regionens IT-support" in ticket.history[0].text
    seen = await support_get(shared_support, ticket.ticket_id, md(**DESK_REGION))
    assert seen.ticket_id == ticket.ticket_id


async def test_the_reporters_organisation_is_their_logins(shared_support, md):
    """It decides which municipality's desk sees the ticket, so a self-reporter cannot name another."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await file(shared_support, md(**STAFF_A), reporter=pb.Reporter(organization="Värnamo kommun"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("reporter.organization:")
    same = await file(shared_support, md(**STAFF_A), reporter=pb.Reporter(organization="  jönköpings KOMMUN"))
    assert same.reporter.organization == MUNI_A
    assert (await support_get(shared_support, same.ticket_id, md(**DESK_A))).ticket_id == same.ticket_id


def test_a_default_queue_staffed_by_the_reporters_organisation_is_refused_naming_it():
    with pytest.raises(RoutingTableError) as err:
        routing_table.parse("""
region: test
default_queue: own
queues:
  - {id: own, name: Egen IT, own_workplace: true, staffed_by: reporter_organization}
""", "own.yaml")
    assert "default_queue 'own' is staffed_by reporter_organization" in str(err.value)


def test_the_shipped_table_says_who_staffs_each_queue():
    table = routing_table.load(routing_table.path_for("rjl"))
    assert {q.id: q.staffed_by for q in table.queues} == {
        "sjukvardens_itstod": "region", "region_it_teknik": "region", "region_it_cosmic": "region",
        "e_tjanster_1177": "region", "kommunens_it": "reporter_organization"}
