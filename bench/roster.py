"""make bench-roster: roster's writes and admissions next to a baseline measured in the same
run on the same database server. Not a test.

Roster stores a meeting as one document changed by read → apply → versioned replace
(optimistic concurrency, retried on a lost race). What that costs:

- ReportConnection via gRPC (16 concurrent callers) on ONE meeting (every write races) and
  spread over 16 meetings, vs the cheapest raw write that records a connection: a pymongo
  `$push` into one document with the same write concern, same concurrency.
- Admit via gRPC (the versioned write + identity's IssueJoinToken) vs GetMeeting via gRPC
  (one read through the same stack).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from svpl.roster.v1 import roster_pb2 as R

from bench.timing import measure, pct
from devstack.embedded_db import EmbeddedMongo
from devstack.harness import ORDER, System
from devstack.samples import create_request
from services.identity.tokens import KeyRing
from services.runtime import auth, mongo

N = int(sys.argv[1]) if len(sys.argv) > 1 else 400
CONCURRENCY = 16
ROUNDS = 4
INSTANCE = "media-bench"


async def _compare(name: str, ours, baseline, base_name: str, concurrency: int) -> None:
    for i in range(10):  # warm up
        await ours(i)
        await baseline(i)
    ours_lat, base_lat, ours_time, base_time = [], [], 0.0, 0.0
    for _ in range(ROUNDS):  # interleaved, so both see the same load on a shared machine
        rate, lat = await measure(ours, N // ROUNDS, concurrency)
        ours_lat += lat
        ours_time += (N // ROUNDS) / rate
        rate, lat = await measure(baseline, N // ROUNDS, concurrency)
        base_lat += lat
        base_time += (N // ROUNDS) / rate
    ours_rate, base_rate = len(ours_lat) / ours_time, len(base_lat) / base_time
    print(f"{name:<44}{ours_rate:>10.1f}{pct(ours_lat, 50):>10.1f}{pct(ours_lat, 99):>10.1f}")
    print(f"{'  baseline: ' + base_name:<44}{base_rate:>10.1f}{pct(base_lat, 50):>10.1f}{pct(base_lat, 99):>10.1f}")
    print(f"{'  ratio':<44}{ours_rate / base_rate:>10.2f}{pct(ours_lat, 50) / pct(base_lat, 50):>10.2f}"
          f"{pct(ours_lat, 99) / pct(base_lat, 99):>10.2f}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database = EmbeddedMongo(Path(tmp) / "db").start()
        keyring = KeyRing.generate()
        keyring.save_current(Path(tmp))
        tokens = {name: keyring.issue_service_token(name) for name in ORDER + ["gateway"]}
        quiet = {"log_level": "WARNING"}
        system = System(database.uri, Path(tmp), tokens, overrides={
            "identity": quiet, "roster": quiet, "media": {**quiet, "instance_id": INSTANCE}})
        try:
            await system.start(["identity", "media", "roster"])
            roster = system.stub("roster")
            booking, media = auth.bearer(tokens["booking"]), auth.bearer(tokens["media"])
            coordinator = auth.bearer(keyring.issue_session_token(
                person_id="SE2321000057-1001", id_kind="hsa_id", name="Vera Samordnare", method="siths",
                assurance="high", roles=[auth.ROLE_STAFF, auth.ROLE_COORDINATOR])[0])
            patient = auth.bearer(keyring.issue_session_token(
                person_id="191212121212", id_kind="personnummer", name="Tolvan Tolvansson", method="bankid",
                assurance="high", roles=[auth.ROLE_CITIZEN])[0])

            async def live(i: int) -> str:
                m = (await roster.CreateMeeting(create_request(f"bench-{i}"), metadata=booking)).meeting
                await roster.OpenMeeting(R.OpenMeetingRequest(meeting_id=m.meeting_id), metadata=coordinator)
                await roster.StartMeeting(R.StartMeetingRequest(meeting_id=m.meeting_id), metadata=coordinator)
                return m.meeting_id

            meetings = [await live(i) for i in range(CONCURRENCY + 1)]
            client = mongo.connect(database.uri)
            raw = client[f"{system.prefix}_rawbench"].get_collection("meetings", write_concern=mongo.DURABLE)
            await raw.insert_many([{"_id": str(i), "connections": []} for i in range(CONCURRENCY)])

            def report(meeting_for):
                async def call(i: int):
                    await roster.ReportConnection(R.ReportConnectionRequest(
                        meeting_id=meeting_for(i), connection_id=f"c{time.perf_counter_ns()}-{i}",
                        kind=R.CONNECTION_KIND_PHONE, connected=True, media_instance=INSTANCE), metadata=media)
                return call

            def push(doc_for):
                async def call(i: int):
                    await raw.update_one({"_id": doc_for(i)}, {"$push": {"connections": {"id": i}}})
                return call

            print(f"roster, {N} calls per case, {CONCURRENCY} concurrent callers; "
                  f"calls/s, latency p50 / p99 in ms")
            print(f"{'case':<44}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
            await _compare("ReportConnection, all on one meeting", report(lambda i: meetings[0]),
                           push(lambda i: "0"), "raw $push, one document", CONCURRENCY)
            await _compare("ReportConnection, over 16 meetings", report(lambda i: meetings[1 + i % CONCURRENCY]),
                           push(lambda i: str(i % CONCURRENCY)), "raw $push, 16 documents", CONCURRENCY)
            target = meetings[0]
            await _compare("Admit (write + IssueJoinToken)",
                           lambda i: roster.Admit(R.AdmitRequest(meeting_id=target), metadata=patient),
                           lambda i: roster.GetMeeting(R.GetMeetingRequest(meeting_id=target), metadata=patient),
                           "GetMeeting via gRPC", CONCURRENCY)
            await client.close()
        finally:
            await system.stop()
            database.stop()


if __name__ == "__main__":
    asyncio.run(main())
