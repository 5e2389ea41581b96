"""The compiled send path (services/media/fastpath.c) against its Python reference
(rtc_internals.RtpOut._send_python): for the same packets and state, the same bytes on the wire, the same
retransmission ring and sequence state, the same outcome when libsrtp refuses; and whatever a publisher
or a caller hands it (any header fields, payload sizes beyond the SRTP buffer, wrong types, values out
of range) ends in a result or a Python exception, never a crash of the process.

Both paths send on a real loopback UDP socket through asyncio's datagram transport, with pylibsrtp
sessions of one key (SRTP is deterministic for the same key, packet and index), and the datagrams are
read back off a real socket."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcrtpparameters import RTCRtpParameters
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

from devstack.peers import Peer
from services.media import _fastpath
from services.media.forwarding import DatagramBatch
from services.media.rtc_internals import (
    MAX_PLAIN,
    RtpOut,
    RtpPacket,
    SrtpProtect,
    negotiated_codecs,
    srtp_context,
    srtp_protect_function,
)
from tests.media.conftest import SEND_PATHS
from tests.polling import poll

KEY = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt


class Rig:
    """A sender's two RtpOuts (compiled, Python) on one asyncio datagram transport, and a receiving socket."""

    def __init__(self) -> None:
        # Its own loop, current while it lives (aiortc's objects take the current loop when made; a test
        # before this one may have ended with asyncio.run, which leaves none).
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        sender: Any = self.pc.addTransceiver("video").sender
        sender._RTCRtpSender__rtp_header_extensions_map.configure(
            RTCRtpParameters(headerExtensions=HEADER_EXTENSIONS["video"]))  # MID and abs-send-time
        sender._RTCRtpSender__mid = "1"
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver.bind(("127.0.0.1", 0))
        self.receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.receiver.settimeout(5)
        self.addr = self.receiver.getsockname()
        self.transport: Any
        self.transport, _ = self.loop.run_until_complete(
            self.loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)))
        self.outs = {path: RtpOut(sender, DatagramBatch(), fastpath=path == "compiled") for path in ("compiled", "python")}
        for out in self.outs.values():
            out.payload_type = 96
            out._transport, out._addr = self.transport, self.addr

    def start(self, first: int, sequence_offset: int, timestamp_offset: int, sequence: int, transport: Any = None) -> None:
        """Fresh SRTP sessions of one key, fresh rings, the same numbering state on both paths; sending on
        asyncio's datagram transport (its socket), or on `transport` (a relay's, without a socket)."""
        for out in self.outs.values():
            session = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
            out._protect = SrtpProtect(session)
            out._transport = transport or self.transport
            out._sock = None if transport else self.transport._sock
            out._route_c = _fastpath.Route(out._sock, self.addr[0], self.addr[1], srtp_protect_function(),
                                           srtp_context(session), session)
            out._ring[:] = [None] * len(out._ring)
            out._first, out._sequence_offset, out._timestamp_offset, out._sequence = (
                first, sequence_offset, timestamp_offset, sequence)

    def send(self, path: str, packets: list[RtpPacket], abs_send_time: int):
        """(outcome, datagrams received, ring, next sequence number) of one send on `path`."""
        out = self.outs[path]
        send = out._send_compiled if path == "compiled" else out._send_python
        outcome: Any
        try:
            outcome = send(packets, abs_send_time)
        except (ConnectionError, ValueError) as e:
            outcome = type(e)
        count = outcome[1] if isinstance(outcome, tuple) else 0
        received = [self.receiver.recv(2048) for _ in range(count)]
        return outcome, received, list(out._ring), out._sequence

    def drained(self) -> bool:
        self.receiver.setblocking(False)
        try:
            self.receiver.recv(2048)
            return False
        except BlockingIOError:
            return True
        finally:
            self.receiver.settimeout(5)

    def close(self) -> None:
        self.transport.close()
        self.loop.run_until_complete(self.pc.close())
        asyncio.set_event_loop(None)
        self.loop.close()
        self.receiver.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def packet(seq: int, ts: int, marker: bool, payload: bytes) -> RtpPacket:
    return RtpPacket(payload_type=100, sequence_number=seq, timestamp=ts, marker=int(marker), ssrc=4321, payload=payload)


# Payload sizes: small, GSO-sized runs (equal sizes), and beyond what fits the SRTP buffer.
SIZES = st.one_of(st.integers(0, 80), st.sampled_from([1100, 1200, MAX_PLAIN - 40, MAX_PLAIN, 1500, 4000]))
PACKETS = st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.booleans(), SIZES, st.integers(0, 255)),
                   max_size=40)
FRAMES = st.builds(lambda start, n, size, ts: [(start + i, ts, i == n - 1, size, i) for i in range(n)],
                   st.integers(0, 0xFFFF), st.integers(1, 70), st.sampled_from([200, 1100, 1200]), st.integers(0, 0xFFFFFFFF))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.one_of(PACKETS, FRAMES), first=st.integers(0, 0xFFFF), sequence_offset=st.integers(0, 0xFFFF),
       timestamp_offset=st.integers(0, 0xFFFFFFFF), sequence=st.integers(0, 0xFFFF),
       abs_send_time=st.integers(0, 0xFFFFFF))
def test_compiled_send_is_the_python_reference_byte_for_byte(rig, spec, first, sequence_offset, timestamp_offset,
                                                            sequence, abs_send_time):
    packets = [packet(seq & 0xFFFF, ts, marker, bytes([fill]) * size) for seq, ts, marker, size, fill in spec]
    results = {}
    for path in ("python", "compiled"):
        rig.start(first, sequence_offset, timestamp_offset, sequence)
        results[path] = rig.send(path, packets, abs_send_time)
    assert results["compiled"] == results["python"]
    assert rig.drained()


def test_what_the_compiled_path_sends_unprotects_to_the_ring_and_skips_what_does_not_fit(rig):
    """A receiver with the key gets exactly the plain packets kept for retransmission, re-headed; an
    oversized payload (a hostile publisher's) is dropped, the packets around it still go."""
    rig.start(first=100, sequence_offset=5, timestamp_offset=1000, sequence=105)
    packets = [packet(100, 90000, False, b"a" * 1200), packet(101, 90000, False, b"b" * 5000),
               packet(102, 90000, True, b"c" * 300)]
    (timestamp, count, octets, wire), received, ring, sequence = rig.send("compiled", packets, 0x123456)
    assert (timestamp, count, octets, sequence) == (91000, 2, 1500, 108)
    inbound = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    plain = [inbound.unprotect(d) for d in received]
    assert plain == [ring[105 % 128], ring[107 % 128]] and ring[106 % 128] is None
    first, last = (RtpPacket.parse(p, rig.outs["compiled"].sender._RTCRtpSender__rtp_header_extensions_map) for p in plain)
    assert (first.sequence_number, first.timestamp, first.marker, first.payload_type) == (105, 91000, 0, 96)
    assert (last.sequence_number, last.marker, last.payload) == (107, 1, b"c" * 300)
    assert first.extensions.abs_send_time == 0x123456 and first.extensions.mid == "1"
    assert wire == sum(map(len, received))


def test_a_socket_that_refuses_gso_gets_every_datagram_through_the_transport(rig):
    rig.start(first=0, sequence_offset=0, timestamp_offset=0, sequence=0)
    sock = rig.transport._sock
    sock.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: the kernel cannot segment without checksums
    try:
        frame = [packet(i, 3000, i == 4, b"x" * 1000) for i in range(5)]
        outcome, received, _, _ = rig.send("compiled", frame, 0)
        assert outcome[1] == 5 and len(received) == 5
        assert not rig.outs["compiled"]._route_c.gso
        outcome, received, _, _ = rig.send("compiled", [packet(i, 6000, i == 9, b"y" * 1000) for i in range(5, 10)], 0)
        assert len(received) == 5
    finally:
        sock.setsockopt(socket.SOL_SOCKET, 11, 0)
    assert rig.drained()


class Relayed:
    """What aioice's TurnTransport offers for a relayed candidate pair: `sendto` only (no socket, no
    write buffer); it wraps each datagram for the TURN server."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr) -> None:
        self.sent.append(data)


def test_behind_a_turn_relay_both_paths_hand_the_transport_the_same_datagrams(rig):
    import aioice.turn

    assert not hasattr(aioice.turn.TurnTransport, "get_write_buffer_size")  # why the socket is None here
    frames = [[packet(10 + i, 3000, i == 2, bytes([i]) * 1100) for i in range(3)], [packet(13, 6000, True, b"a" * 90)]]
    sent = {}
    for path, out in rig.outs.items():
        relay = Relayed()
        rig.start(first=10, sequence_offset=100, timestamp_offset=5, sequence=110, transport=relay)
        for frame in frames:
            (out._send_compiled if path == "compiled" else out._send_python)(frame, 7)
        sent[path] = relay.sent
    assert len(sent["python"]) == 4 and sent["compiled"] == sent["python"]
    assert rig.drained()  # nothing went past the relay onto the socket


class Odd:
    """A packet-like object whose fields are whatever a fuzzer makes them."""

    def __init__(self, sequence_number, timestamp, marker, payload) -> None:
        self.sequence_number, self.timestamp, self.marker, self.payload = sequence_number, timestamp, marker, payload


ANY = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.binary(max_size=20), st.text(max_size=5),
                st.floats(allow_nan=True), st.lists(st.integers(), max_size=3))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(st.binary(max_size=300), ANY), at=st.one_of(st.integers(-3, 300), ANY),
       numbers=st.lists(st.one_of(st.integers(-5, 2**33), ANY), min_size=6, max_size=6),
       packets=st.one_of(st.lists(st.builds(Odd, st.one_of(st.integers(-3, 70000), ANY), st.one_of(st.integers(-3, 2**33), ANY),
                                            ANY, st.one_of(st.binary(max_size=1600), ANY)), max_size=5), ANY),
       ring=st.one_of(st.just("ring"), ANY), direct=ANY)
def test_hostile_arguments_never_crash_the_compiled_path(rig, header, at, numbers, packets, ring, direct):
    rig.start(first=0, sequence_offset=0, timestamp_offset=0, sequence=0)
    out = rig.outs["compiled"]
    if ring == "ring":
        ring = out._ring
    try:
        result = _fastpath.send(out._route_c, header, at, *numbers, packets, ring, direct)
    except (TypeError, ValueError, OverflowError, ConnectionError):
        pass
    else:
        next_sequence, last_timestamp, count, octets, wire, rest, refused = result
        assert 0 <= next_sequence <= 0xFFFF and count >= 0 and refused in (True, False)
        for data in rest or []:  # what the socket did not take (not direct): still whole datagrams
            assert isinstance(data, bytes) and len(data) <= 1500
        for _ in range(count - len(rest or [])):
            rig.receiver.recv(2048)
    assert len(out._ring) == 128
    assert all(p is None or (isinstance(p, bytes) and len(p) <= MAX_PLAIN) for p in out._ring)


def test_wrong_calls_are_clear_errors():
    with pytest.raises(TypeError):
        _fastpath.send()
    with pytest.raises(TypeError):
        _fastpath.Route(None, "127.0.0.1", 9)
    with pytest.raises(ValueError, match="numeric address"):
        _fastpath.Route(None, "localhost", 9, 1, 1, None)  # never a name lookup
    with pytest.raises(ValueError):
        _fastpath.Route(None, "127.0.0.1", 70000, 1, 1, None)
    with pytest.raises(ValueError):
        _fastpath.Route(None, "127.0.0.1", 9, 0, 0, None)


@pytest.mark.parametrize("world", SEND_PATHS, indirect=True)
async def test_a_participant_sending_hostile_rtp_does_not_stop_the_room(world, caplog):
    """An attacker with a valid join token publishes, next to its real video, RTP the forwarder cannot
    use: packets too large to forward with the subscriber's header (the largest its own SRTP takes),
    sequence numbers jumping ahead, random timestamps and marker bits, on another SSRC with the video's
    payload type (so the source seems to switch back and forth). Nothing fails, nothing of it reaches
    the subscriber, and the other participant keeps receiving the attacker's real video (from a
    keyframe asked for) and audio. (Small random packets are forwarded as they are, as any SFU does:
    see docs/MEDIA-FASTPATH.md for what aiortc's own receiver makes of them.)"""
    caplog.set_level(logging.WARNING)
    rng = random.Random(21)
    meeting = await world.open_room()
    a, b = Peer(slots=1), Peer(slots=1)
    try:
        await world.join(a, meeting, "pa")
        await world.join(b, meeting, "pb")
        await poll(lambda: a.video_received() and b.video_received(), 10, what="media")
        t = next(t for t in a.pc.getTransceivers() if t.kind == "video" and t.sender.track is not None)
        sender: Any = t.sender
        payload_type = negotiated_codecs(t)[0].payloadType
        seq = rng.randrange(0x10000)
        for i in range(300):
            size = rng.choice([MAX_PLAIN - 12, MAX_PLAIN - 20])
            seq = (seq + rng.choice([1, 2, rng.randrange(1, 0x8000)])) & 0xFFFF  # ahead: a's libsrtp takes it
            packet = RtpPacket(payload_type=payload_type, sequence_number=seq, timestamp=rng.randrange(2**32),
                               marker=rng.randrange(2), ssrc=sender._ssrc ^ 0x5A5A, payload=rng.randbytes(size))
            await sender.transport._send_rtp(packet.serialize())  # SRTP-protected by a's own session
            if i % 50 == 0:
                await asyncio.sleep(0)
        (video,), (audio,) = b.video_received(), b.audio_received()
        frames, sounds = video.frames, audio.frames
        await poll(lambda: video.frames >= frames + 15 and audio.frames >= sounds + 25, 15,
                   what=lambda: f"b receiving a's video and audio again after the hostile packets (video frames "
                                f"{frames} -> {video.frames}, audio {sounds} -> {audio.frames})")
        failures = [r for r in caplog.records if r.name.startswith("svpl.media") and r.levelno >= logging.ERROR]
        assert failures == []
    finally:
        await a.close()
        await b.close()
