"""The lean receive path (rtc_internals.LeanReceive, fastpath.c's ``parse_rtp``) against aiortc's own receive
path, its readable reference (SVPL_COMPILED_FORWARDING=false): the same packets forwarded, the same NACKs
and REMBs sent, the same receive statistics (Receiver Reports, getStats); malformed RTP never crashes it;
and through real peers, a subscriber still gets the packets the publisher retransmits after loss."""

from __future__ import annotations

import random
import struct
import types
from typing import Any, cast

import aiortc.rtcdtlstransport
import aiortc.rtcrtpreceiver
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import HeaderExtensionsMap, RtcpPacket, RtpPacket, is_rtcp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.peers import Peer
from services.media import _fastpath, rtc_internals
from services.media.forwarding import Publication
from services.media.rtc_internals import LeanReceive, run_now
from tests.media.conftest import SEND_PATHS
from tests.polling import poll

VIDEO_SSRC, RTX_SSRC, AUDIO_SSRC = 1111, 1112, 2222
VP8, RTX, OPUS = 96, 97, 111
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
EXTENSIONS = [RTCRtpHeaderExtensionParameters(id=3, uri=ABS_SEND_TIME),
              RTCRtpHeaderExtensionParameters(id=4, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level")]
KEY_TAG = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\x68\x01"  # a VP8 key frame's first 10 bytes (RFC 6386 9.1)


class Subscriber:
    """What a Publication calls on a subscriber's ForwardTrack, recorded."""

    route = None  # not a compiled sender: the publication calls push (forwarding.Publication._fan_out)

    def __init__(self, kind: str, record: list) -> None:
        self.kind, self.record = kind, record

    def push(self, packets, keyframe: bool, ntp: int, abs_send_time: int) -> None:
        self.record.append((self.kind, keyframe, [(p.ssrc, p.sequence_number, p.timestamp, p.marker, p.payload)
                                                  for p in packets]))

    def restart(self) -> None:
        self.record.append((self.kind, "restart"))


class Side:
    """A peer connection's receiving end as the media service sets it up (a Publication per receiver), with
    everything its receivers send (RTCP) and its publications forward recorded."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video: Any = self.pc.addTransceiver("video", direction="recvonly").receiver
        self.audio: Any = self.pc.addTransceiver("audio", direction="recvonly").receiver
        self.dtls = {"video": self.video.transport, "audio": self.audio.transport}  # no BUNDLE here
        self.rtcp: list[bytes] = []  # NACK, REMB (and PLI) the receivers send, in order
        self.forwarded: list[tuple] = []
        self.publications = [Publication("p", "video", self.video), Publication("p", "audio", self.audio)]
        for pub in self.publications:
            pub.subscribe(cast(Any, Subscriber(pub.kind, self.forwarded)))
        for receiver in (self.video, self.audio):
            send = receiver._send_rtcp  # bandwidth.py's cap on REMB, then aiortc's (not connected: nothing goes out)

            async def record(packet, send=send) -> None:
                self.rtcp.append(bytes(packet))
                await send(packet)

            cast(Any, receiver)._send_rtcp = record
        self.lean = {kind: LeanReceive(dtls) for kind, dtls in self.dtls.items()}
        self.handled = 0

    async def start(self) -> None:
        vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=VP8)
        rtx = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=RTX, parameters={"apt": VP8})
        opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=OPUS)
        for receiver in (self.video, self.audio):
            receiver._track = RemoteStreamTrack(kind=receiver._RTCRtpReceiver__kind)
        await self.video.receive(RTCRtpReceiveParameters(
            codecs=[vp8, rtx], headerExtensions=EXTENSIONS,
            encodings=[RTCRtpDecodingParameters(ssrc=VIDEO_SSRC, payloadType=VP8, rtx=RTCRtpRtxParameters(ssrc=RTX_SSRC))]))
        await self.audio.receive(RTCRtpReceiveParameters(codecs=[opus], headerExtensions=EXTENSIONS))
        self.video._set_rtcp_ssrc(0x5555)
        self.audio._set_rtcp_ssrc(0x6666)

    def receive(self, plain: bytes, arrival_ms: int, lean: bool) -> None:
        """What the socket's callback does with an unprotected RTP packet (rtc_internals._direct)."""
        kind = "audio" if len(plain) > 1 and plain[1] & 0x7F == OPUS else "video"
        if lean and self.lean[kind](plain, arrival_ms):
            self.handled += 1
            return
        run_now(self.dtls[kind]._handle_rtp_data(plain, arrival_time_ms=arrival_ms))

    def statistics(self) -> dict:
        """The figures of a Receiver Report block and of getStats, per source, as aiortc's receiver makes them."""
        out = {}
        for receiver in (self.video, self.audio):
            for ssrc, s in receiver._RTCRtpReceiver__remote_streams.items():
                out[ssrc] = (s.packets_received, s.packets_lost, s.fraction_lost, s.jitter, s.max_seq, s.cycles,
                             s.base_seq)
        return out

    def sources(self) -> set[int]:
        return {s.source for r in (self.video, self.audio) for s in r.getSynchronizationSources()}


def scenario(seed: int) -> list[tuple[bytes, int]]:
    """A publisher's traffic over a poor link: VP8 frames (key frames now and then) and Opus with
    abs-send-time, lost, reordered and duplicated packets, RTX retransmissions, padding-only probes, and
    malformed packets among them; (plain RTP, arrival time in ms) in arrival order."""
    rng = random.Random(seed)
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpReceiveParameters(headerExtensions=EXTENSIONS))
    out: list[tuple[bytes, int]] = []
    sent: dict[int, RtpPacket] = {}
    now, seq, aseq, ts, rtx_seq = 10_000, rng.randrange(65536), rng.randrange(65536), rng.getrandbits(32), 0
    held: list[bytes] = []

    def emit(packet: RtpPacket, abs_time: bool = True) -> bytes:
        if abs_time:
            packet.extensions.abs_send_time = ((now + rng.randint(-3, 3)) * 262 // 1000) & 0xFFFFFF
        return packet.serialize(extensions)

    for frame in range(240):
        now += rng.randint(20, 90)
        ts = (ts + 6000) & 0xFFFFFFFF
        key = frame % 60 == 0
        body = (KEY_TAG if key else b"\x11\x02\x00") + rng.randbytes(rng.choice([50, 1800, 3500]))
        chunks = [body[i:i + 1100] for i in range(0, len(body), 1100)]
        for i, chunk in enumerate(chunks):
            descriptor = bytes([0x90 if i == 0 else 0x80, 0x80]) + struct.pack("!H", 0x8000 | frame)
            p = RtpPacket(payload_type=VP8, marker=int(i == len(chunks) - 1), sequence_number=seq, timestamp=ts,
                          ssrc=VIDEO_SSRC, payload=descriptor + chunk)
            sent[seq] = p
            data = emit(p)
            seq = (seq + 1) & 0xFFFF
            roll = rng.random()
            if roll < 0.06:
                continue  # lost
            if roll < 0.10:
                held.append(data)  # reordered: arrives after the next packet
                continue
            out.append((data, now))
            if roll < 0.13:
                out.append((data, now + 1))  # duplicated
            while held:
                out.append((held.pop(), now + 2))
        if rng.random() < 0.3 and sent:  # a retransmission (RTX, RFC 4588) of a recent packet
            original = sent[rng.choice(list(sent)[-40:])]
            out.append((emit(RtpPacket(payload_type=RTX, marker=original.marker, sequence_number=rtx_seq,
                                       timestamp=original.timestamp, ssrc=RTX_SSRC,
                                       payload=struct.pack("!H", original.sequence_number) + original.payload)), now + 3))
            rtx_seq += 1
        for _ in range(3):  # audio, 20 ms packets
            aseq = (aseq + 1) & 0xFFFF
            if rng.random() > 0.04:
                out.append((emit(RtpPacket(payload_type=OPUS, sequence_number=aseq, timestamp=aseq * 960,
                                           ssrc=AUDIO_SSRC, payload=b"\xfc" + rng.randbytes(60)), abs_time=False), now))
        if rng.random() < 0.1:  # a padding-only probe (bandwidth estimation), on the video SSRC
            probe = bytearray(emit(RtpPacket(payload_type=VP8, sequence_number=seq, timestamp=ts, ssrc=VIDEO_SSRC)))
            probe[0] |= 0x20
            out.append((bytes(probe) + bytes(9) + b"\x0a", now))
            seq = (seq + 1) & 0xFFFF
        if rng.random() < 0.1:  # malformed: a cut VP8 descriptor, a cut header, an extension past the end
            bad = rng.choice([
                emit(RtpPacket(payload_type=VP8, sequence_number=seq, timestamp=ts, ssrc=VIDEO_SSRC, payload=b"\x80")),
                emit(sent[rng.choice(list(sent))])[:rng.randint(0, 20)],
                b"\x90\x60" + struct.pack("!HII", seq, ts, VIDEO_SSRC) + b"\xbe\xde\x00\x09\x22",
            ])
            out.append((bad, now))
    return out


@pytest.mark.parametrize("seed", range(6))
async def test_the_lean_path_does_what_aiortcs_path_does(monkeypatch, seed):
    """The same traffic through the lean path and through aiortc's (each on its own connection): the same
    packets forwarded in the same batches, the same NACKs and REMBs in the same order, the same receive
    statistics; the lean path took most packets, aiortc's the rest (first packets, RTX, malformed)."""
    clock = {"now": 0.0}  # receive statistics' jitter reads time.time(): the same arrival clock for both
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "time", types.SimpleNamespace(time=lambda: clock["now"]))
    sides = {"lean": Side(), "aiortc": Side()}
    try:
        for side in sides.values():
            await side.start()
        traffic = scenario(seed)
        for name, side in sides.items():
            for data, arrival in traffic:
                clock["now"] = arrival / 1000
                side.receive(data, arrival, lean=name == "lean")
        lean, reference = sides["lean"], sides["aiortc"]
        assert lean.forwarded == reference.forwarded and len(reference.forwarded) > 500
        assert lean.rtcp == reference.rtcp
        kinds = [RtcpPacket.parse(p)[0].__class__.__name__ for p in reference.rtcp]
        assert kinds.count("RtcpRtpfbPacket") >= 5 and kinds.count("RtcpPsfbPacket") >= 1  # NACKs, REMBs
        assert lean.statistics() == reference.statistics()
        assert set(reference.statistics()) == {VIDEO_SSRC, RTX_SSRC, AUDIO_SSRC}
        for receiver in ("video", "audio"):
            got = [await getattr(s, receiver).getStats() for s in (lean, reference)]
            figures = [sorted((s.ssrc, s.packetsReceived, s.packetsLost, s.jitter) for s in r.values()
                              if s.type == "inbound-rtp") for r in got]
            assert figures[0] == figures[1]
        assert lean.sources() == reference.sources() == {VIDEO_SSRC, RTX_SSRC, AUDIO_SSRC}
        assert lean.handled >= 0.8 * len(traffic) and reference.handled == 0
    finally:
        for side in sides.values():
            await side.pc.close()


def reference_parse(data: bytes, abs_id: int, vp8: bool):
    """What aiortc's path makes of an unprotected RTP packet: the fields, or None where it drops it."""
    extensions = HeaderExtensionsMap()
    if abs_id:
        extensions.configure(RTCRtpReceiveParameters(headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=abs_id, uri=ABS_SEND_TIME)]))
    try:
        p = RtpPacket.parse(data, extensions)
        if vp8 and p.payload:
            VpxPayloadDescriptor.parse(p.payload)
    except (ValueError, struct.error):
        return None
    return (p.ssrc, p.payload_type, p.marker, p.sequence_number, p.timestamp, p.payload, p.padding_size,
            p.extensions.abs_send_time)


def rtp_like(draw_bytes: bytes, first: int, extension: bytes, padding: int) -> bytes:
    """A datagram that looks like RTP far enough to reach every check: any first byte (version, padding,
    extension and CSRC count), then the header, an extension block and a padding count of the caller's."""
    return bytes([first]) + draw_bytes[:11].ljust(11, b"\0") + extension + draw_bytes[11:] + bytes([padding])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head=st.binary(max_size=40), first=st.integers(0, 255),
       extension=st.one_of(st.just(b""), st.binary(max_size=4).map(lambda b: b"\xbe\xde" + b),
                           st.binary(max_size=24).map(lambda b: b"\xbe\xde\x00\x02" + b),
                           st.binary(max_size=24).map(lambda b: b"\x10\x00\x00\x03" + b), st.binary(max_size=24)),
       padding=st.integers(0, 255), cut=st.integers(0, 80), abs_id=st.sampled_from([0, 2, 3, 14]), vp8=st.booleans())
def test_parse_rtp_takes_exactly_what_aiortc_takes_and_never_crashes(head, first, extension, padding, cut, abs_id, vp8):
    """Malformed RTP (truncated, another version, CSRC counts and extension lengths past the end, padding
    longer than the packet, cut VP8 descriptors): ``parse_rtp`` returns None for everything aiortc's path
    drops and the same fields for everything it takes; it never raises and never crashes the process."""
    for data in (rtp_like(head, first, extension, padding), rtp_like(head, first, extension, padding)[:cut]):
        got = _fastpath.parse_rtp(data, abs_id, vp8)
        assert (None if got is None else tuple(got)) == reference_parse(data, abs_id, vp8)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), abs_id=st.integers(-2**40, 2**40), vp8=st.integers(0, 3))
def test_parse_rtp_with_any_arguments_never_crashes(data, abs_id, vp8):
    try:
        _fastpath.parse_rtp(data, abs_id, vp8)
    except OverflowError:
        assert not -2**63 <= abs_id < 2**63
    with pytest.raises(TypeError):
        _fastpath.parse_rtp(bytearray(data), 3, True)
    with pytest.raises(TypeError):
        cast(Any, _fastpath.parse_rtp)(data, 3)


async def test_malformed_packets_of_a_known_source_never_break_the_lean_path():
    """Once a source takes the lean path, anything with its SSRC (random bytes after the first 12, any
    flags) is taken or handed to aiortc's path: never an exception out of the socket's callback."""
    side = Side()
    rng = random.Random(7)
    try:
        await side.start()
        good = scenario(1)[:40]
        for data, arrival in good:
            side.receive(data, arrival, lean=True)
        assert side.handled > 10
        header = good[5][0][:12]
        for i in range(3000):
            data = bytes([rng.randrange(256)]) + header[1:] + rng.randbytes(rng.randrange(0, 40))
            side.receive(data[:rng.randrange(8, len(data) + 1)], 20_000 + i, lean=True)
        # A publisher spraying SSRCs (aiortc's router learns each): the lean path takes on a bounded number.
        for ssrc in range(5000, 5200):
            for seq in range(2):
                side.receive(RtpPacket(payload_type=VP8, sequence_number=seq, timestamp=0, ssrc=ssrc,
                                       payload=b"\x10\x00").serialize(), 30_000, lean=True)
        assert len(side.lean["video"]._streams) == rtc_internals.MAX_LEAN_STREAMS
    finally:
        await side.pc.close()


@pytest.mark.slow
@pytest.mark.parametrize("world", SEND_PATHS, indirect=True)
async def test_a_subscriber_gets_what_the_publisher_retransmits_after_loss(world, request, monkeypatch):
    """What a person sees after a moment of loss on their link to the media service: the service NACKs the
    missing packets, the publisher's browser retransmits them (RTX), and they reach the subscriber, whose
    stream then shows no loss; the service's Receiver Reports tell the publisher exactly what was lost;
    a keyframe the subscriber asks for after the loss arrives. Both receive paths (lean, aiortc's)."""
    meeting = await world.open_room()
    a, b = Peer(160, 120, slots=1), Peer(176, 144, slots=1)
    dropped: set[int] = set()
    retransmitted: set[int] = set()
    parsed = [0]  # packets the media service's lean path took
    parse_rtp = _fastpath.parse_rtp

    def counting(*args):
        parsed[0] += 1
        return parse_rtp(*args)

    monkeypatch.setattr(_fastpath, "parse_rtp", counting)
    try:
        await world.join(a, meeting, "pa")
        await world.join(b, meeting, "pb")
        await poll(lambda: a.video_received() and b.video_received(), 15, what="media both ways")
        sender = next(t.sender for t in a.pc.getTransceivers() if t.kind == "video" and t.sender.track is not None)
        dtls, ssrc = sender.transport, sender._ssrc
        send_rtp = dtls._send_rtp

        async def lossy(data: bytes) -> None:  # a's link loses 6 of its video packets, once each
            if not is_rtcp(data):
                packet = RtpPacket.parse(data)
                if packet.ssrc == ssrc and len(dropped) < 6 and packet.sequence_number % 7 == 0:
                    dropped.add(packet.sequence_number)
                    return
                if packet.ssrc != ssrc and packet.ssrc == sender._rtx_ssrc and len(packet.payload) >= 2:
                    retransmitted.add(struct.unpack("!H", packet.payload[:2])[0])
            await send_rtp(data)

        dtls._send_rtp = lossy
        await poll(lambda: len(dropped) == 6, 10, what="six packets lost")
        await poll(lambda: dropped <= retransmitted, 10, lambda: f"retransmissions of {dropped} ({retransmitted})")
        pub = next(p for p in world.rooms.rooms[meeting].participants["pa"].publications if p.kind == "video")

        def lost_at_service() -> int:
            return pub.receiver._RTCRtpReceiver__remote_streams[ssrc].packets_lost

        async def lost_reported_to_a() -> int:  # the service's Receiver Reports, as a's sender reads them
            stats = await sender.getStats()
            return max((s.packetsLost for s in stats.values() if s.type == "remote-inbound-rtp"), default=-1)

        async def lost_at_b() -> list[int]:
            receiver = next(t.receiver for t in b.pc.getTransceivers() if t.kind == "video" and t.receiver.track)
            stats = await receiver.getStats()
            return [s.packetsLost for s in stats.values() if s.type == "inbound-rtp"]

        await poll(lost_at_service, 10, "the service counts the 6 lost", until=lambda lost: lost == 6)
        await poll(lost_reported_to_a, 10, "a is told of the 6 lost (Receiver Reports)", until=lambda lost: lost == 6)
        await poll(lost_at_b, 10, "b's stream has no gap (the retransmissions reached it)", until=lambda lost: lost == [0])
        keyframes = pub.keyframes
        receiver = next(t.receiver for t in b.pc.getTransceivers() if t.kind == "video" and t.receiver.track)
        for source in receiver.getSynchronizationSources():  # the video's SSRC and its RTX's
            await receiver._send_rtcp_pli(source.source)
        await poll(lambda: pub.keyframes > keyframes, 10, what="a keyframe after b asked")
        frames = b.video_received()[0].frames
        await poll(lambda: b.video_received()[0].frames > frames + 10, 10, what="b's video going on")
        if request.node.callspec.params["world"] == "compiled":  # the lean path took the publications' RTP
            assert parsed[0] > 200
        else:
            assert parsed[0] == 0  # SVPL_COMPILED_FORWARDING=false: aiortc's path only
    finally:
        await a.close()
        await b.close()


def test_received_packets_have_what_the_forwarder_reads():
    packet = _fastpath.parse_rtp(RtpPacket(payload_type=VP8, marker=1, sequence_number=5, timestamp=9, ssrc=7,
                                           payload=b"\x10abc").serialize(), 3, True)
    assert packet is not None
    assert (packet.ssrc, packet.sequence_number, packet.timestamp, packet.marker, packet.payload) == (7, 5, 9, 1, b"\x10abc")
    assert packet.abs_send_time is None and packet.padding_size == 0


@settings(max_examples=300, deadline=None)
@given(window=st.sampled_from([1, 3, 1000]), start=st.integers(0, 2**45),
       steps=st.lists(st.tuples(st.sampled_from(["add", "rate", "reset"]), st.integers(-5, 3000), st.integers(0, 1500)),
                      max_size=120))
def test_the_compiled_rate_counter_is_aiortcs(window, start, steps):
    """fastpath.c's RateCounter (the REMB estimator's incoming bitrate on the lean path) gives aiortc's
    RateCounter's figures, whatever the times (backwards too), sizes, windows and resets; taken over
    mid-way (load) it goes on as aiortc's would."""
    from aiortc.rate import RateCounter

    reference, compiled = RateCounter(window, 8000), _fastpath.RateCounter(window, 8000)
    now = start
    for i, (op, step, size) in enumerate(steps):
        now = max(0, now + step)
        if op == "add":
            reference.add(size, now)
            compiled.add(size, now)
        elif op == "rate":
            assert compiled.rate(now) == reference.rate(now)
        else:
            reference.reset()
            compiled.reset()
        if i == len(steps) // 2:  # as compile_incoming_bitrate takes a receiver's counter over
            compiled = _fastpath.RateCounter(window, 8000)
            compiled.load(reference._origin_index, reference._origin_ms, [b.count for b in reference._buckets],
                          [b.value for b in reference._buckets])
    assert compiled.rate(now + 1) == reference.rate(now + 1)


def test_the_compiled_rate_counter_refuses_what_does_not_fit():
    counter = _fastpath.RateCounter(10)
    for bad in ((0,), (10**9,), (10, -1)):
        with pytest.raises(ValueError):
            _fastpath.RateCounter(*bad)
    for args in ((-1, 5), (5, -1), (2**62, 5), (5, 2**62)):
        with pytest.raises(ValueError):
            counter.add(*args)
    with pytest.raises(OverflowError):
        counter.add(2**64, 5)
    with pytest.raises(ValueError):
        counter.load(0, 5, [0] * 9, [0] * 10)
    with pytest.raises(ValueError):
        counter.load(10, 5, [0] * 10, [0] * 10)
    with pytest.raises(TypeError):
        counter.load(0, 5, (0,) * 10, [0] * 10)
    assert counter.rate(5) is None


def test_the_aiortc_receive_steps_the_lean_path_mirrors():
    """Tripwire for an aiortc upgrade: LeanReceive repeats RTCRtpReceiver._handle_rtp_packet's steps in this
    order on the receiver's own state, and compile_incoming_bitrate takes RateCounter's state over."""
    import inspect

    from aiortc.rate import RateCounter, RemoteBitrateEstimator
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    handle = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    steps = ["if not self._enabled:", "self.__remote_bitrate_estimator.add(",
             "payload_size=len(packet.payload) + packet.padding_size",
             "await self._send_rtcp(rtcp_packet)", "self.__active_ssrc[packet.ssrc] = clock.current_datetime()",
             "codec = self.__codecs.get(packet.payload_type)", "self.__remote_streams[packet.ssrc].add(packet)",
             "if is_rtx(codec):", "self.__nack_generator.add(packet)", "sorted(self.__nack_generator.missing)",
             "packet._data = depayload(codec, packet.payload)", "self.__jitter_buffer.add(packet)"]
    assert [handle.index(step) for step in steps] == sorted(handle.index(step) for step in steps)
    assert "self.incoming_bitrate = RateCounter(1000, 8000)" in inspect.getsource(RemoteBitrateEstimator.__init__)
    counter = inspect.getsource(RateCounter)
    for name in ("self._origin_index", "self._origin_ms", "self._buckets", "self._window_size", "self._scale"):
        assert name in counter
    assert "packet = RtpPacket.parse(data, self._rtp_header_extensions_map)" in inspect.getsource(
        aiortc.rtcdtlstransport.RTCDtlsTransport._handle_rtp_data)


def test_the_lean_paths_arrival_clock_is_aiortcs():
    """The lean path stamps arrivals (the REMB estimator's clock) with rtc_internals.wall_ms, aiortc's
    current_ms without its datetime objects: the same milliseconds since the NTP epoch, to one."""
    from aiortc.clock import current_ms

    for _ in range(1000):
        before, ours, after = current_ms(), rtc_internals.wall_ms(), current_ms()
        assert before - 1 <= ours <= after + 1


def test_the_forwarders_ntp_clock_is_aiortcs():
    """The fan-out stamps Sender Report and abs-send-time times with rtc_internals.ntp_time, aiortc's
    current_ntp_time without its datetime objects: the same 64-bit NTP time, to a millisecond."""
    from aiortc.clock import current_ntp_time

    ms = (1 << 32) // 1000
    for _ in range(1000):
        before, ours, after = current_ntp_time(), rtc_internals.ntp_time(), current_ntp_time()
        assert before - ms <= ours <= after + ms, (before, ours, after)


async def test_a_participant_sending_under_ever_new_ssrcs_cannot_grow_medias_memory(world):
    """A participant's own client (it holds the SRTP keys) sends its audio under 80 new SSRCs in turn: media's
    RTP router keeps at most MAX_LEARNED_SOURCES of them learned, the receiver's per-source state likewise, and
    the newest source still reaches the other participant."""
    meeting, hostile, nurse = await world.two_in_a_room("hostile", "nurse", "audio")
    try:
        sender = next(t.sender for t in hostile.pc.getTransceivers()
                      if t.sender.track is not None and t.sender.track.kind == "audio")
        publication = next(p for p in world.rooms.rooms[meeting].participants["hostile"].publications
                           if p.kind == "audio")
        router = publication.receiver.transport._rtp_router
        named = len(router.ssrc_table)  # the SSRCs the offer named, and the first learned
        for _ in range(80):
            sender._ssrc = random.getrandbits(32)  # aiortc heads every packet with it
            await poll(lambda: publication._ssrc, 5, what="media taking the new source",
                       until=lambda ssrc: ssrc == sender._ssrc)
        assert len(router.ssrc_table) <= named + rtc_internals.MAX_LEARNED_SOURCES, len(router.ssrc_table)
        streams = publication.receiver._RTCRtpReceiver__remote_streams
        assert len(streams) <= rtc_internals.MAX_LEARNED_SOURCES + 1, len(streams)
        assert sender._ssrc in router.ssrc_table
        heard = nurse.audio_received()[0].frames
        await poll(lambda: nurse.audio_received()[0].frames, 10, what="the newest source reaching the nurse",
                   until=lambda frames: frames > heard + 25)
    finally:
        await hostile.close()
        await nurse.close()
