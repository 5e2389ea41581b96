"""No report is lost: the ticket is on disk (j:true) before support calls anyone, so a
restart mid-request loses nothing; the retry (same idempotency key) returns the same
ticket and finishes what the restart cut short; what nobody retries, the sweep finishes.
Evidence that cannot be had is a note, never a lost report."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest
from pymongo import AsyncMongoClient
from svpl.support.v1 import support_pb2 as pb

from tests.booking.conftest import eventually
from tests.support.conftest import file


@pytest.fixture
async def black_hole():
    """A TCP port that accepts connections and never answers: a service hung mid-call."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader, writer):
        held.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_report_about_a_meeting_is_filed_even_when_roster_and_media_are_unreachable(shared_support, md):
    # Nothing listens at roster's and media's addresses in this system.
    ticket = await file(shared_support, md("region_staff"), problem=pb.PROBLEM_KIND_CONNECTION,
                        meeting_id="m-unreachable", participant_id="p-1")
    assert ticket.state == pb.TICKET_STATE_NEW and ticket.evidence.meeting_id == "m-unreachable"
    note = ticket.evidence.note
    assert "Mötets läge saknas: roster svarade inte" in note
    assert "Anslutningskvalitet saknas: media svarade inte" in note
    assert list(ticket.evidence.quality) == [] and ticket.evidence.meeting_state == ""


async def test_no_report_is_lost_when_support_restarts_mid_request(support, md, black_hole):
    # Roster hangs, so the request is held inside support after the ticket was written.
    await support.stop_service("support")
    await support.start_service("support", roster_address=black_hole, support_evidence_timeout_seconds=30)
    who = md("municipality_staff")
    request = pb.FileReportRequest(problem=pb.PROBLEM_KIND_CONNECTION, description="Bilden fryser hela tiden",
                                   meeting_id="m-restart", participant_id="p-9", idempotency_key="restart-1")
    call = asyncio.ensure_future(support.stub("support").FileReport(request, metadata=who))

    client = AsyncMongoClient(support.mongo_uri)
    tickets = client[f"{support.prefix}_support"]["tickets"]
    try:
        stored = await eventually(lambda: tickets.find_one({"meeting_id": "m-restart"}))
        assert not call.done()  # support has not answered yet: it is waiting for roster
        assert stored["evidence_status"] == "pending"

        await support.stop_service("support")  # the restart, mid-request
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        await support.start_service("support")  # back, roster now refuses at once

        # The client retries with its key: the same ticket, its evidence finished (with a note).
        again = (await support.stub("support").FileReport(request, metadata=who)).ticket
        assert again.ticket_id == stored["_id"]
        assert await tickets.count_documents({"meeting_id": "m-restart"}) == 1
        assert "roster svarade inte" in again.evidence.note
        desk = await support.stub("support").ListTickets(pb.ListTicketsRequest(queue_id="kommunens_it"),
                                                         metadata=md("support_desk"))
        assert [t.ticket_id for t in desk.tickets] == [stored["_id"]]
    finally:
        await client.close()


async def test_the_sweep_finishes_evidence_a_restart_cut_short_when_nobody_retries(support, md, black_hole):
    await support.stop_service("support")
    await support.start_service("support", roster_address=black_hole, support_evidence_timeout_seconds=30)
    request = pb.FileReportRequest(problem=pb.PROBLEM_KIND_CONNECTION, description="Ljudet hackar",
                                   meeting_id="m-sweep")
    call = asyncio.ensure_future(support.stub("support").FileReport(request, metadata=md("region_staff")))
    client = AsyncMongoClient(support.mongo_uri)
    tickets = client[f"{support.prefix}_support"]["tickets"]
    try:
        stored = await eventually(lambda: tickets.find_one({"meeting_id": "m-sweep"}))
        await support.stop_service("support")
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        running = await support.start_service("support")
        domain = running.component.bindings[0].servicer._tickets
        assert await domain.sweep(dt.timedelta(0)) == 1
        ticket = (await support.stub("support").GetTicket(pb.GetTicketRequest(ticket_id=stored["_id"]),
                                                          metadata=md("support_desk"))).ticket
        assert ticket.evidence.note.startswith("Underlaget hämtades i efterhand")
        assert (await tickets.find_one({"_id": stored["_id"]}))["followup"] is False
    finally:
        await client.close()
