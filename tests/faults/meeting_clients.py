"""Helpers for the media-instance fault test: a media instance as its own process (so it can be
killed with SIGKILL), and a synthetic participant whose client logic is the portal's
(services/gateway/portal/static/portal.js, `watchConnection` / `reconnect`): when no packet has
arrived for STALL_SECONDS (or the peer connection failed or was closed), it asks to be admitted
again and renegotiates with a fresh peer connection at the media address the admission names,
with back-off, until it sees media again or the admission says removed or finished."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from svpl.media.v1 import media_pb2, media_pb2_grpc
from svpl.roster.v1 import roster_pb2

from devstack.peers import Peer
from tests.roster.helpers import reason

ROOT = Path(__file__).resolve().parents[2]
STALL_SECONDS = 2.0  # the portal's value too: aiortc and browsers send RTCP at least every ~1.5 s
BACKOFF = (0.2, 0.5, 1.0, 2.0)  # seconds between attempts; the last repeats
FINAL_REFUSALS = ("ADMIT_REFUSAL_REMOVED", "ADMIT_REFUSAL_FINISHED", "ADMIT_REFUSAL_NOT_REGISTERED")

# aioice skips 127.0.0.1 when gathering host candidates; the test's clients are on loopback only.
_LOOPBACK_MEDIA = (
    "import aioice.ice, runpy;"
    "aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ['127.0.0.1'];"
    "runpy.run_module('services.media', run_name='__main__')"
)


class MediaProcess:
    """`python -m services.media` (with loopback ICE) as a child process, configured like the
    harness's in-process services (same database as the other media instance, as in production)."""

    def __init__(self, system, port: int, instance_id: str, log_path: Path) -> None:
        s = system.settings("media", grpc_port=port, instance_id=instance_id)
        self.address = f"127.0.0.1:{port}"
        self.log_path = log_path
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
            "PYTHONUNBUFFERED": "1",
            "SVPL_MONGODB_URI": s.mongodb_uri,
            "SVPL_MONGODB_DATABASE": s.mongodb_database,
            "SVPL_AUDIT_DATABASE": s.audit_database,
            "SVPL_GRPC_PORT": str(port),
            "SVPL_METRICS_PORT": "0",
            "SVPL_SERVICE_TOKEN": s.service_token,
            "SVPL_SIGNING_KEYS_DIR": str(system.keys_dir),
            "SVPL_INSTANCE_ID": instance_id,
            "SVPL_IDENTITY_ADDRESS": s.identity_address,
            "SVPL_ROSTER_ADDRESS": s.roster_address,
            "SVPL_DB_CHECK_SECONDS": "0.2",
        })
        self.process: subprocess.Popen | None = None

    @property
    def running(self) -> subprocess.Popen:
        """The process, once started."""
        if self.process is None:
            raise RuntimeError(f"media {self.address} is not started")
        return self.process

    def start(self) -> MediaProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-c", _LOOPBACK_MEDIA], env=self.env, cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    async def wait_ready(self, roster_md, timeout: float = 20.0) -> None:
        stub = media_pb2_grpc.MediaServiceStub(grpc.aio.insecure_channel(self.address))
        deadline = time.monotonic() + timeout
        while True:
            if self.running.poll() is not None:
                raise RuntimeError(f"media exited early: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if (await stub.GetLoad(media_pb2.GetLoadRequest(), metadata=roster_md, timeout=1)).accepting:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"media not ready within {timeout}s; see {self.log_path}")
            await asyncio.sleep(0.1)

    def pause(self) -> None:
        """SIGSTOP: the instance stops answering anything (a long pause, a stalled node) until resumed."""
        os.kill(self.running.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.running.pid, signal.SIGCONT)

    def kill(self) -> None:
        """kill -9: no goodbye to roster, no disconnect reports, no CloseRoom."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Client:
    """One participant's client: join, watch the connection, re-admit and renegotiate on loss."""

    def __init__(self, name: str, roster, who_md, gateway_md, meeting_id: str,
                 stall_seconds: float = STALL_SECONDS) -> None:
        self.name = name
        self.stall_seconds = stall_seconds
        self._roster, self._who, self._gateway, self.meeting_id = roster, who_md, gateway_md, meeting_id
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.peer: Peer | None = None
        self.admission: roster_pb2.AdmitResponse | None = None
        self.outcome = ""  # why the client stopped: a final refusal's reason
        self.joins = 0
        self.lost_at: list[float] = []  # when the client noticed each loss (monotonic)
        self._task: asyncio.Task | None = None

    def start(self) -> Client:
        self._task = asyncio.create_task(self._run())
        return self

    def video_frames(self) -> int:
        return sum(r.frames for r in self.peer.video_received()) if self.peer else 0

    def first_video_at(self) -> float | None:
        times = [r.first_at for r in self.peer.video_received() if r.first_at is not None] if self.peer else []
        return min(times) if times else None

    @property
    def _connected_peer(self) -> Peer:
        if self.peer is None:
            raise RuntimeError(f"{self.name} is not connected")
        return self.peer

    async def _connect_once(self) -> bool:
        """One admission + negotiation; False to try again later, True when connected or stopped."""
        try:
            self.admission = await self._roster.Admit(roster_pb2.AdmitRequest(meeting_id=self.meeting_id),
                                                      metadata=self._who, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if reason(exc) in FINAL_REFUSALS:
                self.outcome = reason(exc)
                return True
            return False  # unavailable, busy: back off and ask again
        peer = self.peer = Peer(slots=2)
        address = self.admission.media_address
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        try:
            reply = await media_pb2_grpc.MediaServiceStub(self._channels[address]).Negotiate(
                media_pb2.NegotiateRequest(join_token=self.admission.join_token, sdp_offer=await peer.offer(),
                                           meeting_id=self.meeting_id), metadata=self._gateway, timeout=10)
            await peer.answer(reply.sdp_answer)
            await asyncio.wait_for(peer.connected.wait(), 5)
        except (TimeoutError, grpc.aio.AioRpcError):
            await peer.close()
            return False
        self.joins += 1
        return True

    async def _connect(self) -> None:
        attempt = 0
        while not await self._connect_once():
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1

    async def _watch(self) -> None:
        """Until the connection is lost: failed/closed, or no packet in for `stall_seconds`."""
        peer = self._connected_peer
        last_bytes, last_change = -1, time.monotonic()
        while True:
            if peer.pc.connectionState in ("failed", "closed"):
                return
            stats = await peer.pc.getStats()
            received = sum(s.bytesReceived for s in stats.values() if s.type == "transport")
            now = time.monotonic()
            if received != last_bytes:
                last_bytes, last_change = received, now
            elif now - last_change > self.stall_seconds:
                return
            await asyncio.sleep(0.2)

    async def _run(self) -> None:
        await self._connect()
        while not self.outcome:
            await self._watch()
            self.lost_at.append(time.monotonic())
            await self._connected_peer.close()
            await self._connect()

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.peer:
            await self.peer.close()
        for channel in self._channels.values():
            await channel.close()
