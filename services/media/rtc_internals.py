"""The one module that touches aiortc's, aioice's and pylibsrtp's internals (STYLE.md: private names of
third-party libraries in one module).

The media service forwards RTP packets between peer connections without decoding them, receives SRTP
in the socket's callback and binds its ICE sockets inside a port range. aiortc has no public API for
any of that, so this module does it against the internals of exactly the versions in :data:`PINNED`
(pyproject.toml pins the same, exactly); everything else in services/media calls the names below and
aiortc's public API only. tests/media/test_aiortc_internals.py is the tripwire for a version bump: it
checks each internal named here against the installed libraries' source and behaviour, and that no
other module of services/media uses a private name of these libraries.

What is here, and why (performance throughout; the hot path keeps the objects and bound methods these
return, so no call layer is added per packet):

- Names from undocumented modules, re-exported as they are: :class:`RtpPacket`, :func:`is_rtcp`,
  :class:`VpxPayloadDescriptor`, :func:`parse_sdp`, :func:`current_ms`.
- Negotiation: :func:`negotiated_codecs` / :func:`set_negotiated_codecs` (``RTCRtpTransceiver._codecs``)
  and :func:`offered_direction` (``RTCRtpTransceiver._offerDirection``).
- Packet forwarding, receiving side: :func:`divert_received_packets` puts a :class:`PacketSink` in place of
  the receiver's jitter buffer; :func:`pli_sender` (``RTCRtpReceiver._send_rtcp_pli``).
- Packet forwarding, sending side: :func:`attach_rtp_out` and :class:`RtpOut` do what
  ``RTCRtpSender._run_rtp`` does, on the sender's and its transports' private state, with a
  :class:`RawHistory` as the sender's retransmission history; the senders' Sender Reports go per connection,
  on one timer (:class:`SenderReports`), instead of one RTCP task per sender (``_run_rtcp``).
- SRTP: one libsrtp session per outgoing SSRC and one each for incoming RTP and SRTCP (:func:`srtp_per_source`,
  :class:`SrtpPerSource`, :class:`SrtpInbound`, from the policies aiortc's ``_setup_srtp`` makes); on the
  session buffer: :class:`SrtpProtect` (pylibsrtp's ``_binding``, ``Session._srtp``, ``_cdata``, ``_buffer``);
  for the compiled send path (services/media/fastpath.c, which `RtpOut` calls unless SVPL_COMPILED_FORWARDING
  is off) :func:`srtp_protect_function` and :func:`srtp_context`, the address of the ``srtp_protect``
  pylibsrtp's libsrtp has and of a session's libsrtp context.
- Direct receive: :func:`receive_in_callback` replaces aioice's ``datagram_received`` for SRTP/SRTCP;
  :func:`run_now` runs aiortc's handlers in place and raises :class:`HandlerSuspended` if one suspends.
- ICE sockets: :func:`ice_sockets` (aioice ``Connection._protocols``) and
  :func:`intercept_host_candidate_binds` (how aioice binds its host candidates).
- Bandwidth feedback (services/media/bandwidth.py): :func:`watch_receiver_feedback` (what a subscriber's
  browser reports on a sender: REMB, Receiver Report loss) and :func:`cap_receiver_estimate` (the REMB a
  publisher's receiver sends, clamped and throttled as libwebrtc's (:func:`throttle_estimates`), and REMBs of
  our own).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, cast

import pylibsrtp
from aioice.candidate import candidate_foundation as candidate_foundation  # re-exported: the node candidate
from aioice.candidate import candidate_priority as candidate_priority  # (services/media/ports.py) is made like aioice's
from aiortc import rtcdtlstransport as aiortc_dtls
from aiortc.clock import current_datetime, current_ms
from aiortc.codecs import is_rtx
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    is_rtcp,
    pack_remb_fci,
    unpack_remb_fci,
)
from aiortc.sdp import SessionDescription
from pylibsrtp import SRTP_MAX_TRAILER_LEN
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

try:  # the compiled send path (services/media/fastpath.c, built by `make install`); see RtpOut
    from services.media import _fastpath
except ImportError:  # not built: with SVPL_COMPILED_FORWARDING on, the media service refuses to start (config.py)
    _fastpath = None  # type: ignore[assignment]

# The loggers the code below logged to before it moved here (services/media/forwarding.py, receive.py).
forwarding_log = logging.getLogger("svpl.media.forwarding")
receive_log = logging.getLogger("svpl.media.receive")

# The versions whose internals this module is written against (pyproject.toml pins the same).
PINNED = {"aiortc": "1.16.0", "aioice": "0.13.0", "pylibsrtp": "1.0.0"}

__all__ = [
    "FAN_FAILED", "FAN_PYTHON", "FAN_REFUSED", "FAN_REST", "MAX_LEARNED_SOURCES", "MAX_PLAIN", "PINNED", "WINDOW",
    "HandlerSuspended", "LeanReceive", "PacketSink", "RawHistory", "RtpOut", "RtpPacket", "SendState", "SenderReports",
    "SrtpInbound", "SrtpPerSource", "SrtpProtect", "VpxPayloadDescriptor",
    "attach_rtp_out", "cap_receiver_estimate", "compile_incoming_bitrate", "current_ms",
    "divert_received_packets", "fan_out", "fastpath_available", "ice_sockets", "intercept_host_candidate_binds",
    "is_rtcp", "negotiated_codecs", "ntp_time", "offered_direction", "outgoing_session", "own_socket", "parse_sdp", "pli_sender",
    "receive_in_callback", "run_now", "set_negotiated_codecs", "settle_counters", "srtp_per_source", "throttle_estimates",
    "watch_receiver_feedback", "watch_round_trips",
]

# ---------------------------------------------------------------------------------------------------------
# Names from aiortc's undocumented modules, as they are (no wrapper: some are used per packet).
#
# RtpPacket, is_rtcp (aiortc.rtp): the packet objects aiortc's receiver hands on, its RTP serialisation, and
#     its RTP/RTCP demultiplexing (RFC 5761).
# VpxPayloadDescriptor (aiortc.codecs.vpx): the VP8 payload descriptor parser (RFC 7741 4.2).
# current_ms (aiortc.clock): the clock aiortc stamps arrival times with (the fan-out's NTP time is ntp_time below).

parse_sdp = SessionDescription.parse
"""aiortc.sdp's ``SessionDescription.parse``: the SDP parser aiortc itself uses, to check an offer before any
peer connection exists."""


# ---------------------------------------------------------------------------------------------------------
# Negotiation


def negotiated_codecs(transceiver) -> list:
    """``RTCRtpTransceiver._codecs``: the codecs negotiated from the remote offer, which the answer and the
    sender use (the first is the one sent), set by ``RTCPeerConnection.setRemoteDescription``."""
    return transceiver._codecs


def set_negotiated_codecs(transceiver, codecs: list) -> None:
    """Replace ``RTCRtpTransceiver._codecs`` (before the answer is created): what we forward must be the
    only codec the answer offers, the forwarded bitstream is never transcoded."""
    transceiver._codecs = codecs


def offered_direction(transceiver) -> str | None:
    """``RTCRtpTransceiver._offerDirection``: the remote offer's m-line direction seen from our side
    (reversed: the peer's "sendonly" is our "recvonly"); aiortc keeps no public copy (``direction`` is
    ours to set, ``currentDirection`` exists only after the answer)."""
    return transceiver._offerDirection


# ---------------------------------------------------------------------------------------------------------
# Packet forwarding: the receiving side

_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"


class PacketSink:
    """Stands in for a receiver's jitter buffer: each packet aiortc's receiver has counted, checked and
    NACK-tracked goes to `on_packet` at once instead of into frame assembly for a decoder."""

    def __init__(self, on_packet: Callable[[RtpPacket], None]) -> None:
        self._on_packet = on_packet

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        """aiortc's ``JitterBuffer.add``: (send a PLI?, a complete frame for the decoder): never either."""
        try:
            self._on_packet(packet)
        except Exception:  # noqa: BLE001 - never break the receiver's RTP path
            forwarding_log.exception("forwarding a packet failed")
        return False, None


def divert_received_packets(receiver, on_packet: Callable[[RtpPacket], None]) -> PacketSink:
    """Every RTP packet `receiver` gets goes to `on_packet`, after aiortc's own receive bookkeeping.

    ``RTCRtpReceiver._handle_rtp_packet`` feeds the bitrate estimator (REMB), the receive statistics
    (Receiver Reports, getStats) and the NACK generator, unwraps RTX, and then hands every packet to its
    private jitter buffer (``_RTCRtpReceiver__jitter_buffer.add``), which assembles frames for the
    decoder. A :class:`PacketSink` takes that buffer's place: all of aiortc's receive bookkeeping stays,
    and each packet goes on at once (aiortc's buffer held audio ~80 ms and video a frame, ~67 ms);
    nothing is ever decoded, the decoder thread only sees the final ``None``."""
    sink = PacketSink(on_packet)
    setattr(receiver, _JITTER_BUFFER, sink)
    bound_learned_sources(receiver.transport._rtp_router)
    return sink


MAX_LEARNED_SOURCES = 16  # SSRCs a connection's router keeps learned from packets (a browser sends 2-4 at a time)


def bound_learned_sources(router) -> None:
    """Keep at most :data:`MAX_LEARNED_SOURCES` SSRCs that aiortc's RTP router learned from packets, forgetting the
    oldest learned first, with the state its receiver keeps per source.

    aiortc's ``RtpRouter.route_rtp`` adds every unknown SSRC whose payload type one receiver has to its table,
    and that receiver then keeps statistics, a "last seen" time and an estimator entry per SSRC, none ever
    dropped: a participant's own client sending under ever new SSRCs (it holds the SRTP keys) grew media's
    memory without bound. SSRCs the description named are never forgotten; a forgotten source that is still
    sending is learned again from its next packet, as a new one."""
    if vars(router).get(_BOUNDED):
        return
    route = router.route_rtp
    table = router.ssrc_table
    learned: dict[int, None] = {}  # in learning order (dicts keep insertion order)

    def route_rtp(packet):
        known = packet.ssrc in table
        receiver = route(packet)
        if receiver is not None and not known:
            learned[packet.ssrc] = None
            while len(learned) > MAX_LEARNED_SOURCES:
                old = next(iter(learned))
                del learned[old]
                forget_source(table.pop(old, None), old)
        return receiver

    router.route_rtp = route_rtp
    vars(router)[_BOUNDED] = True


def forget_source(receiver, ssrc: int) -> None:
    """Drop what `receiver` (an ``RTCRtpReceiver``, or None) keeps about source `ssrc`."""
    if receiver is None:
        return
    vars(receiver).get("_RTCRtpReceiver__remote_streams", {}).pop(ssrc, None)
    vars(receiver).get("_RTCRtpReceiver__active_ssrc", {}).pop(ssrc, None)
    estimator = vars(receiver).get("_RTCRtpReceiver__remote_bitrate_estimator")
    if estimator is not None:
        estimator.ssrcs.pop(ssrc, None)


_BOUNDED = "_svpl_bounded_learning"


def pli_sender(receiver) -> Callable[[int], Coroutine[Any, Any, None]]:
    """``RTCRtpReceiver._send_rtcp_pli``, bound: ``pli(media_ssrc)`` is a coroutine that sends a Picture
    Loss Indication for that source to the remote sender (there is no public way to ask for a keyframe)."""
    return receiver._send_rtcp_pli


# ---------------------------------------------------------------------------------------------------------
# Packet forwarding: the sending side

RTP_HISTORY_SIZE = 128  # aiortc.rtcrtpsender's: NACKs look packets up by sequence number modulo this
_HEADER_FIELDS = struct.Struct("!BHI")  # RTP header bytes 1-7: marker and payload type, sequence number, timestamp


class RawHistory:
    """The sender's RTP history (aiortc's ``__rtp_history``: sequence number % 128 -> packet) kept as
    the plain RTP bytes sent, in a fixed ring; a packet object is parsed only when a NACK asks for it.
    The ring is a list (the Python send path's) or fastpath.c's ``Ring`` (the compiled path's: it keeps
    references to the header and payload sent and composes the bytes when read).

    aiortc's ``RTCRtpSender._retransmit`` is its only reader and calls only ``get``; its own send loop
    (parked, see forwarding.ForwardTrack.recv) would store packets with ``[]=``."""

    __slots__ = ("extensions_map", "ring")

    def __init__(self, extensions_map, ring: Any = None) -> None:
        self.ring: Any = [None] * RTP_HISTORY_SIZE if ring is None else ring
        self.extensions_map = extensions_map  # the sender's, configured when it starts

    def get(self, index: int, default=None):
        data = self.ring[index]
        return default if data is None else RtpPacket.parse(data, self.extensions_map)

    def __setitem__(self, index: int, packet: RtpPacket) -> None:
        self.ring[index] = packet.serialize(self.extensions_map)


SRTP_BUFFER = 1500  # pylibsrtp.Session's buffer (``_cdata``): a protected packet must fit in it
MAX_PLAIN = SRTP_BUFFER - SRTP_MAX_TRAILER_LEN  # the longest plain RTP packet it protects


def fastpath_available() -> bool:
    """Whether the compiled send path (services/media/_fastpath, from fastpath.c) is built."""
    return _fastpath is not None


def srtp_protect_function() -> int:
    """The address of ``srtp_protect`` in the libsrtp pylibsrtp carries (its cffi ``_binding``): fastpath.c
    calls it on the session's own context, so one libsrtp (and one context per session) does all SRTP."""
    return int(srtp_ffi.cast("uintptr_t", srtp_ffi.addressof(srtp_lib, "srtp_protect")))


def srtp_context(session) -> int:
    """The address of a pylibsrtp ``Session``'s libsrtp context (``_srtp[0]``, an ``srtp_t``); it lives as
    long as the session does (fastpath.Route keeps a reference to the session)."""
    return int(srtp_ffi.cast("uintptr_t", session._srtp[0]))


# At most this many outgoing sources get a libsrtp session of their own on one connection; the rest share one.
# Outgoing SSRCs are the connection's own senders' and receivers' (a subscriber at 16 a room has about 50),
# never a peer's, so this is only a ceiling.
MAX_SRTP_SESSIONS = 256


class SrtpPerSource:
    """A DTLS transport's outgoing SRTP (``_tx_srtp``) as one libsrtp session per outgoing SSRC, all from the
    policy aiortc made (:func:`srtp_per_source`), instead of one session holding a stream per SSRC.

    libsrtp finds a packet's stream by walking its session's list of streams (``srtp_stream_list_get``); a
    subscriber's connection sends under one SSRC per receive slot and RTCP source, about 50 at 16 a room,
    and that walk was two thirds of ``srtp_protect``'s time (perf at 1x16: 4.9 % of the media process). With
    a session per SSRC the walk ends at the first stream. The bytes are the same: the session keys derive
    from the master key and salt alone (RFC 3711 4.3), each SSRC's stream keeps its own index, rollover
    counter and SRTCP index as it did, and every packet of an SSRC (RTP and the RTCP whose first packet it
    sends) always goes through that SSRC's one session, so no index is ever used twice under a key. Once
    :data:`MAX_SRTP_SESSIONS` are made, further SSRCs share one more session, for good.
    ``protect``/``protect_rtcp`` stand in for pylibsrtp's ``Session`` where aiortc calls them (``_send_rtp``);
    the send paths take a source's own session with :meth:`session`."""

    __slots__ = ("_policy", "_sessions", "_shared")

    def __init__(self, policy: pylibsrtp.Policy) -> None:
        self._policy = policy  # holds the key material (pylibsrtp keeps it in the policy's own buffer)
        self._sessions: dict[int, pylibsrtp.Session] = {}
        self._shared: pylibsrtp.Session | None = None

    def session(self, ssrc: int) -> pylibsrtp.Session:
        """The session every outgoing packet of `ssrc` is protected in."""
        session = self._sessions.get(ssrc)
        if session is None:
            if len(self._sessions) < MAX_SRTP_SESSIONS:
                session = self._sessions[ssrc] = pylibsrtp.Session(self._policy)
            else:
                if self._shared is None:
                    self._shared = pylibsrtp.Session(self._policy)
                session = self._shared
        return session

    def protect(self, packet: bytes) -> bytes:
        return self.session(int.from_bytes(packet[8:12], "big")).protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        # libsrtp keys SRTCP by the first packet's sender SSRC (bytes 4-8), as one session would.
        return self.session(int.from_bytes(packet[4:8], "big")).protect_rtcp(packet)


class SrtpInbound:
    """A DTLS transport's incoming SRTP (``_rx_srtp``) as two libsrtp sessions from the policy aiortc made
    (:func:`srtp_per_source`): one for RTP, one for SRTCP, instead of one for both.

    libsrtp walks its session's stream list for each packet (see :class:`SrtpPerSource`), and a subscriber's
    connection receives RTCP under one SSRC per receive slot of the peer (aiortc's peers), so one session's
    list was long and the peer's few RTP sources were behind the RTCP ones (perf at 1x16: 2.2 % of the media
    process in ``srtp_unprotect``'s walk). A stream's RTP and SRTCP state are separate within it (replay
    windows, indexes; RFC 3711 3.3, 3.4) and the session keys derive from the master key alone, so two
    sessions accept and refuse exactly what one did. Streams are still made only for packets that
    authenticate, as libsrtp makes them from its template."""

    __slots__ = ("unprotect", "unprotect_rtcp", "_sessions")

    def __init__(self, policy: pylibsrtp.Policy) -> None:
        self._sessions = pylibsrtp.Session(policy), pylibsrtp.Session(policy)
        self.unprotect = self._sessions[0].unprotect
        self.unprotect_rtcp = self._sessions[1].unprotect_rtcp


def srtp_per_source(pc) -> None:
    """Have each of `pc`'s DTLS transports (before their handshake: after the local description is set)
    protect what it sends with :class:`SrtpPerSource` and check what it receives with :class:`SrtpInbound`.

    aiortc makes its SRTP sessions in ``_setup_srtp`` when the handshake completes, from keying material it
    does not keep: this wraps that method on the instance and, while it runs (synchronous, so nothing else
    runs meanwhile), lets aiortc's module name ``Session`` note the policies it is called with; the outgoing
    one (``SSRC_ANY_OUTBOUND``) then makes ``_tx_srtp``, the incoming one ``_rx_srtp``. aiortc's own sessions
    are dropped before they see a packet."""
    for dtls in {id(t.sender.transport): t.sender.transport for t in pc.getTransceivers()
                 if t.sender.transport is not None}.values():
        if dtls._state is DtlsState.NEW:
            dtls._setup_srtp = _split_setup_srtp(dtls, dtls._setup_srtp)


def _split_setup_srtp(dtls, setup: Callable[[], None]) -> Callable[[], None]:
    def setup_srtp() -> None:
        policies: list[pylibsrtp.Policy] = []

        def session(policy: pylibsrtp.Policy) -> pylibsrtp.Session:
            policies.append(policy)
            return pylibsrtp.Session(policy)

        aiortc_dtls.Session = session  # type: ignore[misc, assignment]  # for this call only
        try:
            setup()
        finally:
            aiortc_dtls.Session = pylibsrtp.Session  # type: ignore[misc]
        outgoing = [p for p in policies if p.ssrc_type == pylibsrtp.Policy.SSRC_ANY_OUTBOUND]
        incoming = [p for p in policies if p.ssrc_type == pylibsrtp.Policy.SSRC_ANY_INBOUND]
        if dtls._tx_srtp is not None and len(outgoing) == 1 and len(incoming) == 1:
            dtls._tx_srtp = SrtpPerSource(outgoing[0])
            dtls._rx_srtp = SrtpInbound(incoming[0])

    return setup_srtp


def outgoing_session(dtls, ssrc: int) -> pylibsrtp.Session:
    """The libsrtp session `dtls` protects `ssrc`'s packets in (the transport's one session where it was not
    split per source: test and bench rigs)."""
    tx = dtls._tx_srtp
    return tx.session(ssrc) if isinstance(tx, SrtpPerSource) else tx


class SrtpProtect:
    """libsrtp's ``srtp_protect`` on a DTLS transport's outgoing SRTP session, without pylibsrtp's
    per-call wrapping.

    ``pylibsrtp.Session.protect`` checks its argument's type, allocates a length cell and resolves the
    binding on every call; under cProfile at a forwarder's packet rate that wrapping took about
    twice the time of the encryption itself. This keeps one length cell and calls the same function on
    the session's own buffer (pylibsrtp's ``_binding`` module and the session's ``_srtp``, ``_cdata``,
    ``_buffer``). One event loop thread uses a session, so sharing its buffer is safe, as it is for
    pylibsrtp's own calls."""

    __slots__ = ("_buffer", "_call", "_cdata", "_length", "_limit", "_session", "_srtp")

    def __init__(self, session) -> None:
        self._session = session  # keeps the libsrtp context (freed with the session) alive
        self._call = srtp_lib.srtp_protect
        self._srtp = session._srtp[0]
        self._cdata = session._cdata
        self._buffer = session._buffer
        self._length = srtp_ffi.new("int *")
        self._limit = len(session._cdata) - SRTP_MAX_TRAILER_LEN

    def __call__(self, plain: bytes) -> bytes:
        size = len(plain)
        if size > self._limit:
            raise ValueError("packet is too long")
        buffer = self._buffer
        buffer[0:size] = plain
        length = self._length
        length[0] = size
        status = self._call(self._srtp, self._cdata, length)
        if status:
            raise ConnectionError(f"SRTP protect failed (libsrtp status {status})")
        return buffer[0:length[0]]


# A sender takes a source's packets from its first since rebase on (`first`: those before it are from before
# the source started here); once the stream is this far beyond it, `first` follows, this far behind the
# newest packet sent, so the numbering can wrap (a meeting's audio does after ~11 minutes) and still no packet
# more than half the numbering old is taken (fastpath.c's WINDOW).
WINDOW = 0x4000


class SendState:
    """A sender's numbering, rebase and retransmission state as the Python reference keeps it. The compiled
    path keeps the same attributes in a ``fastpath.Route``, where fastpath.c reads and updates them."""

    __slots__ = ("armed", "first", "last_time", "last_timestamp", "payload_type", "ring", "sends", "sequence",
                 "sequence_offset", "timestamp_offset")

    def __init__(self) -> None:
        self.payload_type = -1  # -1 until the sender has started
        self.first = 0  # the source's first sequence number taken (since rebase; then WINDOW behind the newest)
        self.sequence_offset = self.timestamp_offset = 0  # source -> this sender (see RtpOut.rebase)
        self.sequence = 0  # the next sequence number this sender uses
        self.last_timestamp = -1  # the last RTP timestamp sent (-1: none yet), and when (time.monotonic())
        self.last_time = 0.0
        self.ring: list[bytes | None] = []
        self.armed = False  # compiled only: fastpath.fan_out may send on it (see RtpOut.arm)
        self.sends = 0  # sends that found the sender ready (ForwardTrack.sent)


class RtpOut:
    """Sends a source's RTP packets on one `RTCRtpSender`, re-headed as its `_run_rtp` loop would.

    aiortc's sender loop (``RTCRtpSender._run_rtp``) costs several nested awaits and an ``RtpPacket``
    serialisation per packet, and needs frames. This does what that loop does: each packet keeps its
    payload (the VP8 payload descriptor included) and gets the sender's header (its SSRC, payload type,
    MID and abs-send-time extensions, serialised by aiortc once and then patched), its sequence number
    and timestamp shifted into the sender's own spaces (continuous when the slot changes source), is
    SRTP-protected by the DTLS transport's libsrtp session (:class:`SrtpProtect`) and goes to the
    nominated ICE pair's asyncio transport through `batch` (forwarding.DatagramBatch). It keeps the
    sender's RTP history (a :class:`RawHistory` replaces ``__rtp_history``, for NACK retransmission by
    ``_retransmit``), its Sender Report counters and the DTLS transport's byte counters as aiortc's
    loop does (the Python path after every send; the compiled path adds them up in its route and
    settles them before they are read, :func:`settle_counters`, and at least every 0.5 s).

    What a send needs from the connection (the nominated pair's transport and address, the SRTP
    session) is looked up again only when the DTLS transport or the nominated pair changes.

    Compiled (fastpath.c): the state lives in `state`, a ``fastpath.Route``, which also holds the route
    and the live objects to check it against, so ``fastpath.fan_out`` sends a publisher's packet to every
    armed subscriber sender in one call (forwarding.Publication); `send` is then what runs for a sender
    that is not armed or not ready, with the same semantics."""

    def __init__(self, sender, batch, fastpath: bool = False) -> None:
        self.sender: Any = sender
        # The compiled send path (fastpath.c) does the per-packet loop of `send`; the loop below is its
        # readable reference (SVPL_COMPILED_FORWARDING=0), and tests/media/test_fastpath.py compares the two.
        if fastpath and _fastpath is None:
            raise RuntimeError("services/media/_fastpath is not built: run `make install` (or set SVPL_COMPILED_FORWARDING=0)")
        self.fastpath = fastpath
        self.state: Any = _fastpath.Route() if fastpath else SendState()
        self.state.sequence = random.randint(0, 0xFFFF)
        self._timestamp_origin = random.getrandbits(32)
        self._payload_type: int | None = None  # set once the sender has started (attach_rtp_out)
        history = RawHistory(sender._RTCRtpSender__rtp_header_extensions_map, self.state.ring if fastpath else None)
        sender._RTCRtpSender__rtp_history = history
        self._ring = self.state.ring = history.ring
        if fastpath:
            vars(sender)[_ROUTE] = self.state  # for settle_counters
        self._extensions: Any = None  # MID and abs-send-time, as aiortc's loop sets them (for _serialize)
        self._header: bytes | None = None  # this sender's serialised RTP header, per frame patched
        self._abs_send_time_at: int | None = None  # offset of the 3 abs-send-time bytes in it
        self._patchable = False  # whether the header differs between frames only in those bytes and the timestamp
        self._batch = batch
        self._dtls = None  # the sender's DTLS transport the route below was taken from
        self._nominated: dict = {}  # its ICE connection's nominated pairs (aioice keeps one dict per connection)
        self._pair = None
        self._transport: Any = None
        self._addr: Any = None
        self._protect: Any = None

    @property
    def payload_type(self) -> int | None:
        """The sender's payload type, None until it has started."""
        return self._payload_type

    @payload_type.setter
    def payload_type(self, value: int) -> None:
        self._payload_type = self.state.payload_type = value

    @property
    def sends(self) -> int:
        """Sends that found the sender ready (aiortc's loop would have sent on it)."""
        return self.state.sends

    def arm(self, armed: bool) -> None:
        """Whether ``fastpath.fan_out`` may send on this sender without Python: the track forwards with no
        rebase pending (compiled only; the route is checked against the connection on each fan-out)."""
        if self.fastpath:
            self.state.armed = armed and self._patchable and self.state.header is not None

    def _serialize(self, timestamp: int, abs_send_time: int) -> bytes:
        packet = RtpPacket(payload_type=self.payload_type, timestamp=timestamp, ssrc=self.sender._ssrc)  # type: ignore[arg-type]
        packet.extensions = self._extensions
        self._extensions.abs_send_time = abs_send_time
        return packet.serialize(self.sender._RTCRtpSender__rtp_header_extensions_map)

    def header(self, timestamp: int, abs_send_time: int) -> bytearray:
        """aiortc's serialisation of this sender's header; after the first frame only the timestamp
        and (where negotiated, i.e. video) abs-send-time bytes are rewritten (the rest is the same
        for every frame)."""
        if self._header is None:
            self._extensions = RtpPacket().extensions
            self._extensions.mid = self.sender._RTCRtpSender__mid
            self._header = self._serialize(0, 0)
            probe = self._serialize(0, 0xFFFFFF)
            changed = [i for i, (a, b) in enumerate(zip(self._header, probe)) if a != b]
            if len(changed) == 3 and changed[2] == changed[0] + 2 and len(probe) == len(self._header):
                self._abs_send_time_at = changed[0]
                self._patchable = True
            elif not changed and len(probe) == len(self._header):
                self._patchable = True  # abs-send-time not negotiated (audio): only the timestamp changes
            if self._patchable and self.fastpath:
                self.state.set_header(self._header, -1 if self._abs_send_time_at is None else self._abs_send_time_at)
        if not self._patchable:
            return bytearray(self._serialize(timestamp, abs_send_time))
        header = bytearray(self._header)
        header[4:8] = timestamp.to_bytes(4, "big")
        at = self._abs_send_time_at
        if at is not None:
            header[at:at + 3] = abs_send_time.to_bytes(3, "big")
        return header

    def ready(self) -> bool:
        """The sender has started and its DTLS transport is connected (what aiortc's ``_send_rtp`` checks)."""
        return self.payload_type is not None and self.sender._RTCRtpSender__transport._state is DtlsState.CONNECTED

    def _route(self, dtls) -> bool:
        """Take the nominated pair's transport and address and the SRTP session; False while there is none."""
        if dtls is not self._dtls:
            self._dtls, self._nominated, self._pair = dtls, dtls.transport._connection._nominated, None
        pair = self._nominated.get(1)
        if pair is None:
            return False
        if pair is not self._pair:
            self._pair, self._transport, self._addr = pair, pair.protocol.transport, pair.remote_addr
            session = outgoing_session(dtls, self.sender._ssrc)
            self._protect = SrtpProtect(session)
            if self.fastpath:
                # The event loop's datagram socket; None for aioice's TurnTransport (relayed: it wraps each
                # datagram for the TURN server, and has no write buffer to ask about): always through it. With
                # it, what fan_out checks before each send: the sender still on this DTLS transport, connected
                # and enabled, this pair still the nominated one.
                self.state.target(own_socket(self._transport), self._addr[0], self._addr[1],
                                  srtp_protect_function(), srtp_context(session), session, self.sender,
                                  dtls, DtlsState.CONNECTED, self._nominated, pair, self._transport)
        return True

    def rebase(self, first: RtpPacket, clock_rate: int) -> None:
        """Map a (new) source's sequence numbers and timestamps into this sender's, from `first` on:
        the sequence continues where it stopped and the timestamp advances by the time that passed,
        so the subscriber's browser sees one stream whichever participant fills the slot."""
        now = time.monotonic()
        state = self.state
        if state.last_timestamp < 0:
            timestamp = self._timestamp_origin
        else:
            timestamp = state.last_timestamp + max(1, int((now - state.last_time) * clock_rate))
        state.timestamp_offset = (timestamp - first.timestamp) & 0xFFFFFFFF
        state.sequence_offset = (state.sequence - first.sequence_number) & 0xFFFF
        state.first = first.sequence_number

    def send(self, packets: list[RtpPacket], ntp: int, abs_send_time: int) -> bool:
        """Sends a source's packets (after `rebase`); False (nothing sent) while the sender is not
        started or not connected."""
        sender = self.sender
        dtls = sender._RTCRtpSender__transport
        if self.payload_type is None or dtls._state is not DtlsState.CONNECTED or not sender._enabled:
            return False
        if (dtls is not self._dtls or self._nominated.get(1) is not self._pair) and not self._route(dtls):
            return False
        if self.fastpath:
            self._send_compiled(packets, ntp, abs_send_time)
        else:
            self._send_python(packets, ntp, abs_send_time)
        return True

    def _send_python(self, packets: list[RtpPacket], ntp: int, abs_send_time: int) -> int:
        """The reference for fastpath.c's ``send`` and ``fan_out``: re-head, keep, protect and send `packets`,
        and count them where aiortc's Sender Reports and getStats read; returns the datagrams sent."""
        state = self.state
        protect, ring, first = self._protect, self._ring, state.first
        sequence_offset, timestamp_offset = state.sequence_offset, state.timestamp_offset
        header = self.header(0, abs_send_time)
        pt: int = self.payload_type  # type: ignore[assignment]  # set: send checked it
        datas = []
        octets = 0
        timestamp = seq = 0
        next_sequence = state.sequence  # taken on only when every packet was protected (as fastpath.c does)
        for packet in packets:
            since = (packet.sequence_number - first) & 0xFFFF
            if since >= 0x8000:
                continue  # from before this source was started on this sender (or half the numbering behind)
            payload = packet.payload
            if len(header) + len(payload) > MAX_PLAIN:
                continue  # does not fit the SRTP buffer (a hostile or broken publisher): dropped, never cut
            if since >= WINDOW:  # `first` follows the stream, WINDOW behind: a stream may outlast the numbering
                first = (packet.sequence_number - WINDOW) & 0xFFFF
            seq = (packet.sequence_number + sequence_offset) & 0xFFFF
            timestamp = (packet.timestamp + timestamp_offset) & 0xFFFFFFFF
            _HEADER_FIELDS.pack_into(header, 1, pt | 0x80 if packet.marker else pt, seq, timestamp)
            plain = bytes(header) + payload
            ring[seq % RTP_HISTORY_SIZE] = plain  # kept for retransmission on NACK, as aiortc's sender keeps it
            datas.append(protect(plain))
            octets += len(payload)
            if ((seq - next_sequence) & 0xFFFF) < 0x8000:  # not before the next number: continue after it
                next_sequence = (seq + 1) & 0xFFFF
        state.sequence, state.first = next_sequence, first
        state.sends += 1
        if not datas:
            return 0
        if len(datas) == 1:
            self._batch.send_one(self._transport, datas[0], self._addr)
        else:
            self._batch.send(self._transport, datas, self._addr)
        state.last_timestamp, state.last_time = timestamp, time.monotonic()
        # What the sender's Sender Reports and getStats read, and the transport's counters.
        sender, dtls = self.sender, self.sender._RTCRtpSender__transport
        sender._RTCRtpSender__ntp_timestamp = ntp
        sender._RTCRtpSender__rtp_timestamp = timestamp
        sender._RTCRtpSender__octet_count += octets
        sender._RTCRtpSender__packet_count += len(datas)
        dtls._RTCDtlsTransport__tx_bytes += sum(map(len, datas))
        dtls._RTCDtlsTransport__tx_packets += len(datas)
        return len(datas)

    def _send_compiled(self, packets: list[RtpPacket], ntp: int, abs_send_time: int) -> int:
        """`_send_python` in one call of fastpath.c's ``send`` (on `state`, which it updates, counters
        included); returns the datagrams sent."""
        if self._header is None or not self._patchable:  # serialised (once, or whole: see header)
            header = self.header(0, abs_send_time)
            if not self._patchable:
                self.state.set_header(bytes(header), -1)
        count, rest, refused = _fastpath.send(self.state, packets, abs_send_time, ntp)
        if rest or refused:
            self.deliver(rest, refused)
        return count

    def settle(self) -> None:
        """Bring the sender's and its DTLS transport's counters up to what was sent (see settle_counters)."""
        settle_counters(self.sender)

    def deliver(self, rest: list[bytes] | None, refused: bool) -> None:
        """After a compiled send: what the socket did not take now goes through the transport, in order (it
        queues it, or reports the error to its protocol)."""
        if refused:
            forwarding_log.warning("UDP GSO refused; sending datagram by datagram")
        if rest:
            sendto, addr = self._transport.sendto, self._addr
            for data in rest:
                sendto(data, addr)


def own_socket(transport) -> Any:
    """The socket an event loop's datagram transport sends on, for fastpath.c to send on directly (it takes
    ``fileno()`` per send): asyncio's ``_SelectorDatagramTransport`` socket, or the socket object uvloop's
    ``UDPTransport`` gives (the media process runs on uvloop, services/media/server.py). None for a transport
    that wraps each datagram, aioice's ``TurnTransport`` (relayed: it has no socket of its own and no write
    buffer, though it answers ``get_extra_info``)."""
    sock = getattr(transport, "_sock", None)
    if sock is None and hasattr(transport, "get_write_buffer_size"):
        sock = transport.get_extra_info("socket")
    return sock


_ROUTE = "_svpl_route"  # a compiled sender's fastpath.Route, in the sender's instance dict


def settle_counters(sender) -> None:
    """Add what the compiled path sent on `sender` since it last did to the counters aiortc keeps on the sender
    (``__ntp_timestamp``, ``__rtp_timestamp``, ``__octet_count``, ``__packet_count``) and its DTLS transport
    (``__tx_bytes``, ``__tx_packets``). fastpath.c adds them up in the sender's Route and sets them at most every
    0.5 s (setting six attributes per subscriber and packet was 5.5 % of the process at 1 room x 16); whatever
    reads them calls this first: the Sender Reports, the report blocks' handler, getStats. Nothing to do for a
    sender on the Python path, which sets them on every send."""
    route = vars(sender).get(_ROUTE)
    if route is not None:
        route.settle()


# What fastpath.fan_out(routes, packets, abs_send_time, ntp) reports per route Python must act on, as
# (index, what, rest): not sent (not armed or not ready: Python's push decides, with the same semantics);
# sent, and `rest` did not fit the socket now (RtpOut.deliver); the same and the kernel refused GSO; failed,
# `rest` the exception (a ConnectionError: libsrtp refused and nothing was sent, as from `send`; anything else
# is a bug, logged). The same numbers as fastpath.c's FAN_* constants.
FAN_PYTHON, FAN_REST, FAN_REFUSED, FAN_FAILED = 0, 1, 2, 3
fan_out = _fastpath.fan_out if _fastpath is not None else None
"""``fastpath.fan_out``: one publisher's packet (or video frame) to every armed subscriber sender's route
(``RtpOut.state``) in one call: for each, what `RtpOut._send_compiled` does (after the checks of
`RtpOut.send`, made in C against the live objects); None when every route was sent on."""


def attach_rtp_out(sender, on_keyframe_request: Callable[[], None], batch, fastpath: bool = False) -> RtpOut:
    """Make `sender` an :class:`RtpOut`'s: keyframe requests from its remote receiver go to
    `on_keyframe_request`, and the RtpOut learns the payload type when the sender starts.

    ``RTCRtpSender._handle_rtcp_packet`` calls ``self._send_keyframe()`` for PLI and FIR (to make its
    encoder produce one); it is overridden on this sender to ask the publisher instead. aiortc's sender
    sends with the first negotiated codec (``_run_rtp(parameters.codecs[0])`` in ``send``), and ``send``
    configures the header extensions map :meth:`RtpOut.header` serialises with."""
    sender._send_keyframe = on_keyframe_request
    out = RtpOut(sender, batch, fastpath)
    start, get_stats, handle = sender.send, sender.getStats, sender._handle_rtcp_packet

    async def send(parameters) -> None:
        await start(parameters)  # configures the header extensions RtpOut.header serialises with
        out.payload_type = parameters.codecs[0].payloadType

    # aiortc reads the sender's counters in getStats and for a report block's remote-inbound-rtp figures.
    async def getStats():
        settle_counters(sender)
        return await get_stats()

    async def handle_rtcp_packet(packet) -> None:
        settle_counters(sender)
        await handle(packet)

    sender.send = send
    if fastpath:  # (the Python path sets the counters on every send)
        sender.getStats = getStats
        sender._handle_rtcp_packet = handle_rtcp_packet
    report_per_connection(sender)
    return out


# ---------------------------------------------------------------------------------------------------------
# Sender Reports: one timer per connection

RTCP_DATAGRAM_BYTES = 1200  # the Sender Reports of a connection's senders share datagrams up to this size (SRTCP
# adds its 14 bytes), like the media's own packets below a path MTU of 1280


class SenderReports:
    """The Sender Reports of one DTLS transport's senders (a meeting connection's: with BUNDLE, every slot of a
    participant), on one timer.

    aiortc runs an RTCP task per sender (``RTCRtpSender._run_rtcp``): every 0.5-1.5 s it wakes, builds a Sender
    Report and an SDES CNAME, and sends them in an SRTCP datagram of their own. A media connection has two
    senders per slot it shows, 30 in a meeting of 16: in the forwarding process that was about 8 % of the busy
    time (timers, packet objects, SRTCP, a system call each). Here a sender's ``_run_rtcp`` only joins its
    transport's SenderReports (:func:`report_per_connection`); one timer per transport, at aiortc's randomised
    interval, builds each sender's report as aiortc's loop does (:func:`sender_report`) and hands it to the
    sender's own ``_send_rtcp``, so every override of it (:func:`watch_round_trips`) sees its sender's report.
    What those sends reach the transport with goes out as compound packets of several senders' reports, each
    starting with a Sender Report, up to :data:`RTCP_DATAGRAM_BYTES` (RFC 8108 5.4: an endpoint sending several
    streams may aggregate their RTCP in one compound packet; browsers read every report in it)."""

    def __init__(self, dtls) -> None:
        self.dtls = dtls
        self.senders: list = []
        self._timer: asyncio.TimerHandle | None = None

    @staticmethod
    def of(dtls) -> SenderReports:
        """The transport's SenderReports (kept in its instance dict: one per transport)."""
        reports = vars(dtls).get(_SENDER_REPORTS)
        if reports is None:
            reports = vars(dtls)[_SENDER_REPORTS] = SenderReports(dtls)
        return reports

    def add(self, sender) -> None:
        self.senders.append(sender)
        if self._timer is None:
            self._schedule()

    def remove(self, sender) -> None:
        if sender in self.senders:
            self.senders.remove(sender)
        if not self.senders and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        # RFC 3550 6.3.1: the interval varied randomly over 0.5-1.5 times the calculated one, as aiortc does
        self._timer = asyncio.get_running_loop().call_later(0.5 + random.random(), self._tick)

    def _tick(self) -> None:
        self._schedule()
        dtls = self.dtls
        if dtls._state is not DtlsState.CONNECTED:
            return
        collected: list[bytes] = []

        async def collect(data: bytes) -> None:
            collected.append(data)

        # The senders' _send_rtcp (aiortc's, under any override) ends in the transport's _send_rtp: for this
        # loop only, it collects instead (nothing else runs meanwhile: run_now runs each send to its end).
        before = vars(dtls).get("_send_rtp")
        dtls._send_rtp = collect
        try:
            for sender in self.senders:
                run_now(sender._send_rtcp(sender_report(sender)))
        finally:
            if before is None:
                del dtls._send_rtp
            else:
                dtls._send_rtp = before
        datagram = b""
        for data in collected:
            if datagram and len(datagram) + len(data) > RTCP_DATAGRAM_BYTES:
                run_now(self._send(datagram))
                datagram = b""
            datagram += data
        if datagram:
            run_now(self._send(datagram))

    async def _send(self, datagram: bytes) -> None:
        try:
            await self.dtls._send_rtp(datagram)
        except ConnectionError:  # as aiortc's _send_rtcp: the transport closed meanwhile
            pass


_SENDER_REPORTS = "_svpl_sender_reports"


def sender_report(sender) -> list:
    """What aiortc's ``RTCRtpSender._run_rtcp`` sends each time: a Sender Report from the sender's counters and
    an SDES CNAME; like it, notes the report's LSR and time for aiortc's own round trip (``__lsr``)."""
    settle_counters(sender)
    ntp = sender._RTCRtpSender__ntp_timestamp
    packets: list = [RtcpSrPacket(ssrc=sender._ssrc, sender_info=RtcpSenderInfo(
        ntp_timestamp=ntp, rtp_timestamp=sender._RTCRtpSender__rtp_timestamp,
        packet_count=sender._RTCRtpSender__packet_count & 0xFFFFFFFF,
        octet_count=sender._RTCRtpSender__octet_count & 0xFFFFFFFF))]
    sender._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF
    sender._RTCRtpSender__lsr_time = time.time()
    cname = sender._RTCRtpSender__cname
    if cname is not None:
        packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=sender._ssrc, items=[(1, cname.encode("utf8"))])]))
    return packets


def report_per_connection(sender) -> None:
    """`sender`'s Sender Reports go with its connection's (:class:`SenderReports`) instead of its own RTCP task.

    aiortc's ``send`` starts ``self._run_rtcp()``, overridden on this sender: it joins the transport's
    SenderReports until ``stop`` cancels it, then sends the BYE and sets the events ``stop`` waits for, as
    aiortc's loop does."""

    async def run_rtcp() -> None:
        sender._RTCRtpSender__rtcp_started.set()
        reports = SenderReports.of(sender.transport)
        reports.add(sender)
        try:
            await asyncio.get_running_loop().create_future()  # until stop() cancels this task
        except asyncio.CancelledError:
            pass
        finally:
            reports.remove(sender)
        await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])
        sender._RTCRtpSender__rtcp_exited.set()

    sender._run_rtcp = run_rtcp


# ---------------------------------------------------------------------------------------------------------
# ICE sockets


def ice_sockets(pc) -> Iterator:
    """The UDP sockets of `pc`'s ICE connections, per transceiver (a bundled socket once per transceiver).

    aiortc's ``RTCIceTransport`` keeps its aioice ``Connection`` in ``_connection``, whose ``_protocols``
    (one per local candidate) hold the asyncio datagram transports; neither offers a public way to them."""
    for t in pc.getTransceivers():
        connection = getattr(t.receiver.transport.transport, "_connection", None)
        for protocol in getattr(connection, "_protocols", ()):
            sock = protocol.transport.get_extra_info("socket") if getattr(protocol, "transport", None) else None
            if sock is not None:
                yield sock


def intercept_host_candidate_binds(loop: asyncio.AbstractEventLoop,
                                   bind: Callable[[Callable[[int], Awaitable]], Awaitable]) -> None:
    """Let `bind` choose the port of every ICE host candidate socket aioice opens on `loop`.

    aioice 0.13 (``Connection.get_component_candidates``) binds each host candidate with the running
    loop's ``create_datagram_endpoint(..., local_addr=(address, 0))`` and has no option to choose the
    port (aioice issue #47; pull requests #63 and #112 are not in any release, and aiortc would not pass
    one through). So `loop.create_datagram_endpoint` is wrapped, once (an instance attribute, no fork):
    a bind of that shape (local port 0, no remote address) calls ``await bind(open_port)``, where
    ``open_port(port)`` is the original call with that port (0: an ephemeral one, as before); every
    other call passes through unchanged."""
    if getattr(loop.create_datagram_endpoint, "_svpl_rtc_ports", False):
        return
    original = loop.create_datagram_endpoint

    async def create_datagram_endpoint(protocol_factory, local_addr=None, remote_addr=None, **kwargs):
        if local_addr is None or remote_addr is not None or local_addr[1] != 0:
            return await original(protocol_factory, local_addr=local_addr, remote_addr=remote_addr, **kwargs)

        def open_port(port: int) -> Awaitable:
            return original(protocol_factory, local_addr=(local_addr[0], port, *local_addr[2:]), **kwargs)

        return await bind(open_port)

    create_datagram_endpoint._svpl_rtc_ports = True  # type: ignore[attr-defined]
    loop.create_datagram_endpoint = create_datagram_endpoint  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------------------
# Direct receive: SRTP/SRTCP handled in the socket's callback (the design is in receive.py)


class HandlerSuspended(RuntimeError):
    """An aiortc handler that :func:`run_now` runs in place suspended: the assumption it is run on (the
    pinned aiortc's handlers end in a synchronous ``sendto`` and never suspend) no longer holds."""


def run_now(coro: Coroutine) -> None:
    """Run one of aiortc's handler coroutines to its end, here and now.

    The pinned aiortc's ``RTCDtlsTransport._handle_rtp_data`` / ``_handle_rtcp_data`` and what they
    await (receive statistics, NACK/PLI/REMB/retransmission sends through ``_send_rtp`` and aioice's
    ``Connection.send``, which end in the datagram transport's synchronous ``sendto``) never suspend, so
    the first ``send(None)`` ends the coroutine (tests/media/test_aiortc_internals.py checks it with
    real packets). Should one ever suspend, its rest still runs (in a task), and :class:`HandlerSuspended`
    is raised: the assumption is broken, and that must not pass silently. An exception from the handler
    itself is logged and the datagram dropped, as aiortc's receive task would."""
    try:
        awaited = coro.send(None)
    except StopIteration:
        return
    except Exception:  # noqa: BLE001 - as aiortc's receive task would: drop the datagram, keep receiving
        receive_log.exception("handling a media datagram failed")
        return
    asyncio.ensure_future(_finish(coro, awaited))
    raise HandlerSuspended(
        f"{getattr(coro, '__qualname__', coro)!s} suspended (awaiting {awaited!r}); aiortc's handlers are run "
        f"in place on the assumption that they never do: re-check services/media/rtc_internals.py against "
        f"the installed aiortc")


async def _finish(coro: Coroutine, awaited) -> None:
    """What a Task does for a coroutine, for the rest of one already started: wait for the future it
    awaits (or yield once for a bare ``yield``), then resume it, until it ends."""
    while True:
        if awaited is None:
            await asyncio.sleep(0)
        else:
            try:
                await awaited
            except BaseException:  # noqa: BLE001, S110 - the coroutine sees the outcome itself when resumed
                pass
        try:
            awaited = coro.send(None)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001 - one bad datagram must not stop the socket's callback
            receive_log.exception("handling a media datagram failed")
            return


def receive_in_callback(dtls, lean: bool = False) -> int:
    """Handle `dtls`'s incoming SRTP/SRTCP in its sockets' callbacks; returns how many sockets were set.

    aiortc 1.16 receives every datagram through aioice: ``StunProtocol.datagram_received`` tries to parse
    it as STUN, ``Connection.data_received`` puts it on ``Connection._queue``, and the DTLS transport's
    task resumes ``__run`` → ``_recv_next`` → ``RTCIceTransport._recv`` → ``Connection.recv`` to take it
    off. This replaces ``datagram_received`` on each of the ICE connection's ``_protocols``: a datagram
    whose first byte says RTP/RTCP (128-191, RFC 7983) arriving while the DTLS transport is connected
    (``_state``, ``_rx_srtp``) and nothing waits in aioice's queue is handled as ``_recv_next`` would:
    counted (``__rx_bytes``, ``__rx_packets``), unprotected with ``_rx_srtp`` and given to
    ``_handle_rtp_data`` / ``_handle_rtcp_data``, run by :func:`run_now`. Everything else (STUN, DTLS
    records, media before the handshake or behind queued datagrams, so the order is kept) takes aioice's
    own path. With `lean`, RTP of a forwarded publication takes :class:`LeanReceive` instead of
    ``_handle_rtp_data`` (fastpath.c's ``parse_rtp``; SVPL_COMPILED_FORWARDING)."""
    connection = dtls.transport._connection
    receive = LeanReceive(dtls) if lean else None
    count = 0
    for protocol in connection._protocols:
        protocol.datagram_received = _direct(protocol.datagram_received, connection._queue, dtls, receive)
        count += 1
    return count


def _direct(through_aioice, waiting: asyncio.Queue, dtls, lean: LeanReceive | None = None):
    """`through_aioice`: the protocol's own method, for everything else; `waiting`: aioice's queue of
    received datagrams, which the DTLS transport's task takes from; `lean`: the lean path for RTP that
    a forwarded publication receives (None: aiortc's path for all)."""

    now_ms = current_ms if lean is None else wall_ms

    def datagram_received(data: bytes, addr) -> None:
        if (data and 127 < data[0] < 192 and dtls._state is DtlsState.CONNECTED and dtls._rx_srtp is not None
                and waiting.empty()):
            dtls._RTCDtlsTransport__rx_bytes += len(data)
            dtls._RTCDtlsTransport__rx_packets += 1
            arrival_time_ms = now_ms()
            try:
                if is_rtcp(data):
                    handling = dtls._handle_rtcp_data(dtls._rx_srtp.unprotect_rtcp(data))
                else:
                    plain = dtls._rx_srtp.unprotect(data)
                    if lean is not None and lean(plain, arrival_time_ms):
                        return
                    handling = dtls._handle_rtp_data(plain, arrival_time_ms=arrival_time_ms)
            except pylibsrtp.Error:  # aiortc drops what does not authenticate (replayed, forged, corrupt)
                return
            except Exception:  # noqa: BLE001 - the lean path, as aiortc's receive task would: drop, keep receiving
                receive_log.exception("handling a media datagram failed")
                return
            run_now(handling)
            return
        through_aioice(data, addr)

    return datagram_received


# ---------------------------------------------------------------------------------------------------------
# The lean receive path: a forwarded publication's RTP without aiortc's per-packet objects and coroutines


ACTIVE_SSRC_REFRESH_MS = 500  # how often the lean path refreshes a source's "last seen" (getSynchronizationSources)
# Sources one DTLS transport's lean path takes on; beyond, aiortc's path (a browser sends a few: audio, video,
# RTX, and new SSRCs when it restarts a sender; a hostile publisher could send any number).
MAX_LEAN_STREAMS = 32


NTP_EPOCH_MS = 2_208_988_800_000  # from the NTP epoch (1900-01-01 UTC) to the Unix epoch, in ms (RFC 5905)


def wall_ms() -> int:
    """``aiortc.clock.current_ms`` (ms since the NTP epoch by the UTC wall clock: the arrival times of
    aiortc's REMB estimator) from ``time.time()``, without its two datetime objects and a timedelta per
    call (1.3 µs against 0.1); the same value but for the last millisecond's rounding."""
    return int(time.time() * 1000) + NTP_EPOCH_MS


def ntp_time() -> int:
    """``aiortc.clock.current_ntp_time`` (the 64-bit NTP time of the UTC wall clock: seconds since 1900 in the
    high 32 bits, the fraction in the low: what Sender Reports and abs-send-time carry) from ``time.time()``,
    without its datetime objects and timedelta: once per forwarded audio packet and video frame."""
    now = time.time()
    seconds = int(now)
    return ((seconds + NTP_EPOCH_MS // 1000) << 32) | int((now - seconds) * (1 << 32))


class _LeanStream:
    """One source SSRC of a diverted receiver (a Publication's), as the lean path handles it: the
    receiver's own aggregated state (aiortc's objects: its REMB estimator, receive statistics and NACK
    generator), looked up once."""

    __slots__ = ("active", "clock_rate", "estimator", "nack", "payload_type", "receiver", "sink", "ssrc", "vp8",
                 "_refresh")

    def __init__(self, receiver, sink: PacketSink, ssrc: int, payload_type: int, codec) -> None:
        self.receiver = receiver
        self.sink = sink
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.clock_rate = codec.clockRate
        self.vp8 = codec.name == "VP8"  # aiortc depayloads VP8 (and drops a packet whose descriptor is cut)
        self.estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator  # video only, as aiortc sets it
        if self.estimator is not None:
            compile_incoming_bitrate(self.estimator)
        self.nack = receiver._RTCRtpReceiver__nack_generator
        self.active = receiver._RTCRtpReceiver__active_ssrc
        self._refresh = -ACTIVE_SSRC_REFRESH_MS


def compile_incoming_bitrate(estimator) -> None:
    """Give aiortc's ``RemoteBitrateEstimator`` (REMB) fastpath.c's ``RateCounter`` as its incoming-bitrate
    counter (``incoming_bitrate``), with the state aiortc's had (``_window_size``, ``_scale``,
    ``_origin_index``, ``_origin_ms``, ``_buckets``): the same figures, without aiortc's loop of one Python
    iteration per millisecond passed, twice per packet (two thirds of the estimator's time)."""
    counter = estimator.incoming_bitrate
    if isinstance(counter, _fastpath.RateCounter):
        return
    compiled = _fastpath.RateCounter(counter._window_size, counter._scale)
    compiled.load(counter._origin_index, counter._origin_ms, [b.count for b in counter._buckets],
                  [b.value for b in counter._buckets])
    estimator.incoming_bitrate = compiled


class LeanReceive:
    """Handles the RTP of a forwarded publication in the socket's callback, for one DTLS transport, without
    the per-packet objects and coroutines of aiortc's path (issue #21; docs/MEDIA-RECEIVE.md has the profile).

    aiortc's path, per packet: ``RtpPacket.parse`` (a packet, a header-extensions dataclass, a list), the
    router, the coroutine ``_handle_rtp_packet`` (REMB estimator, the source's "last seen" as a datetime,
    receive statistics, RTX unwrap, NACK generator, VP8 depayloading for a decoder we never run), and the
    jitter buffer, here a :class:`PacketSink`. For a packet of a source already known to belong to a
    diverted receiver (its SSRC routed to it by aiortc's router, the payload type a media codec of it, not
    RTX), this does the same on the same state: fastpath.c's ``parse_rtp`` reads the header and only the
    abs-send-time extension into a ``ReceivedRtp``; the receiver's own ``RemoteBitrateEstimator`` (REMB,
    sent through ``_send_rtcp`` as aiortc does, so bandwidth.py's cap applies), ``StreamStatistics``
    (Receiver Reports, getStats) and ``NackGenerator`` (NACKs through ``_send_rtcp_nack``) get it, and then
    the sink; the estimator counts the incoming bitrate with fastpath.c's ``RateCounter``
    (:func:`compile_incoming_bitrate`). What differs: no VP8 depayloading (only its bounds check, which drops
    what aiortc drops), and the "last seen" time of ``getSynchronizationSources`` refreshed every 500 ms instead of every packet.

    Everything else takes aiortc's own path, which shares that state, so the two mix: the first packet of a
    source (aiortc's router learns its SSRC), RTX, unknown payload types or SSRCs, a stopped receiver, and
    every packet ``parse_rtp`` refuses (malformed: aiortc drops it as before). SVPL_COMPILED_FORWARDING=false
    leaves all of it to aiortc's path, the readable reference; tests/media/test_lean_receive.py compares them.
    """

    __slots__ = ("_extensions", "_router", "_streams")

    def __init__(self, dtls) -> None:
        if _fastpath is None:
            raise RuntimeError("services/media/_fastpath is not built: run `make install` (or set SVPL_COMPILED_FORWARDING=0)")
        self._router = dtls._rtp_router
        self._extensions = dtls._rtp_header_extensions_map._HeaderExtensionsMap__ids  # the negotiated ids
        self._streams: dict[bytes, _LeanStream] = {}  # by the SSRC's 4 header bytes

    def __call__(self, plain: bytes, arrival_time_ms: int) -> bool:
        """Handle an unprotected RTP packet; False: it is not for this path (aiortc's path takes it)."""
        stream = self._streams.get(plain[8:12])
        if stream is None:
            self._learn(plain)
            return False
        receiver = stream.receiver
        if (plain[1] & 0x7F) != stream.payload_type or not receiver._enabled:
            return False
        if self._router.ssrc_table.get(stream.ssrc) is not receiver:  # unregistered since
            del self._streams[plain[8:12]]
            return False
        packet = _fastpath.parse_rtp(plain, self._extensions.abs_send_time or 0, stream.vp8)
        if packet is None:
            return False
        ssrc = stream.ssrc
        estimator = stream.estimator
        if estimator is not None and packet.abs_send_time is not None:
            remb = estimator.add(abs_send_time=packet.abs_send_time, arrival_time_ms=arrival_time_ms,
                                 payload_size=len(packet.payload) + packet.padding_size, ssrc=ssrc)
            rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc
            if rtcp_ssrc is not None and remb is not None:
                run_now(receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0,
                                                           fci=pack_remb_fci(*remb))))
        if arrival_time_ms - stream._refresh >= ACTIVE_SSRC_REFRESH_MS:
            stream._refresh = arrival_time_ms
            stream.active[ssrc] = current_datetime()
        streams = receiver._RTCRtpReceiver__remote_streams
        statistics = streams.get(ssrc)
        if statistics is None:
            statistics = streams[ssrc] = StreamStatistics(stream.clock_rate)
        statistics.add(packet)
        nack = stream.nack
        if nack is not None and nack.add(packet):
            run_now(receiver._send_rtcp_nack(ssrc, sorted(nack.missing)))
        # A ReceivedRtp has every field of an RtpPacket the forwarder reads (ssrc, sequence_number, timestamp,
        # marker, payload), and nothing downstream reads more (tests/media/test_lean_receive.py).
        stream.sink.add(cast(RtpPacket, packet))
        return True

    def _learn(self, plain: bytes) -> None:
        """Take this packet's source on if aiortc's router already routes it to a diverted receiver with
        this payload type as a media codec (the packet itself still takes aiortc's path)."""
        if len(plain) < 12 or len(self._streams) >= MAX_LEAN_STREAMS:
            return
        ssrc, payload_type = int.from_bytes(plain[8:12], "big"), plain[1] & 0x7F
        receiver = self._router.ssrc_table.get(ssrc)
        if receiver is None or receiver not in self._router.payload_type_table.get(payload_type, ()):
            return
        sink = vars(receiver).get(_JITTER_BUFFER)
        codec = receiver._RTCRtpReceiver__codecs.get(payload_type)
        if isinstance(sink, PacketSink) and codec is not None and not is_rtx(codec):
            self._streams[plain[8:12]] = _LeanStream(receiver, sink, ssrc, payload_type, codec)


# ---------------------------------------------------------------------------------------------------------
# Bandwidth feedback: subscribers' estimates in, a clamped estimate out to the publisher (bandwidth.py)


def watch_receiver_feedback(sender, on_remb: Callable[[int, int], None], on_report: Callable[[int, int], None]) -> None:
    """What `sender`'s remote receiver (a subscriber's browser) reports about the stream goes to these first:
    ``on_remb(bitrate, streams)`` for a REMB (draft-alvestrand-rmcat-remb: the receiver's estimate in bit/s
    for all the `streams` SSRCs it lists) that lists this sender's SSRC, ``on_report(fraction_lost,
    octets_sent)`` for each report block about this sender (RFC 3550 6.4: loss since the previous report in
    256ths, with the payload octets sent so far, ``__octet_count``).

    aiortc's router hands each RTCP packet to the senders it names (``RTCDtlsTransport``'s ``route_rtcp``:
    report blocks by SSRC, a REMB by media SSRC and by the SSRCs in its FCI) through their
    ``_handle_rtcp_packet``, which is overridden on this sender to look first and then call aiortc's own,
    unchanged (RTT, getStats, NACK, keyframe requests). Neither callback may raise or suspend (the handler is
    run in place, :func:`run_now`)."""
    handle = sender._handle_rtcp_packet

    async def handle_rtcp_packet(packet) -> None:
        ssrc = sender._ssrc
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == ssrc:
                    settle_counters(sender)
                    on_report(report.fraction_lost, sender._RTCRtpSender__octet_count)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:  # an application-layer feedback that is not REMB: aiortc ignores it too
                pass
            else:
                if ssrc in ssrcs:
                    on_remb(bitrate, len(set(ssrcs)))
        await handle(packet)

    sender._handle_rtcp_packet = handle_rtcp_packet


SENDER_REPORTS_KEPT = 8  # a report block answers one of the sender's last Sender Reports (about 8 s of them)


def watch_round_trips(sender, on_round_trip: Callable[[float], None]) -> None:
    """``on_round_trip(seconds)`` for each report block about `sender`'s stream that answers one of its last
    Sender Reports: the round trip that block measures (RFC 3550 6.4.1: arrival - LSR time - DLSR), as it is.

    aiortc's own figure (``roundTripTime`` in getStats) keeps only its last Sender Report's LSR, so a block
    answering an earlier one (on a slow link the next Sender Report has left before the answer is back) is
    lost to it, and it smooths what is left (``RTT_ALPHA`` 0.85): after a link clears it took 15-35 s to fall
    below the warning's 300 ms. ``_send_rtcp`` is overridden on this sender to note each Sender Report's LSR
    (the middle 32 bits of its NTP time) and send time, and ``_handle_rtcp_packet`` to match the blocks; both
    then call aiortc's own, unchanged. The callback may not raise or suspend (see :func:`run_now`)."""
    sent: dict[int, float] = {}  # LSR -> time.time() it was sent, the last SENDER_REPORTS_KEPT
    send, handle = sender._send_rtcp, sender._handle_rtcp_packet

    async def send_rtcp(packets) -> None:
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                sent[(packet.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF] = time.time()
                while len(sent) > SENDER_REPORTS_KEPT:
                    del sent[next(iter(sent))]
        await send(packets)

    async def handle_rtcp_packet(packet) -> None:
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                at = sent.get(report.lsr) if report.ssrc == sender._ssrc and report.dlsr else None
                if at is not None:
                    rtt = time.time() - at - report.dlsr / 65536
                    if 0 <= rtt < 60:  # a clock step or a forged DLSR says nothing about the path
                        on_round_trip(rtt)
        await handle(packet)

    sender._send_rtcp = send_rtcp
    sender._handle_rtcp_packet = handle_rtcp_packet


REMB_MAX_BPS = 0x3FFFF << 63  # the largest bitrate a REMB can carry (18-bit mantissa, 6-bit exponent)
# libwebrtc's RembThrottler (modules/congestion_controller/remb_throttler.cc): an estimate goes out as a REMB at
# once when it is more than 3 % below the last one sent, otherwise at most once per 200 ms.
REMB_INTERVAL_MS, REMB_SEND_THRESHOLD_PERCENT = 200, 103


def throttle_estimates(estimator) -> None:
    """Let aiortc's ``RemoteBitrateEstimator`` hand on an estimate (for a REMB) only as libwebrtc's RembThrottler
    sends one (:data:`REMB_INTERVAL_MS`, :data:`REMB_SEND_THRESHOLD_PERCENT`).

    aiortc's receiver sends a REMB for every estimate its estimator returns, and the estimator returns one
    for every packet while its detector sees overuse (a loaded machine, a link filling up): hundreds a second
    per publisher, each built, SRTCP-protected and sent, although only a lower figure tells the publisher
    anything new. The estimator's own state is updated on every packet as before; both receive paths (aiortc's
    ``_handle_rtp_packet`` and :class:`LeanReceive`) call this ``add``."""
    add = estimator.add
    last_ms, last_bps = -(1 << 62), 1 << 62

    def throttled(arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int):
        nonlocal last_ms, last_bps
        remb = add(arrival_time_ms=arrival_time_ms, abs_send_time=abs_send_time, payload_size=payload_size, ssrc=ssrc)
        if remb is None or (remb[0] * REMB_SEND_THRESHOLD_PERCENT // 100 > last_bps
                            and arrival_time_ms < last_ms + REMB_INTERVAL_MS):
            return None
        last_ms, last_bps = arrival_time_ms, remb[0]
        return remb

    estimator.add = throttled


def cap_receiver_estimate(receiver, cap: Callable[[], int | None],
                          on_estimate: Callable[[int], None]) -> Callable[[int, list[int]], Coroutine[Any, Any, None]]:
    """Clamp the REMB `receiver` (a publisher's) sends to ``cap()`` (None: no cap), and report its own estimate
    to `on_estimate`; returns ``send_remb(bitrate, ssrcs)``, a coroutine function that sends a REMB of our own.

    aiortc's receiver estimates the publisher's bandwidth from abs-send-time (``RemoteBitrateEstimator``) and
    sends each estimate as a REMB through ``self._send_rtcp`` (in ``_handle_rtp_packet``); there is no public
    way to it. ``_send_rtcp`` is overridden on this receiver: a REMB goes out as ``min(estimate, cap())``, every
    other RTCP packet (Receiver Reports, NACK, PLI) unchanged. Our own REMBs carry the receiver's RTCP SSRC
    (``__rtcp_ssrc``, none until the receiver has started: then nothing is sent). The estimates themselves are
    throttled as libwebrtc's are (:func:`throttle_estimates`)."""
    estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator
    if estimator is not None:
        throttle_estimates(estimator)
    send = receiver._send_rtcp

    async def send_rtcp(packet) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                bitrate = None
            if bitrate is not None:
                on_estimate(bitrate)
                limit = cap()
                if limit is not None and limit < bitrate:
                    packet = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=packet.ssrc, media_ssrc=0,
                                            fci=pack_remb_fci(int(limit), ssrcs))
        await send(packet)

    receiver._send_rtcp = send_rtcp

    async def send_remb(bitrate: int, ssrcs: list[int]) -> None:
        rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc
        if rtcp_ssrc is not None and ssrcs:
            await send(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0,
                                      fci=pack_remb_fci(min(int(bitrate), REMB_MAX_BPS), ssrcs)))

    return send_remb
