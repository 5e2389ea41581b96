"""Forwarding encoded frames between peer connections, never decoding or re-encoding.

aiortc's MediaRelay decodes every incoming frame and re-encodes it for every receiver
(12-14 % of a core per outgoing stream here). An SFU only needs to re-packetise.
No library does this for aiortc, so it is written here against aiortc 1.16.0's internals
(pinned in pyproject.toml; tests/media/test_aiortc_internals.py fails if an upgrade
changes any of them):

- ``RTCRtpReceiver`` puts every complete, depacketised frame as ``(codec, JitterFrame)``
  on its private ``_RTCRtpReceiver__decoder_queue`` (a ``queue.Queue``), which the
  module-level ``decoder_worker`` thread (started by ``receive()``) reads and decodes
  until it gets ``None``. Before ``receive()`` runs we replace that queue with a
  :class:`FrameSink`: ``put()`` runs on the event loop (inside
  ``_handle_rtp_packet``) and hands the frame on as an ``av.Packet``; the worker
  thread only ever sees the final ``None``, so no decoder is ever created.
- Sending: aiortc's own sender loop (``RTCRtpSender._run_rtp``) costs several nested
  awaits, an ``RtpPacket`` serialisation and extension packing per packet, and packetises
  the same frame again for every receiver. :class:`RtpOut` does what that loop does, once
  per frame: the publication packetises a frame once (``Vp8Encoder._packetize``, Opus is
  one payload), and for each subscriber the header (with the sender's SSRC, payload type,
  MID and abs-send-time extensions, serialised by aiortc once per frame) only gets its
  sequence number and marker patched per packet, is SRTP-protected by the DTLS
  transport's ``_tx_srtp`` (libsrtp) and goes straight to the nominated ICE pair's
  socket (asyncio's ``_SelectorDatagramTransport._sock``) when nothing is queued in the
  transport: a frame's equal-size packets in one ``sendmsg`` with Linux UDP GSO, a single
  packet with one ``sendto``; otherwise through the transport, which keeps the order.
  It keeps the sender's RTP history (NACK retransmission: the sender's ``__rtp_history`` is
  replaced by a :class:`RawHistory` ring of plain RTP bytes, parsed only for ``_retransmit``),
  its Sender Report counters and the DTLS transport's byte counters as aiortc's loop does.
  aiortc's loop itself stays parked in :meth:`ForwardTrack.recv` until the track stops.
- ``RTCRtpSender._handle_rtcp_packet`` calls ``self._send_keyframe()`` for PLI and
  FIR; we override it per sender to ask the publisher (throttled).
- ``RTCRtpReceiver._send_rtcp_pli(media_ssrc)`` sends a PLI to the publisher.
- ``RTCRtpTransceiver._codecs`` is the negotiated codec list the answer and the
  sender use; we keep only the codecs we forward (VP8, Opus).
- aiortc's ICE transport keeps its aioice ``Connection`` in ``_connection``, whose
  ``_protocols`` hold the UDP sockets; we enlarge their buffers (see enlarge_socket_buffers).

No media is written anywhere: packets live in memory queues only.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import sys
import threading
import time
from typing import Callable

from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver, clock
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

log = logging.getLogger("svpl.media.forwarding")

# Codecs we forward (the payloader of the outgoing side must match the incoming bitstream).
FORWARDED_CODECS = {"audio": "audio/opus", "video": "video/VP8"}
RTP_HISTORY_SIZE = 128  # aiortc.rtcrtpsender's: NACKs look packets up by sequence number modulo this

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"


def is_vp8_keyframe(data: bytes) -> bool:
    """RFC 6386 9.1: bit 0 of the first byte of the frame tag is 0 for a key frame."""
    return bool(data) and not (data[0] & 0x01)


class FrameSink:
    """Stands in for a receiver's decoder queue: frames go to `on_frame`, not to a decoder."""

    def __init__(self, on_frame: Callable[[object, object], None]) -> None:
        self._on_frame = on_frame
        self._closed = threading.Event()

    def put(self, item) -> None:
        if item is None:  # the receiver stops its decoder thread
            self._closed.set()
            return
        codec, frame = item
        try:
            self._on_frame(codec, frame)
        except Exception:  # noqa: BLE001 - never break the receiver's RTP path
            log.exception("forwarding a frame failed")

    def get(self, *args, **kwargs):
        """Called by aiortc's decoder worker thread: block until the receiver stops."""
        self._closed.wait()
        return None


def restrict_codecs(transceiver: RTCRtpTransceiver) -> None:
    """Keep only the forwarded codec (and its RTX) in the negotiated list."""
    wanted = FORWARDED_CODECS[transceiver.kind].lower()
    keep = [c for c in transceiver._codecs if c.mimeType.lower() == wanted]
    pts = {c.payloadType for c in keep}
    rtx = [c for c in transceiver._codecs if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") in pts]
    if not keep:
        raise ValueError(f"the offer has no {wanted} for {transceiver.kind}")
    transceiver._codecs = keep + rtx


def enlarge_socket_buffers(pc, size: int) -> int:
    """Give a peer connection's UDP sockets `size`-byte kernel buffers; returns how many were set.

    A forwarding process serves many streams from one event loop: when it is briefly not
    scheduled, the default ~208 kB receive buffer (a few dozen datagrams on loopback) overflows
    and whole frames are lost. The kernel caps the size at net.core.rmem_max / wmem_max."""
    count = 0
    for t in pc.getTransceivers():
        connection = getattr(t.receiver.transport.transport, "_connection", None)
        for protocol in getattr(connection, "_protocols", ()):
            sock = protocol.transport.get_extra_info("socket") if getattr(protocol, "transport", None) else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
                count += 1
    return count


class Publication:
    """One incoming track of a participant, fanned out to subscriber tracks as encoded packets."""

    def __init__(self, owner: str, kind: str, receiver: RTCRtpReceiver, keyframe_interval: float = 0.3) -> None:
        self.owner = owner
        self.kind = kind
        self.receiver = receiver
        self.subscribers: set[ForwardTrack] = set()
        self.frames = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self._interval = keyframe_interval
        self._last_request = -1e9
        self._pending: asyncio.TimerHandle | None = None
        self._picture_id = random.randint(0, 0x7FFF)  # VP8 payload descriptor PictureID, as aiortc starts it
        setattr(receiver, _DECODER_QUEUE, FrameSink(self._on_frame))

    def _on_frame(self, codec, frame) -> None:
        data = frame.data
        keyframe = False
        if self.kind == "video":
            keyframe = is_vp8_keyframe(data)
            # Packetised once for every subscriber (aiortc's sender would do it per receiver).
            payloads = Vp8Encoder._packetize(data, self._picture_id)
            self._picture_id = (self._picture_id + 1) & 0x7FFF
        else:
            payloads = [data]
        self.frames += 1
        self.keyframes += keyframe
        # frame.timestamp is the publisher's RTP timestamp, already in the codec's clock; one NTP
        # send time for the whole fan-out (aiortc reads the clock twice per packet).
        ntp = clock.current_ntp_time()
        for track in tuple(self.subscribers):
            track.push(payloads, frame.timestamp, keyframe, ntp)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe: at most one PLI per interval, none lost."""
        if self.kind != "video":
            return
        now = time.monotonic()
        wait = self._last_request + self._interval - now
        if wait <= 0:
            self._send_pli(now)
        elif self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(wait, self._deferred)

    def _deferred(self) -> None:
        self._pending = None
        self._send_pli(time.monotonic())

    def _send_pli(self, now: float) -> None:
        self._last_request = now
        for source in self.receiver.getSynchronizationSources():
            self.keyframe_requests += 1
            asyncio.ensure_future(self.receiver._send_rtcp_pli(source.source))

    def close(self) -> None:
        if self._pending:
            self._pending.cancel()
        for track in tuple(self.subscribers):
            track.unbind()


class RawHistory:
    """The sender's RTP history (aiortc's ``__rtp_history``: sequence number % 128 -> packet) kept as
    the plain RTP bytes sent, in a fixed ring; a packet object is parsed only when a NACK asks for it.

    aiortc's ``RTCRtpSender._retransmit`` is its only reader and calls only ``get``; its own send loop
    (parked, see ForwardTrack.recv) would store packets with ``[]=``."""

    __slots__ = ("ring", "extensions_map")

    def __init__(self, extensions_map) -> None:
        self.ring: list[bytes | None] = [None] * RTP_HISTORY_SIZE
        self.extensions_map = extensions_map  # the sender's, configured when it starts

    def get(self, index: int, default=None):
        data = self.ring[index]
        return default if data is None else RtpPacket.parse(data, self.extensions_map)

    def __setitem__(self, index: int, packet: RtpPacket) -> None:
        self.ring[index] = packet.serialize(self.extensions_map)


# Linux UDP GSO (udp(7) UDP_SEGMENT, Linux >= 4.18; Python 3.11's socket module has no constant): one
# sendmsg carries a frame's packets, the kernel cuts it into datagrams of the given size (only the
# last may be shorter). No library wraps this for asyncio datagram transports.
SOL_UDP, UDP_SEGMENT = 17, 103
GSO_MAX_SEGMENTS = 32  # kernel limit 64 segments and 64 KiB per send; 32 x ~1.3 kB stays below both


class DatagramBatch:
    """Sends a frame's datagrams on an asyncio datagram transport: one GSO ``sendmsg`` per up to 32 where
    the sizes allow it (all but the last equal) and nothing is queued in the transport (order is kept),
    otherwise, and from the first refusal on, the transport's own per-datagram ``sendto``."""

    __slots__ = ("gso", "_cmsg")

    def __init__(self) -> None:
        self.gso = True  # turned off if the kernel refuses UDP_SEGMENT on this route
        self._cmsg: dict[int, list] = {}

    def send(self, transport, datas: list[bytes], addr) -> None:
        size = len(datas[0])
        sock = getattr(transport, "_sock", None)  # asyncio's _SelectorDatagramTransport socket
        if (self.gso and len(datas) > 1 and sock is not None and not transport.get_write_buffer_size()
                and not transport.is_closing() and len(datas[-1]) <= size
                and all(len(d) == size for d in datas[1:-1])):
            cmsg = self._cmsg.get(size)
            if cmsg is None:
                cmsg = self._cmsg[size] = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
            done = 0
            try:
                for done in range(0, len(datas), GSO_MAX_SEGMENTS):
                    sock.sendmsg(datas[done:done + GSO_MAX_SEGMENTS], cmsg, 0, addr)
                return
            except (BlockingIOError, InterruptedError):
                pass  # the socket buffer is full: the transport queues the rest
            except OSError:
                self.gso = False  # e.g. EINVAL/EIO where the socket or route cannot segment
                log.warning("UDP GSO refused; sending datagram by datagram", exc_info=True)
            datas = datas[done:]
        sendto = transport.sendto
        for data in datas:
            sendto(data, addr)

    @staticmethod
    def send_one(transport, data: bytes, addr) -> None:
        """One datagram straight on the socket when nothing is queued (what the transport's ``sendto``
        does after its argument checks), else through the transport, which queues it in order."""
        sock = getattr(transport, "_sock", None)
        if sock is not None and not transport.get_write_buffer_size() and not transport.is_closing():
            try:
                sock.sendto(data, addr)
                return
            except OSError:
                pass  # a full buffer or an error: the transport queues it or reports it to its protocol
        transport.sendto(data, addr)


class RtpOut:
    """Sends a forwarded frame's payloads on one `RTCRtpSender`, as its `_run_rtp` loop would."""

    def __init__(self, sender: RTCRtpSender) -> None:
        self.sender = sender
        self.payload_type: int | None = None  # set when the sender starts (ForwardTrack.attach_sender)
        self._sequence = random.randint(0, 0xFFFF)
        self._timestamp_origin = random.getrandbits(32)
        history = RawHistory(sender._RTCRtpSender__rtp_header_extensions_map)
        sender._RTCRtpSender__rtp_history = history
        self._ring = history.ring
        self._extensions = None  # MID and abs-send-time, as aiortc's loop sets them (for _serialize)
        self._header: bytes | None = None  # this sender's serialised RTP header, per frame patched
        self._abs_send_time_at: int | None = None  # offset of the 3 abs-send-time bytes in it
        self._patchable = False  # whether the header differs between frames only in those bytes and the timestamp
        self._batch = DatagramBatch()

    def _serialize(self, timestamp: int, abs_send_time: int) -> bytes:
        packet = RtpPacket(payload_type=self.payload_type, timestamp=timestamp, ssrc=self.sender._ssrc)
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
        if not self._patchable:
            return bytearray(self._serialize(timestamp, abs_send_time))
        header = bytearray(self._header)
        header[4:8] = timestamp.to_bytes(4, "big")
        at = self._abs_send_time_at
        if at is not None:
            header[at:at + 3] = abs_send_time.to_bytes(3, "big")
        return header

    def ready(self) -> bool:
        sender = self.sender
        return bool(sender._RTCRtpSender__started) and sender.transport._state is DtlsState.CONNECTED

    def send(self, payloads: list[bytes], timestamp: int, ntp: int) -> None:
        sender = self.sender
        if not sender._enabled:
            return
        dtls = sender.transport
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            return
        transport, addr, protect = pair.protocol.transport, pair.remote_addr, dtls._tx_srtp.protect
        timestamp = (self._timestamp_origin + timestamp) & 0xFFFFFFFF
        seq = self._sequence
        header = self.header(timestamp, (ntp >> 14) & 0x00FFFFFF)
        ring = self._ring
        pt = self.payload_type
        count = len(payloads)
        if not count:
            return
        if count == 1:  # audio, small video frames
            header[1] = pt | 0x80
            header[2] = seq >> 8
            header[3] = seq & 0xFF
            plain = bytes(header) + payloads[0]
            ring[seq % RTP_HISTORY_SIZE] = plain  # kept for retransmission on NACK, as aiortc's sender keeps it
            data = protect(plain)
            self._batch.send_one(transport, data, addr)
            sent_bytes = len(data)
            octets = len(payloads[0])
            seq = (seq + 1) & 0xFFFF
        else:
            datas = []
            append = datas.append
            last = count - 1
            header[1] = pt
            for i, payload in enumerate(payloads):
                if i == last:
                    header[1] = pt | 0x80
                header[2] = seq >> 8
                header[3] = seq & 0xFF
                plain = bytes(header) + payload
                ring[seq % RTP_HISTORY_SIZE] = plain
                append(protect(plain))
                seq = (seq + 1) & 0xFFFF
            self._batch.send(transport, datas, addr)
            sent_bytes = sum(map(len, datas))
            octets = sum(map(len, payloads))
        self._sequence = seq
        # What the sender's Sender Reports and getStats read, and the transport's counters.
        sender._RTCRtpSender__ntp_timestamp = ntp
        sender._RTCRtpSender__rtp_timestamp = timestamp
        sender._RTCRtpSender__octet_count += octets
        sender._RTCRtpSender__packet_count += count
        dtls._RTCDtlsTransport__tx_bytes += sent_bytes
        dtls._RTCDtlsTransport__tx_packets += count


class ForwardTrack(MediaStreamTrack):
    """An outgoing slot: a publication's frames, sent on the subscriber's sender by `RtpOut`.

    Its source can change: a subscriber's slot is bound to whichever participant fills it.
    aiortc's own sender loop waits in `recv` until the track stops (it never gets a frame)."""

    def __init__(self, kind: str, mid: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.mid = mid  # the subscriber's transceiver this track is sent on
        self.source: Publication | None = None
        self.sent = 0
        self._out: RtpOut | None = None
        self._waiting_for_key = kind == "video"
        self._ended = asyncio.get_event_loop().create_future()

    def attach_sender(self, sender: RTCRtpSender) -> None:
        # PLI / FIR from the subscriber: forward to the publisher instead of "encoding" a keyframe.
        sender._send_keyframe = self.request_keyframe
        self._out = out = RtpOut(sender)
        start = sender.send

        async def send(parameters) -> None:
            # aiortc's sender sends with the first negotiated codec (`_run_rtp(parameters.codecs[0])`).
            out.payload_type = parameters.codecs[0].payloadType
            await start(parameters)

        sender.send = send

    def bind(self, publication: Publication) -> None:
        self.unbind()
        self.source = publication
        publication.subscribers.add(self)
        self._waiting_for_key = self.kind == "video"
        publication.request_keyframe()  # a new subscriber needs a keyframe to start decoding

    def unbind(self) -> None:
        if self.source is not None:
            self.source.subscribers.discard(self)
            self.source = None

    def request_keyframe(self) -> None:
        if self.source is not None:
            self.source.request_keyframe()

    def _ready(self) -> bool:
        out = self._out
        if out is None or not out.ready():
            return False
        return out.payload_type is not None

    def push(self, payloads: list[bytes], timestamp: int, keyframe: bool, ntp: int) -> None:
        if self.readyState != "live":
            return
        if not self._ready():
            if self.kind == "video":  # what is dropped now must be followed by a keyframe
                self._waiting_for_key = True
            return
        if self._waiting_for_key:
            if not keyframe:
                # Keep asking until a keyframe gets through (the publication throttles the PLIs):
                # one request can be lost, or answered while this sender was not ready yet, and
                # the subscriber's browser, having decoded nothing, never asks by itself.
                self.request_keyframe()
                return
            self._waiting_for_key = False
        try:
            self._out.send(payloads, timestamp, ntp)
        except ConnectionError:  # the transport closed under us (SRTP/ICE gone): the track ends soon
            return
        self.sent += 1

    async def recv(self):
        """aiortc's sender loop parks here: frames never pass through it."""
        if self.readyState != "live":
            raise MediaStreamError
        await asyncio.shield(self._ended)
        raise MediaStreamError

    def stop(self) -> None:
        self.unbind()
        super().stop()
        if not self._ended.done():
            self._ended.set_result(None)

