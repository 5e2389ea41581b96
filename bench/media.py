"""make bench-media: our RTP packet forwarding next to two baselines in one process tree and one
run: Janus WebRTC Server, a compiled SFU (bench/janus.py), and aiortc's MediaRelay (decode +
re-encode per receiver). Not a test.

Process tree: this orchestrator (embedded database + identity in-process, to admit join
tokens), the media service (`bench/media_servers.py sfu`), Janus (`janus`, videoroom plugin,
`event_loops` = the number of cores), the MediaRelay baseline server (`bench/media_servers.py
relay`), and load-generator processes (`bench/media_peers.py`) whose synthetic participants
replay a pre-encoded 640x360 VP8 15 fps + Opus clip and count the complete frames they receive
without decoding (one video track per room is decoded as a check).

Each case (1x4, 1x6, 1x10, 1x16, 8x5) runs BENCH_MEDIA_RUNS times (2) on our media service and
on Janus, each run on a freshly started server process, svpl first in one run and Janus first
in the next (so neither always runs on the warmer or the more loaded machine); the load average
before each run is printed. The case `sfu2` spreads the 8 rooms of 5 over two media processes
(one per core, as a pod may run them where Python's global lock caps one process at one core),
CPU summed, reported apart from the per-stream comparison.

For each run it prints the server's CPU (% of one core, from /proc/<pid>/stat: every thread),
CPU per forwarded stream (one participant's audio+video to one receiver), the minimum subscriber
video fps, and the per-stream CPU ratio to the MediaRelay baseline measured in this run; then
per case svpl's and Janus's figures as min-max over the runs and the ratio svpl / Janus. Last,
the one-way delay through the media service next to a direct connection (bench/media_latency.py).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from svpl.media.v1 import media_pb2, media_pb2_grpc

from bench import janus, media_latency
from bench.media_peers import encode_clip
from devstack.embedded_db import EmbeddedMongo, free_port
from devstack.harness import ORDER, System, as_token
from services.identity.tokens import KeyRing

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
WARMUP = 2.0
MEASURE = float(os.environ.get("BENCH_MEDIA_SECONDS", "12"))  # per case, in WINDOWS windows; longer for profiling
WINDOWS = 3
RUNS = int(os.environ.get("BENCH_MEDIA_RUNS", "2"))  # per case and server, each on a fresh process
COMPARED = [(1, 4), (1, 6), (1, 10), (1, 16), (8, 5)]  # rooms x participants, svpl next to Janus
FULL_FPS = 15.0  # what the synthetic publishers send
TICK = os.sysconf("SC_CLK_TCK")
INSTANCE = "bench-media"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


@dataclass
class Server:
    pid: int
    address: str  # the media service's gRPC, the relay's TCP or Janus's HTTP API (a URL)
    instance: str = ""
    stub: media_pb2_grpc.MediaServiceStub | None = None  # the media service's (None for the baselines)


def send(p: subprocess.Popen[str], line: str) -> None:
    """One line to a load generator (started with stdin piped)."""
    stdin = cast(IO[str], p.stdin)
    stdin.write(line + "\n")
    stdin.flush()


async def receive(p: subprocess.Popen[str]) -> str:
    """One line from a load generator (started with stdout piped)."""
    return await asyncio.to_thread(cast(IO[str], p.stdout).readline)


async def run_case(target: str, servers: list[Server], rooms: int, n: int, keyring: KeyRing, tokens: dict,
                   processes: int) -> dict:
    """Rooms are spread round-robin over `servers` (one media process per core when there are two)."""
    specs: list[dict] = []
    opened: list[tuple[media_pb2_grpc.MediaServiceStub, str]] = []
    for r in range(rooms):
        server = servers[r % len(servers)]
        if target == "janus":  # numeric rooms and publisher ids, as Janus's API has them
            feeds = [(r + 1) * 100 + i for i in range(n)]
            await janus.create_room(server.address, r + 1, n)
            specs += [{"room": r + 1, "slots": n - 1, "feed": f, "others": [o for o in feeds if o != f],
                       "address": server.address} for f in feeds]
            continue
        room = f"bench-{uuid.uuid4().hex[:8]}"
        if server.stub:
            await server.stub.OpenRoom(media_pb2.OpenRoomRequest(meeting_id=room), metadata=as_token(tokens["roster"]))
            opened.append((server.stub, room))
        for i in range(n):
            token = keyring.issue_join_token(meeting_id=room, participant_id=f"p{i}", media_instance=server.instance,
                                             ttl=dt.timedelta(minutes=10))[0] if server.stub else ""
            specs.append({"room": room, "slots": n - 1, "token": token, "address": server.address})
    cfg = {"target": {"relay": "relay", "janus": "janus"}.get(target, "sfu"), "gateway_token": tokens["gateway"],
           "clip": CLIP}
    chunks = [specs[i::processes] for i in range(processes)]
    procs = [subprocess.Popen([PY, str(ROOT / "bench" / "media_peers.py")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for c in chunks if c]
    for p, c in zip(procs, chunks):
        send(p, json.dumps({**cfg, "participants": c}))
    try:
        for p in procs:
            line = await receive(p)
            if line.strip() != "ready":
                raise RuntimeError(f"load generator failed: {line.strip() or 'no output'}")
        await asyncio.sleep(WARMUP)
        # WINDOWS back-to-back windows: the median window's CPU is reported (a burst of other work on these
        # shared machines spoils one window, not the figure); frame rates are the worst over all windows.
        windows = []
        for _ in range(WINDOWS):
            t0, c0, g0 = time.time(), sum(cpu_seconds(s.pid) for s in servers), [cpu_seconds(p.pid) for p in procs]
            await asyncio.sleep(MEASURE / WINDOWS)
            t1, c1, g1 = time.time(), sum(cpu_seconds(s.pid) for s in servers), [cpu_seconds(p.pid) for p in procs]
            windows.append(((c1 - c0) / (t1 - t0) * 100, max(b - a for a, b in zip(g0, g1)) / (t1 - t0) * 100, t0, t1))
        results = []
        for _, _, t0, t1 in windows:
            for p in procs:
                send(p, f"report {t0} {t1}")
            results.append([json.loads(await receive(p)) for p in procs])
        for p in procs:
            send(p, "stop")
    finally:
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        for stub, room in opened:
            await stub.CloseRoom(media_pb2.CloseRoomRequest(meeting_id=room), metadata=as_token(tokens["roster"]))
    streams = rooms * n * (n - 1)
    middle = sorted(range(WINDOWS), key=lambda i: windows[i][0])[WINDOWS // 2]
    cpu, generator = windows[middle][0], windows[middle][1]
    flat = [r for window in results for r in window]
    video = [f for r in flat for f in r["video_fps"]]
    audio = [f for r in flat for f in r["audio_fps"]]
    decoded = [f for r in flat for f in r["decoded_fps"]]
    sent = [f for r in flat for f in r["sent_fps"]]
    middle_video = sorted(f for r in results[middle] for f in r["video_fps"])  # the median-CPU window's
    median_fps = middle_video[len(middle_video) // 2]
    return {"generator": generator, "windows": [round(w[0], 1) for w in windows],
            "median_fps": median_fps, "sent_fps": min(sent), "target": target, "rooms": rooms, "n": n,
            "participants": rooms * n, "streams": streams, "cpu": cpu,
            "per_stream": cpu / streams,
            # CPU per stream scaled to the full frame rate: a starved server that delivers fewer frames looks cheaper
            # per stream than it is; this charges it per frame delivered (median subscriber fps).
            "per_stream_full": cpu / streams * FULL_FPS / max(median_fps, 0.1),
            "min_fps": min(video), "min_audio": min(audio),
            "decoded": min(decoded) if decoded else 0.0}


async def wait_ready(address: str, timeout: float = 30) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(service="svpl.media.v1.MediaService"), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("media did not become ready")
            await asyncio.sleep(0.2)


CLIP: dict = {}


def spread(values: list[float], digits: int = 2) -> str:
    """min-max of the runs (one value when they agree to the digits shown)."""
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def comparison(results: list[dict]) -> list[str]:
    """Per case measured on both: svpl's and Janus's CPU per forwarded stream and min fps (min-max
    over the runs), and svpl / Janus per stream (the ratio of each run's pair, min-max; < 1: svpl
    uses less CPU per stream)."""
    lines = [f"{'rooms x N':>9} {'streams':>7} {'runs':>4} {'svpl %/stream':>14} {'Janus %/stream':>14}"
             f" {'svpl/Janus':>11} {'svpl min fps':>12} {'Janus min fps':>13}"]
    cases = sorted({(r["rooms"], r["n"]) for r in results if r["target"] == "janus"},
                   key=lambda c: COMPARED.index(c) if c in COMPARED else len(COMPARED))
    for rooms, n in cases:
        runs = {t: [r for r in results if (r["target"], r["rooms"], r["n"]) == (t, rooms, n)] for t in ("sfu", "janus")}
        if not runs["sfu"]:
            continue
        pairs = [a["per_stream"] / b["per_stream"] for a, b in zip(runs["sfu"], runs["janus"])]
        lines.append(f"{rooms:>4} x {n:<2} {runs['sfu'][0]['streams']:>7} {min(len(runs['sfu']), len(runs['janus'])):>4}"
                     f" {spread([r['per_stream'] for r in runs['sfu']]):>14}"
                     f" {spread([r['per_stream'] for r in runs['janus']]):>14} {spread(pairs):>11}"
                     f" {spread([r['min_fps'] for r in runs['sfu']], 1):>12}"
                     f" {spread([r['min_fps'] for r in runs['janus']], 1):>13}")
    return lines


def plan(runs: int) -> list[tuple[str, int, int]]:
    """The MediaRelay baseline, then each compared case `runs` times on svpl and on Janus (svpl first
    in one run, Janus first in the next, starting the other way round in every other case), then sfu2."""
    cases = [("relay", 1, 2), ("relay", 1, 3)]
    for k, (rooms, n) in enumerate(COMPARED):
        for run in range(runs):
            order = ["sfu", "janus"] if (k + run) % 2 == 0 else ["janus", "sfu"]
            cases += [(target, rooms, n) for target in order]
    return cases + [("sfu2", 8, 5)]


async def main() -> None:
    video, audio = encode_clip()  # once, replayed by every synthetic publisher
    CLIP.update(video=[base64.b64encode(p).decode() for p in video], audio=[base64.b64encode(p).decode() for p in audio])
    workdir = Path(tempfile.mkdtemp(prefix="svpl-bench-media-"))
    db = EmbeddedMongo(workdir / "db").start()
    keyring = KeyRing.generate()
    keyring.save_current(workdir)
    tokens = {name: keyring.issue_service_token(name) for name in ORDER + ["gateway"]}
    system = System(db.uri, workdir, tokens)
    processes: list[subprocess.Popen] = []
    janus_servers: list[janus.JanusServer] = []

    def stop_all() -> None:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        processes.clear()
        for server in janus_servers:
            server.stop()
        janus_servers.clear()

    try:
        await system.start(["identity"])

        async def media_process(instance: str) -> Server:
            port = free_port()
            env = {**os.environ, "SVPL_MONGODB_URI": db.uri, "SVPL_MONGODB_DATABASE": f"{system.prefix}_{instance}",
                   "SVPL_GRPC_PORT": str(port), "SVPL_IDENTITY_ADDRESS": system.address("identity"),
                   "SVPL_ROSTER_ADDRESS": system.address("roster"), "SVPL_SERVICE_TOKEN": tokens["media"],
                   "SVPL_INSTANCE_ID": instance, "SVPL_CAPACITY_PARTICIPANTS": "200", "SVPL_LOG_LEVEL": "ERROR"}
            proc = subprocess.Popen([PY, str(ROOT / "bench" / "media_servers.py"), "sfu"], env=env, cwd=ROOT)
            processes.append(proc)
            address = f"127.0.0.1:{port}"
            await wait_ready(address)
            channel = grpc.aio.insecure_channel(address)
            return Server(proc.pid, address, instance, media_pb2_grpc.MediaServiceStub(channel))

        async def fresh(target: str) -> list[Server]:
            """A newly started server process (two for sfu2) for one run."""
            if target == "janus":
                server = janus.JanusServer(workdir)
                janus_servers.append(server)
                await server.ready()
                return [Server(server.pid, server.url)]
            if target == "relay":
                port = free_port()
                proc = subprocess.Popen([PY, str(ROOT / "bench" / "media_servers.py"), "relay", str(port)], cwd=ROOT,
                                        stdout=subprocess.PIPE, text=True)
                processes.append(proc)
                if (await receive(proc)).strip() != "listening":  # printed once it accepts connections
                    raise RuntimeError("the relay baseline did not start")
                return [Server(proc.pid, f"127.0.0.1:{port}")]
            run = uuid.uuid4().hex[:6]
            return [await media_process(f"{INSTANCE}-{run}-{i}") for i in range(2 if target == "sfu2" else 1)]

        cases = plan(RUNS)
        latency = not sys.argv[1:] or "latency" in sys.argv[1:]
        chosen = [a for a in sys.argv[1:] if a != "latency"]
        if sys.argv[1:]:  # chosen cases, e.g. `bench/media.py relay:1x2 sfu:1x4 janus:1x4` (the relay first), `latency`
            cases = [(a.split(":")[0], int(a.split(":")[1].split("x")[0]), int(a.split("x")[1])) for a in chosen]
        results = []
        failed: list[str] = []
        for target, rooms, n in cases:
            load = os.getloadavg()[0]  # before the server starts: what else the machine is doing
            try:
                servers = await fresh(target)
                r = await run_case(target, servers, rooms, n, keyring, tokens, 1 if rooms * n <= 4 else 2)
            except RuntimeError as e:  # one failed run (e.g. no media within the setup time) spoils no other
                failed.append(f"{target} {rooms}x{n}")
                print(f"  FAILED {target} {rooms}x{n}: load average before {load:.2f}: {e}", flush=True)
                continue
            finally:
                stop_all()  # every run on a fresh process: no state (or CPU) carried into the next
            r["load"] = load
            results.append(r)
            print(f"  measured {target} {rooms}x{n}: load average before {load:.2f}, server {r['cpu']:.1f}% of a core,"
                  f" min {r['min_fps']:.1f} fps, median {r['median_fps']:.1f} fps (publishers sent >= {r['sent_fps']:.1f} fps),"
                  f" busiest load generator {r['generator']:.0f}%; cpu per window {r['windows']}", flush=True)
        if latency:
            sfu = (await fresh("sfu"))[0]
            print("\n".join(await media_latency.measure(video, sfu, keyring, tokens)), flush=True)
        if not results:
            return
        base = {r["n"]: r["per_stream"] for r in results if r["target"] == "relay"} or {0: float("nan")}
        full = {r["n"]: r["per_stream_full"] for r in results if r["target"] == "relay"} or {0: float("nan")}
        print()
        print(f"{'server':8} {'rooms x N':>9} {'streams':>7} {'load':>5} {'cpu %core':>9} {'%/stream':>9} {'min fps':>8}"
              f" {'min aud/s':>9} {'decoded':>8} {'ratio':>7} {'%/str@15':>8} {'ratio@15':>8}")
        for r in results:
            ref = base.get(r["n"], base[max(base)])
            print(f"{r['target']:8} {r['rooms']:>4} x {r['n']:<2} {r['streams']:>7} {r['load']:>5.2f} {r['cpu']:>9.1f}"
                  f" {r['per_stream']:>9.2f} {r['min_fps']:>8.1f} {r['min_audio']:>9.1f} {r['decoded']:>8.1f}"
                  f" {r['per_stream'] / ref:>7.3f}"
                  f" {r['per_stream_full']:>8.2f} {r['per_stream_full'] / full.get(r['n'], full[max(full)]):>8.3f}")
        print(f"\nserver: sfu = svpl's media service, janus = Janus WebRTC Server (videoroom, event_loops ="
              f" {os.cpu_count()}), relay = aiortc MediaRelay; load = 1-min load average before the run;"
              f" ratio = CPU per forwarded stream / MediaRelay's at the same N (N>3: at N={max(base)}); "
              f"%/str@15 = CPU per stream x {FULL_FPS:g} / median fps (per frame delivered), ratio@15 likewise; "
              f"cpu of {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        if any(r["target"] == "janus" for r in results):
            print(f"\nsvpl next to Janus {janus.version()} (event_loops = {os.cpu_count()}), per case"
                  " (min-max over the runs, each on a fresh process):")
            print("\n".join(comparison(results)))
            print("svpl/Janus = svpl's CPU per forwarded stream / Janus's, run by run (< 1: svpl uses less);"
                  " min fps = the slowest subscriber video slot over all windows (the clip is 15 fps)")
        if failed:
            print(f"\nFAILED runs (not in the tables): {', '.join(failed)}")
            sys.exit(1)
    finally:
        stop_all()
        await system.stop()
        db.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
