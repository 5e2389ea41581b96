"""make bench-dialin: N concurrent phone calls (SIPp, over the dial-in service's SIP port) bridged
into N rooms with WebRTC participants, on one machine. Not a test.

In each room a publisher (WebRTC) sends 100 ms tone bursts once a second; a listener (WebRTC)
receives the room. The phone (SIPp) keys the meeting ID, is let in by the coordinator, and then
sends back every RTP packet it receives (-rtp_echo): the listener hears each burst twice, straight
from the publisher (the baseline: the same audio through the room without the bridge, same run,
same clock) and again through the bridge, to the phone and back. The added one-way delay of the
bridge is half the difference between the two arrivals (each of the two passes: media → the dial-in
service's mix → G.711 → RTP to the phone, and back: RTP → playout buffer → Opus → media).

CPU per call: this process's CPU time (all services run in it; SIPp is its own process) over the
same interval with the calls bridged, minus without them (the rooms and their browsers only),
divided by the calls.
"""

from __future__ import annotations

import asyncio
import fractions
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from av import AudioFrame
from svpl.common.v1 import common_pb2
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2

from bench.media_peers import loopback_only
from devstack import sipp
from devstack.embedded_db import EmbeddedMongo
from devstack.harness import OPTIONAL, ORDER, System, as_token
from devstack.samples import create_request
from services.dialin.server import DialinComponent
from services.identity.tokens import KeyRing
from services.runtime import auth

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 4
SECONDS = 15.0
BURST_HZ = 1000.0
COORDINATOR_HSA, LISTENER_HSA = "SE2321000057-1001", "SE2321000057-2001"


def staff_token(keyring: KeyRing, hsa_id: str, name: str, *roles: str) -> str:
    return keyring.issue_session_token(person_id=hsa_id, id_kind="hsa_id", name=name, method="siths",
                                       roles=[auth.ROLE_STAFF, auth.ROLE_REGION_STAFF, *roles], assurance="high")[0]


class Bursts(MediaStreamTrack):
    """A paced microphone: a 100 ms tone once a second, silence between."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.bursts: list[float] = []  # when each burst's first frame left for the encoder
        self._start: float | None = None
        t = np.arange(960) / 48000
        self._tone = (np.sin(2 * np.pi * BURST_HZ * t) * 8000).astype(np.int16).reshape(1, -1)
        self._silence = np.zeros((1, 960), np.int16)

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.sent * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self.sent % 50 == 0:
            self.bursts.append(time.monotonic())
        frame = AudioFrame.from_ndarray(self._tone if self.sent % 50 < 5 else self._silence, format="s16",
                                        layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, self.sent * 960, fractions.Fraction(1, 48000)
        self.sent += 1
        return frame


class Listener:
    """Receives the room; per audio track, the arrival times of burst onsets (silence → tone)."""

    def __init__(self, slots: int = 3) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        for _ in range(slots):
            self.pc.addTransceiver("audio", direction="recvonly")
        self.onsets: list[list[float]] = []
        self.tasks: list[asyncio.Task] = []
        self.pc.on("track", lambda track: self.tasks.append(asyncio.ensure_future(self._listen(track))))

    async def _listen(self, track) -> None:
        onsets: list[float] = []
        self.onsets.append(onsets)
        loud = False
        try:
            while True:
                frame = await track.recv()
                level = float(np.sqrt(np.mean(frame.to_ndarray().astype(np.float64) ** 2)))
                if level > 1500 and not loud:
                    onsets.append(time.monotonic())
                loud = level > 1500
        except MediaStreamError:
            pass


async def join(system: System, pc: RTCPeerConnection, meeting_id: str, token: str) -> None:
    admitted = await system.stub("roster").Admit(roster_pb2.AdmitRequest(meeting_id=meeting_id),
                                                 metadata=as_token(token))
    await pc.setLocalDescription(await pc.createOffer())
    answer = await system.stub("media").Negotiate(media_pb2.NegotiateRequest(
        join_token=admitted.join_token, sdp_offer=pc.localDescription.sdp, meeting_id=meeting_id),
        metadata=as_token(system.tokens["gateway"]))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp_answer, type="answer"))


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def until(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.1)


async def main() -> None:
    loopback_only()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        database = EmbeddedMongo(work / "db").start()
        keyring = KeyRing.generate()
        keyring.save_current(work)
        tokens = {n: keyring.issue_service_token(n) for n in ORDER + OPTIONAL + ["gateway"]}
        sip_port = sipp.free_udp_port()
        system = System(database.uri, work, tokens, overrides={
            "media": {"instance_id": "media-bench"},
            "dialin": {"sip_host": "127.0.0.1", "sip_port": sip_port, "rtp_port_min": 32000, "rtp_port_max": 32998,
                       "trunk_networks": ["127.0.0.1/32"], "connection_key": "b" * 40, "recheck_seconds": 1.0}})
        await system.start(["identity", "media", "roster", "dialin"])
        coordinator = staff_token(keyring, COORDINATOR_HSA, "Vera Samordnare", auth.ROLE_COORDINATOR)
        listener_token = staff_token(keyring, LISTENER_HSA, "Rita Region")
        roster = system.stub("roster")
        rooms, phones, pcs = [], [], []
        try:
            for i in range(CALLS):
                m = (await roster.CreateMeeting(create_request(f"bench-{i}"), metadata=as_token(tokens["booking"]))).meeting
                for rpc, request in ((roster.OpenMeeting, roster_pb2.OpenMeetingRequest),
                                     (roster.StartMeeting, roster_pb2.StartMeetingRequest)):
                    await rpc(request(meeting_id=m.meeting_id), metadata=as_token(coordinator))
                await roster.RegisterParticipant(roster_pb2.RegisterParticipantRequest(
                    meeting_id=m.meeting_id, full_name="Rita Region", role=roster_pb2.PARTICIPANT_ROLE_REGION_STAFF,
                    person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID, id=LISTENER_HSA)),
                    metadata=as_token(coordinator))
                publisher = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
                bursts = Bursts()
                publisher.addTrack(bursts)
                publisher.addTransceiver("audio", direction="recvonly")
                listener = Listener()
                await join(system, publisher, m.meeting_id, coordinator)
                await join(system, listener.pc, m.meeting_id, listener_token)
                pcs += [publisher, listener.pc]
                rooms.append((m, listener, bursts))
            await asyncio.sleep(3)  # the rooms settle (ICE, DTLS, first keyframes)
            start_cpu, start = cpu(), time.monotonic()
            await asyncio.sleep(SECONDS)
            idle_cpu = (cpu() - start_cpu) / (time.monotonic() - start)

            for i, (m, _, _) in enumerate(rooms):
                number = f"07000000{i:02d}"
                keys = sipp.pcap(work / f"keys-{i}.pcap", sipp.keys_packets(m.dial_in_code + "##"))
                scenario = sipp.scenario(work / f"call-{i}.xml", number,
                                         [sipp.pause(800), sipp.play(keys)], bye_within_ms=600000)
                phones.append(await sipp.run(scenario, ("127.0.0.1", sip_port), sipp.free_udp_port(),
                                             sipp.free_udp_port(), call_seconds=600, echo=True))
            for m, _, _ in rooms:
                async def waiting(m=m) -> bool:
                    r = await roster.GetReconciliation(roster_pb2.GetReconciliationRequest(meeting_id=m.meeting_id),
                                                       metadata=as_token(coordinator))
                    return bool(r.connected_not_identified)
                await until(waiting, 60, "every caller in the lobby")
                r = await roster.GetReconciliation(roster_pb2.GetReconciliationRequest(meeting_id=m.meeting_id),
                                                   metadata=as_token(coordinator))
                patient = next(p for p in (await roster.ListParticipants(roster_pb2.ListParticipantsRequest(
                    meeting_id=m.meeting_id), metadata=as_token(coordinator))).participants
                    if p.role == roster_pb2.PARTICIPANT_ROLE_PATIENT)
                await roster.IdentifyConnection(roster_pb2.IdentifyConnectionRequest(
                    meeting_id=m.meeting_id, connection_id=r.connected_not_identified[0].connection_id,
                    participant_id=patient.participant_id), metadata=as_token(coordinator))
            dialin = cast(DialinComponent, system.running["dialin"].component).dialin

            async def bridged() -> bool:
                return dialin.bridged == CALLS
            await until(bridged, 60, "every call bridged")
            await asyncio.sleep(3)  # the admitted prompt, playout buffers filled
            marks = time.monotonic()
            start_cpu, start = cpu(), time.monotonic()
            await asyncio.sleep(SECONDS)
            busy_cpu = (cpu() - start_cpu) / (time.monotonic() - start)

            added, baseline = [], []
            for _, listener, bursts in rooms:
                tracks = sorted((t for t in listener.onsets if t), key=lambda t: t[0])
                if len(tracks) < 2:
                    continue
                direct, echoed = tracks[0], tracks[1]
                for arrival in (t for t in direct if t >= marks):
                    sent = [b for b in bursts.bursts if b <= arrival]
                    if sent and arrival - sent[-1] < 0.9:
                        baseline.append((arrival - sent[-1]) * 1000)
                for arrival in (t for t in echoed if t >= marks):
                    before = [d for d in direct if d <= arrival]
                    if before and arrival - before[-1] < 0.9:
                        added.append((arrival - before[-1]) / 2 * 1000)
            print(f"dial-in bridge, {CALLS} concurrent calls (one room each: a WebRTC publisher and listener), "
                  f"{SECONDS:.0f} s measured")
            print(f"  CPU (this process: every service)   rooms only {idle_cpu * 100:6.1f} %   "
                  f"with the calls bridged {busy_cpu * 100:6.1f} %")
            print(f"  CPU per call                        {(busy_cpu - idle_cpu) / CALLS * 100:6.1f} % of a core")
            if added:
                print(f"  added one-way delay through the bridge (half the echo's extra arrival; {len(added)} bursts)")
                print(f"    median {statistics.median(added):6.1f} ms   p90 {np.percentile(added, 90):6.1f} ms   "
                      f"max {max(added):6.1f} ms")
                print(f"  baseline: the same bursts straight through the room, publisher to listener (one way): "
                      f"median {statistics.median(baseline):6.1f} ms   p90 {np.percentile(baseline, 90):6.1f} ms")
            else:
                print("  added delay: no echoed bursts matched (see the call logs)")
        finally:
            for proc in phones:
                if proc.returncode is None:
                    proc.terminate()
                    await proc.wait()
            for pc in pcs:
                await pc.close()
            await system.stop()
            database.stop()


if __name__ == "__main__":
    asyncio.run(main())
