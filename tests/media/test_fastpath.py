"""The compiled send path (services/media/fastpath.c) against its Python reference
(rtc_internals.RtpOut._send_python): for the same packets and state, the same bytes on the wire, the same
retransmission ring, sequence state and Sender Report / transport counters, the same outcome when libsrtp
refuses; for the fan-out (one call for every subscriber's sender, ``fastpath.fan_out``) the same per
subscriber, with some subscribers not ready (not armed, disabled, moved to another ICE pair), queued,
relayed or refusing GSO; and whatever a publisher or a caller hands it (any header fields, payload sizes
beyond the SRTP buffer, wrong types, values out of range, objects that run code when read) ends in a
result or a Python exception, never a crash of the process.

Both paths send on real loopback UDP sockets through asyncio's datagram transports, with pylibsrtp
sessions of one key (SRTP is deterministic for the same key, packet and index), and the datagrams are
read back off real sockets."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

import aioice.turn
import pytest
import uvloop
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcrtpparameters import RTCRtpParameters
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

from services.media import _fastpath
from services.media.forwarding import DatagramBatch, ForwardTrack
from services.media.rtc_internals import (
    FAN_FAILED,
    FAN_PYTHON,
    FAN_REFUSED,
    FAN_REST,
    MAX_PLAIN,
    WINDOW,
    RtpOut,
    RtpPacket,
    SrtpProtect,
    attach_rtp_out,
    negotiated_codecs,
    own_socket,
    sender_report,
    settle_counters,
    srtp_context,
    srtp_protect_function,
)
from tests.media.conftest import SEND_PATHS
from tests.polling import poll

KEY = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt
SSRC = 0x5EED  # every sender here: the same header on both paths
PATHS = ("python", "compiled")
SO_NO_CHECK = 11  # with it, the kernel cannot segment (no checksums): GSO is refused


class Relayed:
    """What aioice's TurnTransport offers for a relayed candidate pair: `sendto` only (no socket, no
    write buffer); it wraps each datagram for the TURN server."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr) -> None:
        self.sent.append(data)


class Queued(Relayed):
    """A datagram transport with datagrams already queued in it: what comes next must queue behind them."""

    def __init__(self, sock) -> None:
        super().__init__()
        self._sock = sock

    def get_write_buffer_size(self) -> int:
        return 1

    def is_closing(self) -> bool:
        return False


class Subscriber:
    """One subscriber's sender twice (compiled, Python: senders of one SSRC), sending on a datagram transport
    of its own to a receiving socket of its own."""

    def __init__(self, rig: Rig) -> None:
        self.loop = rig.loop
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver.bind(("127.0.0.1", 0))
        self.receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.receiver.settimeout(5)
        self.addr = self.receiver.getsockname()
        self.transport: Any
        self.transport, _ = self.loop.run_until_complete(
            self.loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)))
        self.outs = {path: attach_rtp_out(rig.sender(), lambda: None, DatagramBatch(), fastpath=path == "compiled")
                     for path in PATHS}
        for out in self.outs.values():
            out.payload_type = 96
            out.header(0, 0)  # serialised once (compiled: set on its route)
        self.pair = object()  # the nominated ICE pair, as the route was taken from it
        self.relay: Relayed | None = None

    def start(self, first: int, sequence_offset: int, timestamp_offset: int, sequence: int, transport: Any = None) -> None:
        """Fresh SRTP sessions of one key, fresh rings and counters, the same numbering state on both paths;
        sending on asyncio's datagram transport (its socket), or on `transport` (a relay's, a queued one)."""
        self.relay = transport
        for out in self.outs.values():
            session = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
            out._protect, out._batch = SrtpProtect(session), DatagramBatch()
            out._transport, out._addr = transport or self.transport, self.addr
            sender = out.sender
            dtls = sender._RTCRtpSender__transport
            sender._enabled = True
            out.settle()  # what earlier tests sent, before the counters start again
            sender._RTCRtpSender__ntp_timestamp = sender._RTCRtpSender__rtp_timestamp = 0
            sender._RTCRtpSender__octet_count = sender._RTCRtpSender__packet_count = 0
            dtls._RTCDtlsTransport__tx_bytes = dtls._RTCDtlsTransport__tx_packets = 0
            self.nominated = {1: self.pair}
            if out.fastpath:
                out.state.target(own_socket(out._transport), self.addr[0], self.addr[1], srtp_protect_function(),
                                 srtp_context(session), session, sender, dtls, dtls._state, self.nominated, self.pair,
                                 out._transport)
            for i in range(len(out._ring)):
                out._ring[i] = None
            state = out.state
            state.first, state.sequence_offset, state.timestamp_offset, state.sequence = (
                first, sequence_offset, timestamp_offset, sequence)
            state.last_timestamp, state.sends = -1, 0

    def received(self, count: int) -> list[bytes]:
        """What the last send put on the wire (or handed the relay's / queued transport)."""
        if self.relay is not None:
            sent, self.relay.sent = self.relay.sent, []
            return sent
        return [self.receiver.recv(2048) for _ in range(count)]

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
        self.receiver.close()


def snapshot(out: RtpOut) -> tuple:
    """What a send leaves behind: ring, numbering, and what aiortc's Sender Reports and getStats read (the
    compiled path's counters settled, as those readers do first)."""
    out.settle()
    sender, state = out.sender, out.state
    dtls = sender._RTCRtpSender__transport
    return (list(out._ring), state.sequence, state.last_timestamp, state.sends, sender._RTCRtpSender__ntp_timestamp,
            sender._RTCRtpSender__rtp_timestamp, sender._RTCRtpSender__octet_count, sender._RTCRtpSender__packet_count,
            dtls._RTCDtlsTransport__tx_bytes, dtls._RTCDtlsTransport__tx_packets)


class Rig:
    """Senders of one peer connection (each with its own DTLS transport until bundled), and subscribers."""

    def __init__(self, loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop) -> None:
        # Its own loop, current while it lives (aiortc's objects take the current loop when made; a test
        # before this one may have ended with asyncio.run, which leaves none).
        self.loop = loop_factory()
        asyncio.set_event_loop(self.loop)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.subscribers = [Subscriber(self) for _ in range(4)]
        self.one = self.subscribers[0]
        self.outs = self.one.outs

    def sender(self) -> Any:
        sender: Any = self.pc.addTransceiver("video").sender
        sender._RTCRtpSender__rtp_header_extensions_map.configure(
            RTCRtpParameters(headerExtensions=HEADER_EXTENSIONS["video"]))  # MID and abs-send-time
        sender._RTCRtpSender__mid = "1"
        sender._ssrc = SSRC
        return sender

    def start(self, *args, **kwargs) -> None:
        self.one.start(*args, **kwargs)

    def send(self, path: str, packets: list[RtpPacket], abs_send_time: int, ntp: int = 1 << 40):
        """(outcome, datagrams received, state left behind) of one send on `path`."""
        out = self.outs[path]
        send = out._send_compiled if path == "compiled" else out._send_python
        outcome: Any
        try:
            outcome = send(packets, ntp, abs_send_time)
        except (ConnectionError, ValueError) as e:
            outcome = type(e)
        received = self.one.received(outcome if isinstance(outcome, int) else 0)
        return outcome, received, snapshot(out)

    def drained(self) -> bool:
        return all(s.drained() for s in self.subscribers)

    def close(self) -> None:
        for s in self.subscribers:
            s.close()
        self.loop.run_until_complete(self.pc.close())
        asyncio.set_event_loop(None)
        self.loop.close()


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
NUMBERING = st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFF))


def packets_of(spec) -> list[RtpPacket]:
    return [packet(seq & 0xFFFF, ts, marker, bytes([fill]) * size) for seq, ts, marker, size, fill in spec]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.one_of(PACKETS, FRAMES), numbering=NUMBERING, abs_send_time=st.integers(0, 0xFFFFFF),
       ntp=st.integers(0, 2**64 - 1))
def test_compiled_send_is_the_python_reference_byte_for_byte(rig, spec, numbering, abs_send_time, ntp):
    packets = packets_of(spec)
    results = {}
    for path in PATHS:
        rig.start(*numbering)
        results[path] = rig.send(path, packets, abs_send_time, ntp)
    assert results["compiled"] == results["python"]
    assert rig.drained()


# How a subscriber's sender is when a packet is fanned out: ready (armed by its track, connected), or
# not (its track is rebasing, the sender is disabled, the connection has moved to another nominated ICE
# pair: fan_out leaves those to Python), or sending behind a queue, through a TURN relay, or on a socket
# that refuses GSO.
READY = ("ready", "queued", "relayed", "no-gso")
NOT_READY = ("unarmed", "disabled", "moved")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.one_of(PACKETS, FRAMES), subscribers=st.lists(st.tuples(st.sampled_from(READY + NOT_READY), NUMBERING),
                                                              min_size=1, max_size=4),
       abs_send_time=st.integers(0, 0xFFFFFF), ntp=st.integers(0, 2**64 - 1))
def test_the_fan_out_is_the_python_reference_for_every_subscriber(rig, spec, subscribers, abs_send_time, ntp):
    """One fan_out call for every subscriber's route does, per subscriber, what the Python reference does
    for it: the same datagrams (to its socket, relay or queue), ring, numbering and counters; the
    subscribers that are not ready are left untouched and reported for Python's push."""
    packets = packets_of(spec)
    chosen = rig.subscribers[:len(subscribers)]
    results: dict[str, list] = {}
    counts: list[int] = []
    failed: list[int] = []
    for path in PATHS:  # the reference first: its datagram counts say how many to read off each socket
        routes = []
        for sub, (how, numbering) in zip(chosen, subscribers):
            transport = Relayed() if how == "relayed" else Queued(sub.transport._sock) if how == "queued" else None
            sub.start(*numbering, transport=transport)
            sub.transport._sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, int(how == "no-gso"))
            out = sub.outs[path]
            out.sender._enabled = how != "disabled"
            if how == "moved":
                sub.nominated[1] = object()
            out.arm(how != "unarmed")
            routes.append(out.state)
        if path == "python":  # the reference: each ready subscriber's send, one after the other
            for i, (sub, (how, _)) in enumerate(zip(chosen, subscribers)):
                try:
                    counts.append(sub.outs[path]._send_python(packets, ntp, abs_send_time) if how in READY else 0)
                except ConnectionError:  # libsrtp refused (a number twice in one frame: a replay)
                    counts.append(0)
                    failed.append(i)
        else:
            todo = _fastpath.fan_out(routes, packets, abs_send_time, ntp) or []
            assert sorted(i for i, what, _ in todo if what == FAN_PYTHON) == [
                i for i, (how, _) in enumerate(subscribers) if how in NOT_READY]
            assert sorted(i for i, what, _ in todo if what == FAN_FAILED) == failed
            for i, what, rest in todo:
                if what in (FAN_REST, FAN_REFUSED):
                    chosen[i].outs[path].deliver(rest, what == FAN_REFUSED)
        received = [sub.received(count) for sub, count in zip(chosen, counts)]  # the reference's counts
        for sub in chosen:
            sub.transport._sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 0)
        for sub in chosen:  # subscribers may share a DTLS transport: every route's counters settled first
            sub.outs[path].settle()
        results[path] = [received, [snapshot(sub.outs[path]) for sub in chosen]]
    assert results["compiled"] == results["python"]
    assert rig.drained()


def test_a_fan_out_sends_each_ready_subscriber_the_frame_and_counts_it_for_sender_reports(rig):
    """Three subscribers of one frame: two ready, one whose track is rebasing. The ready ones get the frame
    in their own numbering (SRTP a receiver with the key unprotects), their Sender Report counters and the
    transports' counters move as aiortc's own loop would move them, once settled (as the Sender Reports,
    report blocks and getStats do before reading them); the third is untouched and left to Python."""
    subs = rig.subscribers[:3]
    for i, sub in enumerate(subs):
        sub.start(first=100, sequence_offset=10 * i, timestamp_offset=1000 * i, sequence=100 + 10 * i)
    outs = [sub.outs["compiled"] for sub in subs]
    for out, armed in zip(outs, (True, True, False)):
        out.arm(armed)
    frame = [packet(100 + k, 90000, k == 2, bytes([k]) * 1100) for k in range(3)]
    assert _fastpath.fan_out([out.state for out in outs], frame, 0x123456, 0xABCDEF0123456789) == [(2, FAN_PYTHON, None)]
    inbound = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    sent: list[bytes] = []
    for i, (sub, out) in enumerate(zip(subs[:2], outs)):
        datagrams = sub.received(3)
        sent += datagrams
        plain = [RtpPacket.parse(inbound.unprotect(d)) for d in datagrams]
        assert [(p.sequence_number, p.timestamp, p.marker) for p in plain] == [
            (100 + 10 * i + k, 90000 + 1000 * i, int(k == 2)) for k in range(3)]
        sender = out.sender
        out.settle()
        assert (sender._RTCRtpSender__ntp_timestamp, sender._RTCRtpSender__rtp_timestamp) == (0xABCDEF0123456789,
                                                                                          90000 + 1000 * i)
        assert (sender._RTCRtpSender__octet_count, sender._RTCRtpSender__packet_count) == (3300, 3)
        assert (out.state.sequence, out.state.last_timestamp, out.sends) == (103 + 10 * i, 90000 + 1000 * i, 1)
        inbound = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))  # the next sender's own index
    transports = {id(t): t for t in (out.sender._RTCRtpSender__transport for out in outs)}.values()  # may be one
    assert sum(t._RTCDtlsTransport__tx_packets for t in transports) == 6
    assert sum(t._RTCDtlsTransport__tx_bytes for t in transports) == sum(map(len, sent))
    assert snapshot(outs[2])[1:8] == (120, -1, 0, 0, 0, 0, 0)
    assert rig.drained()


def test_every_reader_of_the_counters_sees_every_packet_sent(rig):
    """The compiled path adds a sender's counters up in its route and sets aiortc's attributes at most every
    0.5 s; what reads them settles first, so each sees every packet sent: the Sender Report, aiortc's
    handling of a report block (remote-inbound-rtp), getStats."""
    sub = rig.one
    sub.start(first=0, sequence_offset=0, timestamp_offset=0, sequence=0)
    out = sub.outs["compiled"]
    out.arm(True)
    sender, sent = out.sender, 0

    def fan(count: int) -> None:
        nonlocal sent
        frame = [packet(sent + k, 9000, k == count - 1, b"a" * 100) for k in range(count)]
        assert _fastpath.fan_out([out.state], frame, 0, 7 << 32) is None
        sub.received(count)
        sent += count

    fan(1)  # the first send on a new target settles at once
    assert (sender._RTCRtpSender__packet_count, sender._RTCRtpSender__octet_count) == (1, 100)
    fan(2)
    assert sender._RTCRtpSender__packet_count == 1  # added up in the route: not yet on the sender
    info = sender_report(sender)[0].sender_info
    assert (info.packet_count, info.octet_count, info.rtp_timestamp, info.ntp_timestamp) == (3, 300, 9000, 7 << 32)
    fan(3)
    block = RtcpReceiverInfo(ssrc=SSRC, fraction_lost=0, packets_lost=1, highest_sequence=5, jitter=0, lsr=0, dlsr=0)
    rig.loop.run_until_complete(sender._handle_rtcp_packet(RtcpRrPacket(ssrc=1, reports=[block])))
    fan(4)
    stats = list(rig.loop.run_until_complete(sender.getStats()).values())
    assert [s.packetsReceived for s in stats if s.type == "remote-inbound-rtp"] == [6 - 1]  # at the report
    assert [(s.packetsSent, s.bytesSent) for s in stats if s.type == "outbound-rtp"] == [(10, 1000)]
    dtls = sender._RTCRtpSender__transport
    assert dtls._RTCDtlsTransport__tx_packets == 10  # the transport's too (settled with the sender's)
    settle_counters(sender)  # nothing left: settling again changes nothing
    assert (sender._RTCRtpSender__packet_count, dtls._RTCDtlsTransport__tx_packets) == (10, 10)


def test_on_uvloop_the_compiled_path_sends_on_the_transports_own_socket():
    """The media process runs on uvloop (services/media/server.py), whose datagram transport has no ``_sock``:
    the route takes the socket uvloop gives (own_socket) and sends on it directly, the same datagrams and
    state as the Python reference sends through the transport (single packets, a GSO-sized frame, a packet
    that does not fit); a TURN relay's transport, which answers get_extra_info too, gets no socket."""
    rig = Rig(uvloop.new_event_loop)
    try:
        transport = rig.one.transport
        assert not hasattr(transport, "_sock") and own_socket(transport).fileno() >= 0
        assert own_socket(aioice.turn.TurnTransport(None)) is None
        sends = [[packet(10, 900, True, b"audio")], [packet(11 + k, 1800, k == 2, bytes([k]) * 1100) for k in range(3)],
                 [packet(14, 2700, True, b"x" * 5000), packet(15, 2700, True, b"y" * 300)]]
        results = {}
        for path in PATHS:
            rig.start(first=10, sequence_offset=100, timestamp_offset=5, sequence=110)
            results[path] = [rig.send(path, packets, 0x10203) for packets in sends]
        assert results["compiled"] == results["python"]
        assert [outcome for outcome, _, _ in results["compiled"]] == [1, 3, 1]
        assert rig.outs["compiled"].state.sends == 3 and rig.drained()
    finally:
        rig.close()


def test_the_ring_keeps_what_was_sent_and_takes_only_bytes():
    """fastpath.c's Ring (the compiled sender's retransmission history; what a fan-out keeps in it is read back
    in the tests above): Python may store bytes or None, nothing else, at 128 places."""
    ring = _fastpath.Ring()
    assert len(ring) == 128 and list(ring) == [None] * 128
    ring[5] = b"plain"
    assert ring[5] == b"plain" and ring[-123] == b"plain"
    ring[5] = None
    assert ring[5] is None
    for bad in (bytearray(b"x"), "text", 5, memoryview(b"x")):
        with pytest.raises(TypeError):
            ring[1] = bad
    for index in (128, -129, 1 << 40):
        with pytest.raises(IndexError):
            ring[index]
        with pytest.raises(IndexError):
            ring[index] = b""
    del ring[1]
    assert ring[1] is None


def test_one_broken_route_does_not_take_the_fan_out_with_it(rig):
    """A route whose send fails for a reason other than libsrtp (here: its sender object cannot take the
    Sender Report counters, a bug) reports that exception with its index; the next subscriber still gets
    the packet, and the publication logs the error instead of losing the fan-out."""

    class Broken:
        __slots__ = ("_RTCRtpSender__transport", "_enabled")

    first, second = rig.subscribers[:2]
    for sub in (first, second):
        sub.start(first=0, sequence_offset=0, timestamp_offset=0, sequence=0)
        sub.outs["compiled"].arm(True)
    broken: Any = Broken()
    dtls = first.outs["compiled"].sender._RTCRtpSender__transport
    broken._RTCRtpSender__transport, broken._enabled = dtls, True
    route = first.outs["compiled"].state
    session = first.outs["compiled"]._protect._session
    route.target(first.transport._sock, *first.addr, srtp_protect_function(), srtp_context(session), session, broken,
                 dtls, dtls._state, first.nominated, first.pair, first.transport)
    todo = _fastpath.fan_out([route, second.outs["compiled"].state], [packet(5, 9, True, b"a" * 50)], 0, 0)
    assert todo is not None and len(todo) == 1
    ((index, what, error),) = todo
    assert (index, what, type(error)) == (0, FAN_FAILED, AttributeError)
    assert len(first.received(1)) == 1 and len(second.received(1)) == 1  # sent before the counters failed
    assert rig.drained()


@pytest.mark.parametrize("path", PATHS)
def test_a_stream_outlasts_its_numbering(rig, path):
    """A source's sequence numbers wrap (a meeting's audio, 50 packets/s, after ~11 minutes) and its sender
    keeps taking them: what it takes from is not fixed at the rebase but follows the stream, WINDOW behind
    (it was fixed: after 32768 packets the subscriber got nothing for the next 32768). What is from before
    the rebase, or half the numbering behind what was sent, is still never taken."""
    rig.start(first=1000, sequence_offset=0, timestamp_offset=0, sequence=1000)
    assert rig.send(path, [packet(999, 0, True, b"before")], 0)[0] == 0  # from before the source started here
    taken = [rig.send(path, [packet(seq & 0xFFFF, seq, True, b"a")], 0)[0] for seq in range(1000, 1000 + 0x18000, 0x800)]
    assert taken == [1] * 48
    newest = (1000 + 47 * 0x800) & 0xFFFF
    assert rig.outs[path].state.first == (newest - WINDOW) & 0xFFFF
    assert rig.send(path, [packet((newest - 0x8000) & 0xFFFF, 0, True, b"old")], 0)[0] == 0
    assert rig.drained()


def test_what_the_compiled_path_sends_unprotects_to_the_ring_and_skips_what_does_not_fit(rig):
    """A receiver with the key gets exactly the plain packets kept for retransmission, re-headed; an
    oversized payload (a hostile publisher's) is dropped, the packets around it still go."""
    rig.start(first=100, sequence_offset=5, timestamp_offset=1000, sequence=105)
    packets = [packet(100, 90000, False, b"a" * 1200), packet(101, 90000, False, b"b" * 5000),
               packet(102, 90000, True, b"c" * 300)]
    count, received, (ring, sequence, last_timestamp, sends, _, _, octets, *_) = rig.send("compiled", packets, 0x123456)
    assert (last_timestamp, count, octets, sequence, sends) == (91000, 2, 1500, 108, 1)
    inbound = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    plain = [inbound.unprotect(d) for d in received]
    assert plain == [ring[105 % 128], ring[107 % 128]] and ring[106 % 128] is None
    out = rig.outs["compiled"]
    header, at = out.state.header, out._abs_send_time_at
    out.state.set_header(bytes(range(12)), -1)  # a later header does not change what was kept
    assert out._ring[105 % 128] == plain[0]
    out.state.set_header(header, -1 if at is None else at)
    extensions_map = rig.outs["compiled"].sender._RTCRtpSender__rtp_header_extensions_map
    first, last = (RtpPacket.parse(p, extensions_map) for p in plain)
    assert (first.sequence_number, first.timestamp, first.marker, first.payload_type) == (105, 91000, 0, 96)
    assert (last.sequence_number, last.marker, last.payload) == (107, 1, b"c" * 300)
    assert first.extensions.abs_send_time == 0x123456 and first.extensions.mid == "1"


def test_a_socket_that_refuses_gso_gets_every_datagram_through_the_transport(rig):
    rig.start(first=0, sequence_offset=0, timestamp_offset=0, sequence=0)
    sock = rig.one.transport._sock
    sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    try:
        frame = [packet(i, 3000, i == 4, b"x" * 1000) for i in range(5)]
        count, received, _ = rig.send("compiled", frame, 0)
        assert count == 5 and len(received) == 5
        assert not rig.outs["compiled"].state.gso
        count, received, _ = rig.send("compiled", [packet(i, 6000, i == 9, b"y" * 1000) for i in range(5, 10)], 0)
        assert len(received) == 5
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 0)
    assert rig.drained()


def test_behind_a_turn_relay_both_paths_hand_the_transport_the_same_datagrams(rig):
    assert not hasattr(aioice.turn.TurnTransport, "get_write_buffer_size")  # why the socket is None here
    frames = [[packet(10 + i, 3000, i == 2, bytes([i]) * 1100) for i in range(3)], [packet(13, 6000, True, b"a" * 90)]]
    sent = {}
    for path in PATHS:
        rig.start(first=10, sequence_offset=100, timestamp_offset=5, sequence=110, transport=Relayed())
        sent[path] = [rig.send(path, frame, 7)[1] for frame in frames]
    assert [len(datagrams) for datagrams in sent["python"]] == [3, 1] and sent["compiled"] == sent["python"]
    assert rig.drained()  # nothing went past the relay onto the socket


class Odd:
    """A packet-like object whose fields are whatever a fuzzer makes them."""

    def __init__(self, sequence_number, timestamp, marker, payload) -> None:
        self.sequence_number, self.timestamp, self.marker, self.payload = sequence_number, timestamp, marker, payload


class Meddler:
    """A sender or transport whose every attribute read and method call runs Python code that changes what the
    C code is working on: empties the routes list, retargets or re-heads the route, swaps its ring."""

    def __init__(self, routes: list, route: Any, value: Any) -> None:
        self.routes, self.route, self.value = routes, route, value

    def __getattr__(self, name: str) -> Any:
        self.routes.clear()
        self.route.ring = _fastpath.Ring()
        self.route.set_header(bytes(12), -1)
        if name in ("_RTCRtpSender__transport", "_state"):  # the route's own DTLS transport, connected
            return self
        if name in ("get_write_buffer_size", "is_closing"):
            return lambda: self.value
        return self.value


ANY = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.binary(max_size=20), st.text(max_size=5),
                st.floats(allow_nan=True), st.lists(st.integers(), max_size=3))
ODD_PACKETS = st.one_of(st.lists(st.builds(Odd, st.one_of(st.integers(-3, 70000), ANY), st.one_of(st.integers(-3, 2**33), ANY),
                                           ANY, st.one_of(st.binary(max_size=1600), ANY)), max_size=5), ANY)
FIELDS = ("payload_type", "first", "sequence_offset", "timestamp_offset", "sequence", "last_timestamp", "armed",
          "last_time", "ring")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(st.binary(max_size=300), ANY), at=st.one_of(st.integers(-3, 300), ANY),
       fields=st.lists(st.tuples(st.sampled_from(FIELDS), st.one_of(st.integers(-5, 2**33), ANY)), max_size=6),
       packets=ODD_PACKETS, abs_send_time=st.one_of(st.integers(-5, 2**25), ANY), ntp=st.one_of(st.integers(-5, 2**65), ANY),
       routes=st.lists(st.sampled_from(["route", "meddled", "fresh", "other"]), max_size=4), other=ANY,
       meddled=ANY, call=st.sampled_from(["send", "fan_out"]))
def test_hostile_arguments_never_crash_the_compiled_path(rig, header, at, fields, packets, abs_send_time, ntp, routes,
                                                         other, meddled, call):
    """Whatever the route's state is set to, whatever packets, clocks and routes lists the entry points get,
    and whatever code runs while they read a sender's attributes: a result or an exception, never a crash;
    the ring stays 128 entries of at most one plain packet each."""
    rig.start(first=0, sequence_offset=0, timestamp_offset=0, sequence=0)
    out = rig.outs["compiled"]
    route = out.state
    out.arm(True)
    for name, value in fields:
        try:
            setattr(route, name, value)
        except (TypeError, ValueError, OverflowError):
            pass
    try:
        route.set_header(header, at)
    except (TypeError, ValueError, OverflowError):
        pass
    listed: list[Any] = []
    meddling = _fastpath.Route()
    meddler = Meddler(listed, meddling, meddled)
    sock = rig.one.transport._sock
    meddling.target(sock, *rig.one.addr, srtp_protect_function(), srtp_context(out._protect._session), out._protect._session,
                    meddler, meddler, meddler, {1: meddled}, meddled, meddler)
    meddling.payload_type, meddling.armed = 96, True
    meddling.set_header(out._header, 12)
    listed.extend({"route": route, "meddled": meddling, "fresh": _fastpath.Route(), "other": other}[r] for r in routes)
    try:
        if call == "send":
            result = _fastpath.send(route, packets, abs_send_time, ntp)
        else:
            result = _fastpath.fan_out(listed, packets, abs_send_time, ntp)
    except (TypeError, ValueError, OverflowError, ConnectionError, RuntimeError, AttributeError):
        pass
    else:
        if call == "send":
            count, rest, refused = result
            assert count >= 0 and refused in (True, False)
            rests = [rest]
        else:
            assert result is None or all(what in (FAN_PYTHON, FAN_REST, FAN_REFUSED, FAN_FAILED) for _, what, _ in result)
            assert all(isinstance(rest, BaseException) for _, what, rest in result or () if what == FAN_FAILED)
            rests = [rest for _, what, rest in result or () if what != FAN_FAILED]
        for rest in rests:  # what the socket did not take (not direct): still whole datagrams
            assert all(isinstance(data, bytes) and len(data) <= 1500 for data in rest or [])
    rig.one.receiver.setblocking(False)
    try:
        while True:
            rig.one.receiver.recv(2048)
    except BlockingIOError:
        pass
    finally:
        rig.one.receiver.settimeout(5)
    for r in (route, meddling):
        assert len(r.ring) == 128
        assert all(p is None or (isinstance(p, bytes) and len(p) <= MAX_PLAIN) for p in r.ring)
    assert 0 <= route.sequence <= 0xFFFF


async def test_a_closed_subscribers_route_is_freed():
    """A Route refers to its sender, whose keyframe hook refers back to the track holding the Route: the
    garbage collector must see that cycle (a media process serves subscriber after subscriber)."""

    def routes() -> int:
        gc.collect()
        return sum(isinstance(o, _fastpath.Route) for o in gc.get_objects())

    before = routes()
    for _ in range(5):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        sender: Any = pc.addTransceiver("video").sender
        track = ForwardTrack("video")
        track.attach_sender(sender, fastpath=True)
        track.route.target(None, "127.0.0.1", 9, 1, 1, None, sender, sender.transport, None, {}, None, None)
        assert routes() == before + 1
        track.stop()
        await pc.close()
        del pc, sender, track
    assert routes() == before


def test_wrong_calls_are_clear_errors():
    route = _fastpath.Route()
    with pytest.raises(TypeError):
        _fastpath.send()
    with pytest.raises(TypeError):
        _fastpath.fan_out([route], [], 0)
    with pytest.raises(TypeError, match="Route objects"):
        _fastpath.fan_out([route, "x"], [], 0, 0)
    with pytest.raises(RuntimeError, match="no target"):
        _fastpath.send(route, [], 0, 0)  # nothing to send on yet
    assert _fastpath.fan_out([route], [], 0, 0) == [(0, FAN_PYTHON, None)]  # not armed: Python's
    with pytest.raises(ValueError, match="24 bits"):
        _fastpath.fan_out([], [], 1 << 24, 0)
    with pytest.raises(TypeError):
        route.target(None, "127.0.0.1", 9)
    target = (1, 1, None, None, None, None, {}, None, None)
    with pytest.raises(ValueError, match="numeric address"):
        route.target(None, "localhost", 9, *target)  # never a name lookup
    with pytest.raises(ValueError):
        route.target(None, "127.0.0.1", 70000, *target)
    with pytest.raises(ValueError):
        route.target(None, "127.0.0.1", 9, 0, 0, *target[2:])
    with pytest.raises(TypeError):
        route.target(None, "127.0.0.1", 9, *target[:6], [], None, None)  # nominated pairs: a dict
    with pytest.raises(ValueError, match="out of range"):
        route.sequence = 0x10000
    with pytest.raises(TypeError):
        route.ring = [None] * 127
    with pytest.raises(ValueError):
        route.set_header(bytes(20), 18)  # abs-send-time's 3 bytes must be inside the header
    with pytest.raises(TypeError):
        route.last_time = "now"
    assert _fastpath.WINDOW == WINDOW
    assert (FAN_PYTHON, FAN_REST, FAN_REFUSED, FAN_FAILED) == (
        _fastpath.FAN_PYTHON, _fastpath.FAN_REST, _fastpath.FAN_REFUSED, _fastpath.FAN_FAILED)


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
    _, a, b = await world.two_in_a_room("pa", "pb")
    try:
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
