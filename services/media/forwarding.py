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
- ``RTCRtpSender._next_encoded_frame`` sends anything that is not an ``av.Frame``
  through ``encoder.pack(packet)``: payloading only.
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
import socket
import threading
import time
from fractions import Fraction
from typing import Callable

import av
from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger("svpl.media.forwarding")

# Codecs we forward (the payloader of the outgoing side must match the incoming bitstream).
FORWARDED_CODECS = {"audio": "audio/opus", "video": "video/VP8"}
# A subscriber queue longer than this (about 2 s of video) is stale: drop it, wait for a keyframe.
MAX_QUEUED = 64

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
        self._time_base: Fraction | None = None
        setattr(receiver, _DECODER_QUEUE, FrameSink(self._on_frame))

    def _on_frame(self, codec, frame) -> None:
        if self._time_base is None:
            self._time_base = Fraction(1, codec.clockRate)
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = self._time_base
        keyframe = self.kind == "video" and is_vp8_keyframe(frame.data)
        self.frames += 1
        self.keyframes += keyframe
        for track in tuple(self.subscribers):
            track.push(packet, keyframe)

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


class ForwardTrack(MediaStreamTrack):
    """An outgoing track that yields a publication's encoded packets (the sender packs them).

    Its source can change: a subscriber's slot is bound to whichever participant fills it."""

    def __init__(self, kind: str, mid: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.mid = mid  # the subscriber's transceiver this track is sent on
        self.source: Publication | None = None
        self.sent = 0
        self._queue: asyncio.Queue = asyncio.Queue()
        self._waiting_for_key = kind == "video"

    def attach_sender(self, sender: RTCRtpSender) -> None:
        # PLI / FIR from the subscriber: forward to the publisher instead of "encoding" a keyframe.
        sender._send_keyframe = self.request_keyframe

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
        while not self._queue.empty():
            self._queue.get_nowait()

    def request_keyframe(self) -> None:
        if self.source is not None:
            self.source.request_keyframe()

    def push(self, packet: av.Packet, keyframe: bool) -> None:
        if self._waiting_for_key:
            if not keyframe:
                return
            self._waiting_for_key = False
        if self._queue.qsize() >= MAX_QUEUED:
            while not self._queue.empty():
                self._queue.get_nowait()
            if self.kind == "video":
                self._waiting_for_key = not keyframe
                if not keyframe:
                    self.request_keyframe()
                    return
        self._queue.put_nowait(packet)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        self.sent += 1
        return packet

    def stop(self) -> None:
        self.unbind()
        super().stop()
        self._queue.put_nowait(None)
