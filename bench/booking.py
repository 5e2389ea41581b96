"""make bench-booking: CreateBooking through gRPC (identity + roster + booking in-process on
the embedded database) next to the raw pymongo operations the same booking needs, on the
same server, in the same run. Prints bookings/s, p50/p99, and the ratios. Not a test.

Two cases: an ordinary visit (no room) and a SIP video visit (roster.CreateMeeting), both
with two parties (one secure message, one phone task).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
import uuid
from pathlib import Path

from google.protobuf import timestamp_pb2
from svpl.booking.v1 import booking_pb2 as pb

from bench.timing import measure, pct
from devstack.embedded_db import EmbeddedMongo
from devstack.harness import ORDER, System
from services.identity.tokens import KeyRing
from services.runtime import auth, mongo
from services.runtime.outbox import in_transaction

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
CONCURRENCY = 8
ROUNDS = 5
UNIT, COORDINATOR = "SE2321000057-U100", "SE2321000057-1001"
SIP, VIDEO = "Samordnad individuell plan besök", "Distanskontakt video team"


def _request(video: bool) -> pb.CreateBookingRequest:
    start = timestamp_pb2.Timestamp()
    start.FromDatetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3))
    return pb.CreateBookingRequest(
        idempotency_key=uuid.uuid4().hex, patient_personnummer="191212121212", start=start, duration_minutes=60,
        booking_unit_hsa_id=UNIT, coordinator_hsa_id=COORDINATOR,
        care_service=SIP if video else "Mottagningsbesök", contact_type=VIDEO if video else "Besök",
        parties=[pb.Party(kind=pb.PARTY_KIND_MUNICIPALITY_UNIT, name="Hemtjänst", channel=pb.CHANNEL_SECURE_MESSAGING,
                          address="cosmic:hemtjanst"),
                 pb.Party(kind=pb.PARTY_KIND_INPATIENT_WARD, name="Avd 7", channel=pb.CHANNEL_PHONE,
                          address="036-100 00")])


async def _raw_booking(client, db, audit, video: bool) -> None:
    """The database operations booking.CreateBooking performs, as plain pymongo calls."""
    bookings, invitations, tasks, outbox = db.bookings, db.invitations, db.phone_tasks, db.outbox
    booking_id, now = uuid.uuid4().hex, dt.datetime.now(dt.timezone.utc)
    invs = [{"_id": uuid.uuid4().hex, "booking_id": booking_id, "party": {"channel": c}, "awaiting_meeting": True,
             "message_id": "", "created_at": now} for c in ("secure_messaging", "phone")]
    doc = {"_id": booking_id, "patient": "191212121212", "start": now, "booking_unit": UNIT,
           "coordinator": COORDINATOR, "meeting_pending": video, "status": "booked", "created_at": now}
    await bookings.find_one({"_id": booking_id})

    async def dispatch(session):
        await tasks.insert_one({"_id": uuid.uuid4().hex, "booking_id": booking_id, "instructions": "x" * 300},
                               session=session)
        await invitations.update_one({"_id": invs[1]["_id"]}, {"$set": {"awaiting_meeting": False}}, session=session)
        await outbox.insert_one({"_id": uuid.uuid4().hex, "state": "pending", "payload": {"body": "x" * 300},
                                 "available_at": now}, session=session)
        await invitations.update_one({"_id": invs[0]["_id"]}, {"$set": {"awaiting_meeting": False}}, session=session)

    async def first(session):
        if video:
            await outbox.insert_one({"_id": f"meeting:{booking_id}", "state": "pending", "available_at": now},
                                    session=session)
        await bookings.insert_one(doc, session=session)
        await invitations.insert_many(invs, session=session)
        if not video:
            await dispatch(session)

    await in_transaction(client, first)
    await audit.insert_one({"at": now, "patient": "191212121212", "action": "booking.create"})
    if video:
        async def second(session):
            await bookings.update_one({"_id": booking_id, "meeting_pending": True}, {"$set": {
                "meeting_pending": False, "meeting_id": "m", "dial_in_code": "1", "portal_url": "u"}}, session=session)
            await invitations.find({"booking_id": booking_id, "awaiting_meeting": True}, session=session).to_list()
            await dispatch(session)
            await outbox.update_one({"_id": f"meeting:{booking_id}", "state": "pending"},
                                    {"$set": {"state": "delivered"}}, session=session)

        await bookings.find_one({"_id": booking_id})
        await in_transaction(client, second)
        await bookings.find_one({"_id": booking_id})
        await audit.insert_one({"at": now, "patient": "191212121212", "action": "booking.meeting_created"})
    await invitations.find({"booking_id": booking_id}).sort("created_at", 1).to_list()
    await outbox.find({"_id": {"$in": ["a", "b"]}}).to_list()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database = EmbeddedMongo(Path(tmp) / "db").start()
        keyring = KeyRing.generate()
        keyring.save_current(Path(tmp))
        tokens = {name: keyring.issue_service_token(name) for name in ORDER + ["gateway"]}
        system = System(database.uri, Path(tmp), tokens, overrides={"booking": {"log_level": "WARNING"}})
        try:
            await system.start(["identity", "roster", "booking"])
            token = keyring.issue_session_token(
                person_id=COORDINATOR, id_kind="hsa_id", name="Vera Samordnare", method="siths", assurance="high",
                roles=[auth.ROLE_STAFF, auth.ROLE_COORDINATOR], unit=UNIT)[0]
            stub, md = system.stub("booking"), auth.bearer(token)
            client = mongo.connect(database.uri)
            raw_db = client[f"{system.prefix}_rawbench"]
            audit = raw_db.get_collection("access_records", write_concern=mongo.DURABLE)
            print(f"CreateBooking, {N} bookings per case, {CONCURRENCY} concurrent callers, 2 parties each")
            print(f"{'case':<28}{'bookings/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
            for video in (False, True):
                name = "SIP video (room)" if video else "ordinary visit"
                for _ in range(10):  # warm up
                    await stub.CreateBooking(_request(video), metadata=md)
                    await _raw_booking(client, raw_db, audit, video)
                # Interleaved rounds, so both sides see the same load on this shared machine.
                grpc_lat, raw_lat, grpc_time, raw_time = [], [], 0.0, 0.0
                for _ in range(ROUNDS):
                    rate, lat = await measure(lambda _, video=video: stub.CreateBooking(_request(video), metadata=md),
                                               N // ROUNDS, CONCURRENCY)
                    grpc_lat += lat
                    grpc_time += (N // ROUNDS) / rate
                    rate, lat = await measure(lambda _, video=video: _raw_booking(client, raw_db, audit, video),
                                               N // ROUNDS, CONCURRENCY)
                    raw_lat += lat
                    raw_time += (N // ROUNDS) / rate
                grpc_rate, raw_rate = len(grpc_lat) / grpc_time, len(raw_lat) / raw_time
                print(f"{name + ' via gRPC':<28}{grpc_rate:>12.1f}{pct(grpc_lat, 50):>10.1f}{pct(grpc_lat, 99):>10.1f}")
                print(f"{name + ' raw pymongo':<28}{raw_rate:>12.1f}{pct(raw_lat, 50):>10.1f}{pct(raw_lat, 99):>10.1f}")
                print(f"{'  ratio gRPC / raw':<28}{grpc_rate / raw_rate:>12.2f}"
                      f"{pct(grpc_lat, 50) / pct(raw_lat, 50):>10.2f}{pct(grpc_lat, 99) / pct(raw_lat, 99):>10.2f}")
            await client.close()
        finally:
            await system.stop()
            database.stop()


if __name__ == "__main__":
    asyncio.run(main())
