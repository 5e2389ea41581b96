"""kill -9 the database during a stream of bookings, restart it: every acknowledged booking
is there, and every invitation reaches the receiver exactly once."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from svpl.booking.v1 import booking_pb2 as pb

from devstack.embedded_db import EmbeddedMongo
from devstack.harness import System, as_token
from tests.booking.conftest import FAST_OUTBOX, create_request, party
from tests.booking.cosmic_receiver import CosmicReceiver
from tests.polling import poll

TOTAL = 16
KILL_AFTER = 6


@pytest.fixture
async def own_database(tmp_path):
    db = EmbeddedMongo(tmp_path / "db").start()
    yield db
    db.stop()


async def test_acknowledged_bookings_and_invitations_survive_kill_9(own_database, keys_dir, service_token,
                                                                    person_token):
    receiver = await CosmicReceiver().start()
    tokens = {name: service_token(name) for name in ["identity", "media", "roster", "booking", "support", "gateway"]}
    system = System(own_database.uri, keys_dir, tokens,
                    overrides={"booking": {"cosmic_link_url": receiver.url, **FAST_OUTBOX}})
    await system.start(["identity", "roster", "booking"])
    coordinator = as_token(person_token("coordinator", unit="SE2321000057-U100"))
    booking = system.stub("booking")
    acknowledged: dict[str, pb.Booking] = {}
    unavailable_seen = 0

    async def create_until_acknowledged(i: int) -> None:
        nonlocal unavailable_seen
        request = create_request(key=uuid.uuid4().hex, parties=[party(f"Kommun {i}")])
        while True:  # a client retries with the same idempotency key until it gets an answer
            try:
                reply = await booking.CreateBooking(request, metadata=coordinator, timeout=10)
                acknowledged[reply.booking.booking_id] = reply.booking
                return
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                      grpc.StatusCode.ABORTED), exc.details()
                unavailable_seen += 1
                await asyncio.sleep(0.1)  # client back-off between retries

    try:
        for i in range(TOTAL):
            if i == KILL_AFTER:
                own_database.kill()  # kill -9 while the outbox still holds undelivered invitations
                restart = asyncio.get_running_loop().run_in_executor(None, own_database.start)
                pending = asyncio.create_task(create_until_acknowledged(i))
                await restart
                await pending
                continue
            await create_until_acknowledged(i)

        assert len(acknowledged) == TOTAL
        for booking_id in acknowledged:
            reply = await booking.GetBooking(pb.GetBookingRequest(booking_id=booking_id), metadata=coordinator)
            assert reply.booking.booking_id == booking_id
            assert reply.booking.meeting_id, "every SIP video booking has its room"

        async def all_delivered():
            return len(receiver.accepted) == TOTAL

        await poll(all_delivered, 60, "every invitation delivered")
        assert len(receiver.accepted) == TOTAL  # one message per invitation: none lost, none doubled
        assert {m.get("recipient") for m in receiver.accepted.values()} == {
            f"cosmic:kommun-{i}" for i in range(TOTAL)
        }
    finally:
        await system.stop()
        await receiver.stop()
