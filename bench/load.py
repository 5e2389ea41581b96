"""make bench-load: many concurrent meetings' worth of traffic through the gateway over HTTP,
against every service as its own process (as `make run` starts them). Not a test.

Each virtual coordinator, in a loop for the run's duration: logs in (development login),
books a SIP video meeting, registers two participants, opens and starts it, watches it over
the WebSocket, lets a participant log in and be admitted (join signalling; no media), reads
the connected list, and ends the meeting. Every step's latency is recorded; at the end every
booking acknowledged is read back (nothing lost) and every meeting must be ended.
Baseline: the gateway's /healthz round trip on the same connection pool, in the same run.

Usage: python -m bench.load [SECONDS] [CONCURRENCY]
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import websockets

from devstack.stack import Stack

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 30
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 8
COORDINATOR, REGION_STAFF, NEXT_OF_KIN, PATIENT = "SE2321000057-1001", "SE2321000057-2001", "198112289874", "191212121212"
RESULTS = Path(__file__).resolve().parent / "results"


class Client:
    """One browser: cookies kept by hand (they are Secure, and this is loopback http), CSRF header."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.cookies: dict[str, str] = {}

    def _headers(self) -> dict:
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
                "x-csrf-token": self.cookies.get("svpl_csrf", "")}

    async def request(self, method: str, path: str, **kw) -> httpx.Response:
        response = await self.http.request(method, path, headers=self._headers(), **kw)
        for cookie in response.headers.get_list("set-cookie"):
            name, _, rest = cookie.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response

    async def login(self, person_id: str) -> None:
        if "svpl_csrf" not in self.cookies:
            await self.request("GET", "/api/v1/openapi.json")
        response = await self.request("POST", "/api/v1/auth/development", json={"person_id": person_id})
        response.raise_for_status()


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter[str] = collections.Counter()

    async def step(self, name: str, call, ok=(200,)):
        started = time.perf_counter()
        try:
            response = await call
        except (httpx.HTTPError, OSError) as exc:
            self.errors[f"{name}: {exc.__class__.__name__}"] += 1
            return None
        self.latency[name].append(time.perf_counter() - started)
        if response.status_code not in ok:
            self.errors[f"{name}: HTTP {response.status_code}"] += 1
            return None
        return response.json()


async def meeting_loop(base: str, http: httpx.AsyncClient, rec: Recorder, deadline: float,
                       made: list[tuple[str, str]]) -> None:
    coordinator, staff = Client(http), Client(http)
    await coordinator.login(COORDINATOR)
    await staff.login(REGION_STAFF)
    options = (await coordinator.request("GET", "/api/v1/booking-options")).json()
    while time.monotonic() < deadline:
        start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).replace(microsecond=0)
        booked = await rec.step("book", coordinator.request("POST", "/api/v1/bookings", json={
            "idempotency_key": uuid.uuid4().hex, "patient_personnummer": PATIENT, "start": start.isoformat(),
            "duration_minutes": 60, "booking_unit_hsa_id": "SE2321000057-0001",
            "care_service": options["video_care_service"], "contact_type": options["video_contact_type"],
            "parties": [{"kind": "PARTY_KIND_MUNICIPALITY_UNIT", "name": "Hemtjänsten", "channel": "CHANNEL_PHONE",
                         "address": "036-10 10 10"}]}))
        if not booked or not booked["booking"].get("meeting_id"):
            continue
        booking_id, meeting_id = booked["booking"]["booking_id"], booked["booking"]["meeting_id"]
        made.append((booking_id, meeting_id))
        for name, role, kind, pid in (("Rita Region", "PARTICIPANT_ROLE_REGION_STAFF", "ID_KIND_HSA_ID", REGION_STAFF),
                                      ("Nils Närstående", "PARTICIPANT_ROLE_NEXT_OF_KIN", "ID_KIND_PERSONNUMMER",
                                       NEXT_OF_KIN)):
            await rec.step("register", coordinator.request("POST", f"/api/v1/meetings/{meeting_id}/participants", json={
                "full_name": name, "role": role, "person": {"id_kind": kind, "id": pid}}))
        for step in ("open", "start"):
            await rec.step(step, coordinator.request("POST", f"/api/v1/meetings/{meeting_id}/{step}"))
        host = base.split("://", 1)[1]
        started = time.perf_counter()
        try:
            async with websockets.connect(f"ws://{host}/api/v1/meetings/{meeting_id}/events",
                                          additional_headers={"cookie": coordinator._headers()["cookie"],
                                                              "origin": f"http://{host}"}) as ws:
                snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if "error" in snapshot:
                    rec.errors["watch: refused"] += 1
                else:
                    rec.latency["watch snapshot"].append(time.perf_counter() - started)
                await rec.step("admit", staff.request("POST", f"/api/v1/meetings/{meeting_id}/admission"))
                await rec.step("connected", staff.request("GET", f"/api/v1/meetings/{meeting_id}/connected"))
                await rec.step("end", coordinator.request("POST", f"/api/v1/meetings/{meeting_id}/end"))
        except (TimeoutError, OSError, websockets.WebSocketException) as exc:
            rec.errors[f"watch: {exc.__class__.__name__}"] += 1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def run(base: str) -> dict:
    limits = httpx.Limits(max_connections=CONCURRENCY * 4)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        baseline = []
        for _ in range(200):
            t = time.perf_counter()
            (await http.get("/healthz")).raise_for_status()
            baseline.append(time.perf_counter() - t)
        rec = Recorder()
        made: list[tuple[str, str]] = []
        began = time.monotonic()
        await asyncio.gather(*(meeting_loop(base, http, rec, began + SECONDS, made) for _ in range(CONCURRENCY)))
        elapsed = time.monotonic() - began
        # Nothing lost: every acknowledged booking is there, every meeting it made is ended.
        coordinator = Client(http)
        await coordinator.login(COORDINATOR)
        lost = not_ended = 0
        for booking_id, meeting_id in made:
            b = await coordinator.request("GET", f"/api/v1/bookings/{booking_id}")
            lost += b.status_code != 200
            m = await coordinator.request("GET", f"/api/v1/meetings/{meeting_id}")
            not_ended += m.status_code != 200 or m.json()["meeting"]["state"] != "MEETING_STATE_ENDED"
    requests = sum(len(v) for v in rec.latency.values())
    return {
        "seconds": round(elapsed, 1), "concurrency": CONCURRENCY, "meetings": len(made),
        "requests": requests, "requests_per_s": round(requests / elapsed, 1),
        "meetings_per_s": round(len(made) / elapsed, 2),
        "steps": {name: {"n": len(v), "p50_ms": round(pct(v, 0.5), 1), "p99_ms": round(pct(v, 0.99), 1)}
                  for name, v in sorted(rec.latency.items())},
        "baseline_healthz": {"p50_ms": round(pct(baseline, 0.5), 2), "p99_ms": round(pct(baseline, 0.99), 2)},
        "errors": dict(rec.errors), "lost_bookings": lost, "meetings_not_ended": not_ended,
    }


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="svpl-load-") as tmp:
        stack = Stack(Path(tmp), extra_env={"SVPL_DEVELOPMENT_LOGIN": "true", "SVPL_LOGIN_RATE_PER_MINUTE": "100000",
                                            "SVPL_LOG_LEVEL": "WARNING"})
        stack.start(timeout=60)
        try:
            result = asyncio.run(run(f"http://{stack.procs['gateway'].address}"))
        finally:
            stack.stop()
    base = result["baseline_healthz"]["p50_ms"]
    print(f"load: {result['meetings']} meetings, {result['requests']} requests in {result['seconds']} s with "
          f"{CONCURRENCY} concurrent coordinators: {result['requests_per_s']} req/s, "
          f"{result['meetings_per_s']} meetings/s")
    print(f"{'step':16} {'n':>6} {'p50 ms':>9} {'p99 ms':>9} {'p50 / healthz p50':>18}")
    for name, s in result["steps"].items():
        print(f"{name:16} {s['n']:6d} {s['p50_ms']:9.1f} {s['p99_ms']:9.1f} {s['p50_ms'] / base:18.1f}")
    print(f"baseline /healthz p50 {base} ms, p99 {result['baseline_healthz']['p99_ms']} ms")
    print(f"errors: {result['errors'] or 'none'}; lost bookings: {result['lost_bookings']}; "
          f"meetings not ended: {result['meetings_not_ended']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2))
    return 1 if result["lost_bookings"] or result["meetings_not_ended"] else 0


if __name__ == "__main__":
    sys.exit(main())
