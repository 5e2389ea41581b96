"""kill -9 each service in turn (identity, booking, roster, support, the gateway) while a client
runs whole meeting flows (book -> register -> open -> start -> admit -> report -> end), restart
it: the client sees UNAVAILABLE (a connection error or a 503 problem at the gateway) and
succeeds on retry, and nothing is half-done — every acknowledged booking exists once with its
room, every participant is registered once, every meeting ended, one ticket per report key,
and every invitation reaches the receiver exactly once."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import random

import grpc
import pytest
from svpl.booking.v1 import booking_pb2 as bpb
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2 as rpb
from svpl.support.v1 import support_pb2 as spb

from devstack.harness import as_token
from devstack.stack import Stack
from tests.booking.conftest import COORDINATOR, UNIT
from tests.booking.cosmic_receiver import CosmicReceiver
from tests.conftest import PEOPLE
from tests.faults.service_flow import STAFF, FlowClient, GrpcFlowClient, HttpFlowClient
from tests.polling import poll

FAST = {"SVPL_OUTBOX_POLL_SECONDS": "0.05", "SVPL_OUTBOX_LEASE_SECONDS": "1", "SVPL_OUTBOX_BACKOFF_BASE_SECONDS": "0.05",
        "SVPL_OUTBOX_BACKOFF_CAP_SECONDS": "0.3", "SVPL_MEETING_RETRY_DELAY_SECONDS": "0.2",
        "SVPL_DEVELOPMENT_LOGIN": "true", "SVPL_LOGIN_RATE_PER_MINUTE": "100000", "SVPL_LOG_LEVEL": "WARNING",
        "SVPL_DB_CHECK_SECONDS": "0.2"}


TRANSACTION_LIFETIME = 60


@pytest.fixture(scope="module")
async def world(tmp_path_factory):
    receiver = await CosmicReceiver().start()
    stack = Stack(tmp_path_factory.mktemp("killed"), extra_env={**FAST, "SVPL_COSMIC_LINK_ENABLED": "true",
                                                                    "SVPL_COSMIC_LINK_URL": receiver.url})
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, lambda: stack.start(timeout=60))
        from services.identity.tokens import KeyRing

        ring = KeyRing.load(stack.keys_dir)
        tokens = {who: as_token(ring.issue_session_token(assurance="high", **PEOPLE[who],
                                                         **({"unit": UNIT} if who == "coordinator" else {}))[0])
                  for who in ["coordinator", "region_staff", "support_desk"]}
        yield stack, receiver, tokens
    finally:
        await loop.run_in_executor(None, stack.stop)
        await receiver.stop()


# (service killed, the flow step during which it dies, the client: the services' own gRPC
# client, or a browser's HTTP client through the gateway).
CASES = [("identity", "register", "grpc"), ("booking", "book", "grpc"), ("roster", "book", "grpc"),
         ("roster", "end", "grpc"), ("support", "report", "grpc"), ("gateway", "register", "http"),
         ("roster", "register", "http")]


@pytest.mark.parametrize("service,step,via", CASES, ids=[f"{s}-at-{st}-{v}" for s, st, v in CASES])
async def test_kill_9_mid_flow_then_restart(world, service, step, via):
    stack, receiver, tokens = world
    addresses = {n: stack.procs[n].address for n in ("booking", "roster", "support")}
    client: FlowClient = (HttpFlowClient(f"http://{stack.procs['gateway'].address}") if via == "http"
                          else GrpcFlowClient(addresses, tokens))
    log_sizes = {n: p.log_path.stat().st_size if p.log_path.exists() else 0 for n, p in stack.procs.items()}
    runner = asyncio.create_task(client.loop())
    loop = asyncio.get_running_loop()
    try:
        await poll(lambda: client.completed or runner.done(), 30, "a first flow (to time its steps)")
        reached = asyncio.create_task(client.at_step(step))
        await asyncio.wait([reached, runner], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # the flow failed before the kill: say why
        assert reached.done(), f"the flow never reached {step}"
        # Land the kill anywhere in the call: before the service applied it, or after (the
        # answer is lost), by how long the step took last time. Not a wait for anything.
        await asyncio.sleep(random.uniform(0, 1.2 * client.took[step]))
        stack.procs[service].process.kill()
        stack.procs[service].process.wait()
        killed_in = len(client.flows)

        def cut_short():  # the client noticed: a retried failure, or (roster) a booking left pending
            return client.retried or client.pending_seen or runner.done()
        await poll(cut_short, 20, f"the client noticing {service} gone")
        assert not runner.done(), runner.exception()
        stack.start_process(service)
        await loop.run_in_executor(None, lambda: stack.wait_healthy(service, 30))
        # Bounded by the database's transaction lifetime: a kill inside a transaction leaves it
        # open, holding its documents, until the database reaps it (MongoDB's
        # transactionLifetimeLimitSeconds, 60 s; SecantusDB the same); a retry touching the same
        # documents (the same idempotency key) waits for that, then goes through.
        await poll(lambda: len(client.flows) > killed_in + 1 or runner.done(), TRANSACTION_LIFETIME + 20,
                   lambda: f"the cut flow and one more completing after the restart (at {client.step}, "
                           f"retried {dict(client.retried)})")
        client.stop = True
        await asyncio.wait_for(runner, 30)
    finally:
        client.stop = True
        if not runner.done():
            runner.cancel()
        await client.close()
    print(f"{service} killed at {step}: {len(client.flows)} flows, retried {dict(client.retried)}, "
          f"bookings acknowledged with the room pending: {client.pending_seen}")  # shown with -s
    # The client saw the service go away, and got through on retry.
    if service == "gateway":
        assert client.saw("connection error") + client.saw("503") > 0, client.retried
    elif via == "http":  # a service behind the gateway: a 503 problem (application/problem+json)
        assert client.saw("503") > 0, client.retried
    else:
        # Or, with roster (or identity, which roster needs to make a room) away, a booking
        # acknowledged with its room pending, which the booking's outbox then completed.
        assert client.saw("UNAVAILABLE") or (service in ("roster", "identity") and client.pending_seen), \
            client.retried
    assert all(f.ended for f in client.flows)
    for name, proc in stack.procs.items():  # no service answered INTERNAL / 500 meanwhile
        with open(proc.log_path, "rb") as log:
            log.seek(log_sizes[name])
            new = log.read().decode(errors="replace")
        assert "unhandled error" not in new, f"{name}: {new[-3000:]}"
    for name, proc in stack.procs.items():
        assert proc.process.poll() is None, f"{name} died (crash loop?); see {proc.log_path}"
    await nothing_half_done(stack, receiver, tokens, client.flows)


async def nothing_half_done(stack: Stack, receiver: CosmicReceiver, tokens: dict, flows: list) -> None:
    async with _stubs(stack) as (booking, roster, support):
        coordinator, desk = tokens["coordinator"], tokens["support_desk"]
        bookings = collections.defaultdict(list)
        page = ""
        while True:
            reply = await booking.ListBookings(bpb.ListBookingsRequest(
                coordinator_hsa_id=COORDINATOR, page=common_pb2.PageRequest(page_size=100, page_token=page)),
                metadata=coordinator)
            for b in reply.bookings:
                bookings[b.start.ToDatetime(dt.timezone.utc)].append(b)
            page = reply.page.next_page_token
            if not page:
                break
        meetings: collections.Counter[str] = collections.Counter()
        page = ""
        while True:
            reply = await roster.ListMyMeetings(rpb.ListMyMeetingsRequest(
                page=common_pb2.PageRequest(page_size=100, page_token=page)), metadata=coordinator)
            meetings.update(m.booking_id for m in reply.meetings)
            page = reply.page.next_page_token
            if not page:
                break
        tickets = collections.defaultdict(list)
        page = ""
        while True:
            reply = await support.ListTickets(spb.ListTicketsRequest(
                page=common_pb2.PageRequest(page_size=100, page_token=page)), metadata=desk)
            for t in reply.tickets:
                tickets[t.meeting_id].append(t.ticket_id)
            page = reply.page.next_page_token
            if not page:
                break
        for f in flows:
            assert [b.booking_id for b in bookings[f.start]] == [f.booking_id], f"{f.tag}: one booking per key"
            b = (await booking.GetBooking(bpb.GetBookingRequest(booking_id=f.booking_id), metadata=coordinator)).booking
            assert [i.party.name for i in b.invitations] == [f.tag], f"{f.tag}: one invitation per party"
            assert b.meeting_id == f.meeting_id and not b.meeting_pending, f"{f.tag}: the booking has its room"
            assert meetings[f.booking_id] == 1, f"{f.tag}: one meeting per booking"
            m = (await roster.GetMeeting(rpb.GetMeetingRequest(meeting_id=f.meeting_id), metadata=coordinator)).meeting
            assert m.state == rpb.MEETING_STATE_ENDED and m.booking_id == f.booking_id
            people = (await roster.ListParticipants(rpb.ListParticipantsRequest(meeting_id=f.meeting_id),
                                                    metadata=coordinator)).participants
            for who, _ in STAFF:
                mine = [p.participant_id for p in people if p.person.id == PEOPLE[who]["person_id"]]
                assert mine == [f.participant_ids[who]], f"{f.tag}: {who} registered once"
            assert tickets[f.meeting_id] == [f.ticket_id], f"{f.tag}: one ticket for one report key"

    # The outbox delivers every invitation, once: one accepted message per flow's party.
    wanted = {f"cosmic:{f.tag}" for f in flows}

    def delivered():
        return wanted <= {m.get("recipient") for m in receiver.accepted.values()}
    await poll(delivered, 30, "every invitation delivered")
    got = collections.Counter(m.get("recipient") for m in receiver.accepted.values())
    assert {r: got[r] for r in wanted} == {r: 1 for r in wanted}


class _stubs:
    def __init__(self, stack: Stack) -> None:
        from svpl.booking.v1 import booking_pb2_grpc
        from svpl.roster.v1 import roster_pb2_grpc
        from svpl.support.v1 import support_pb2_grpc

        self.channels = [grpc.aio.insecure_channel(stack.procs[n].address) for n in ("booking", "roster", "support")]
        self.stubs = (booking_pb2_grpc.BookingServiceStub(self.channels[0]),
                      roster_pb2_grpc.RosterServiceStub(self.channels[1]),
                      support_pb2_grpc.SupportServiceStub(self.channels[2]))

    async def __aenter__(self):
        return self.stubs

    async def __aexit__(self, *exc):
        for c in self.channels:
            await c.close()
