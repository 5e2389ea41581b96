"""No report is lost: the ticket is on disk (j:true) before support calls anyone, so a
restart mid-request loses nothing; the retry (same idempotency key) returns the same
ticket and finishes what the restart cut short; what nobody retries, the sweep finishes.
Evidence that cannot be had is a note, never a lost report."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pymongo import AsyncMongoClient
from svpl.support.v1 import support_pb2 as pb
from svpl.support.v1 import support_pb2_grpc as pb_grpc

from devstack.embedded_db import free_port
from tests.polling import poll
from tests.support.conftest import file

ROOT = Path(__file__).resolve().parents[2]


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
    # Media is asked only about a meeting roster confirmed is the reporter's.
    assert "Anslutningskvalitet hämtades inte: mötet kunde inte bekräftas hos roster" in note
    assert list(ticket.evidence.quality) == [] and ticket.evidence.meeting_state == ""


async def test_the_sweep_finishes_evidence_a_restart_cut_short_when_nobody_retries(support, md, black_hole):
    await support.stop_service("support")
    await support.start_service("support", roster_address=black_hole, support_evidence_timeout_seconds=30)
    request = pb.FileReportRequest(problem=pb.PROBLEM_KIND_CONNECTION, description="Ljudet hackar",
                                   meeting_id="m-sweep")
    call = asyncio.ensure_future(support.stub("support").FileReport(request, metadata=md("region_staff")))
    client = AsyncMongoClient(support.mongo_uri)
    tickets = client[f"{support.prefix}_support"]["tickets"]
    try:
        stored = await poll(lambda: tickets.find_one({"meeting_id": "m-sweep"}), 15, "the ticket stored")
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


def _support_process(system, roster: str, port: int) -> subprocess.Popen:
    """`python -m services.support` as its own process, on the test system's database and identity."""
    env = {**os.environ, **{f"SVPL_{k.upper()}": str(v) for k, v in dict(
        mongodb_uri=system.mongo_uri, mongodb_database=f"{system.prefix}_support",
        audit_database=f"{system.prefix}_audit", grpc_port=port, metrics_port=0, log_level="WARNING",
        service_token=system.tokens["support"], identity_address=system.address("identity"),
        roster_address=roster, media_address=roster, booking_address=roster,
        support_evidence_timeout_seconds=30).items()}}
    return subprocess.Popen([sys.executable, "-m", "services.support"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _serving(channel) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="svpl.support.v1.SupportService"), timeout=0.5)
    except grpc.aio.AioRpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_no_report_is_lost_when_the_support_process_is_killed_mid_request(system_factory, md, black_hole):
    system = await system_factory(["identity"])
    port = free_port()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.SupportServiceStub(channel)
    who = md("region_staff")
    request = pb.FileReportRequest(problem=pb.PROBLEM_KIND_CONNECTION, description="Ljudet försvinner",
                                   meeting_id="m-kill", idempotency_key="kill-1")
    client = AsyncMongoClient(system.mongo_uri)
    tickets = client[f"{system.prefix}_support"]["tickets"]
    process = _support_process(system, black_hole, port)
    try:
        await poll(lambda: _serving(channel), 20, "support serving")
        call = asyncio.ensure_future(stub.FileReport(request, metadata=who))
        stored = await poll(lambda: tickets.find_one({"meeting_id": "m-kill"}), 15, "the ticket stored")
        process.kill()  # kill -9, while it waits for roster
        process.wait(10)
        with pytest.raises(grpc.aio.AioRpcError):
            await call

        # Back up; roster now refuses at once (nothing listens at its address).
        process = _support_process(system, f"127.0.0.1:{free_port()}", port)
        await poll(lambda: _serving(channel), 20, "support serving")
        desk = await stub.ListTickets(pb.ListTicketsRequest(), metadata=md("support_desk"))
        assert [t.ticket_id for t in desk.tickets] == [stored["_id"]]
        again = (await stub.FileReport(request, metadata=who)).ticket  # the client's retry
        assert again.ticket_id == stored["_id"] and "roster svarade inte" in again.evidence.note
        assert await tickets.count_documents({}) == 1
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)
        await channel.close()
        await client.close()
