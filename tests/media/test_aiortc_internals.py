"""The aiortc 1.16 internals the forwarder relies on (services/media/forwarding.py).

These fail on an aiortc upgrade that changes any of them; then re-check forwarding.py."""

from __future__ import annotations

import asyncio
import inspect
import threading
from fractions import Fraction
from importlib.metadata import version

import aiortc.rtcrtpreceiver
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from services.media.forwarding import FrameSink, Publication, is_vp8_keyframe


def test_pinned_versions():
    assert version("aiortc") == "1.16.0"
    assert version("aioice") == "0.13.0"


def test_receiver_hands_complete_frames_to_a_replaceable_decoder_queue():
    handle = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "self.__decoder_queue.put((codec, encoded_frame))" in handle
    receive = inspect.getsource(RTCRtpReceiver.receive)
    assert "target=decoder_worker" in receive and "self.__decoder_queue" in receive
    assert list(inspect.signature(aiortc.rtcrtpreceiver.decoder_worker).parameters) == [
        "loop", "input_q", "output_q", "decode_error"]
    assert "self.__decoder_queue.put(None)" in inspect.getsource(RTCRtpReceiver._RTCRtpReceiver__stop_decoder)


async def test_publication_replaces_the_queue_and_the_real_worker_ends_on_the_sink():
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no public STUN server
    try:
        t = pc.addTransceiver("video", direction="recvonly")
        assert hasattr(t.receiver, "_RTCRtpReceiver__decoder_queue")
        pub = Publication("p", "video", t.receiver)
        sink = t.receiver._RTCRtpReceiver__decoder_queue
        assert isinstance(sink, FrameSink)
        got = []
        pub.subscribers.add(type("S", (), {"push": lambda self, pkt, key: got.append((pkt, key))})())
        vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
        sink.put((vp8, JitterFrame(b"\x10\x02\x9d\x01\x2a", 9000)))  # a key frame tag
        packet, key = got[0]
        assert key and bytes(packet) == b"\x10\x02\x9d\x01\x2a"
        assert packet.pts == 9000 and packet.time_base == Fraction(1, 90000)
        # aiortc's own decoder worker, fed our sink, never decodes and ends the track when the receiver stops.
        out: asyncio.Queue = asyncio.Queue()
        worker = threading.Thread(target=aiortc.rtcrtpreceiver.decoder_worker,
                                  args=(asyncio.get_running_loop(), sink, out, threading.Event()))
        worker.start()
        sink.put(None)
        assert await asyncio.wait_for(out.get(), 2) is None
        worker.join(2)
        assert not worker.is_alive()
    finally:
        await pc.close()


def test_sender_packs_packets_without_encoding():
    src = inspect.getsource(RTCRtpSender._next_encoded_frame)
    assert "self.__encoder.pack(data)" in src and "isinstance(data, Frame)" in src
    encoder = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
    packet = av.Packet(b"\x10" + bytes(3000))
    packet.pts, packet.time_base = 48000, Fraction(1, 48000)
    payloads, timestamp = encoder.pack(packet)
    assert timestamp == 90000 and len(payloads) >= 3  # re-packetised for the MTU, clock converted
    opus = get_encoder(RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111))
    audio = av.Packet(b"\xfc\x01\x02")
    audio.pts, audio.time_base = 960, Fraction(1, 48000)
    assert opus.pack(audio) == ([b"\xfc\x01\x02"], 960)


def test_keyframe_requests_reach_an_overridable_hook():
    src = inspect.getsource(RTCRtpSender._handle_rtcp_packet)
    assert "RTCP_PSFB_FIR" in src and "RTCP_PSFB_PLI" in src and "self._send_keyframe()" in src
    assert "RtcpPsfbPacket" in inspect.getsource(RTCRtpReceiver._send_rtcp_pli)
    assert list(inspect.signature(RTCRtpReceiver._send_rtcp_pli).parameters) == ["self", "media_ssrc"]


def test_transceiver_negotiation_attributes():
    src = inspect.getsource(aiortc.rtcpeerconnection.RTCPeerConnection.setRemoteDescription)
    assert "transceiver._codecs = common" in src and "transceiver._offerDirection = direction" in src
    assert "_codecs" in inspect.getsource(RTCRtpTransceiver.__init__)


def test_vp8_keyframe_bit():
    assert is_vp8_keyframe(b"\x10\x02") and not is_vp8_keyframe(b"\x11\x02") and not is_vp8_keyframe(b"")


async def test_socket_buffers_are_reachable_and_enlarged():
    import socket

    from services.media.forwarding import enlarge_socket_buffers

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no public STUN server
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())  # gathers: the UDP sockets exist now
        assert enlarge_socket_buffers(pc, 1 << 20) >= 1
        protocol = pc.getTransceivers()[0].receiver.transport.transport._connection._protocols[0]
        sock = protocol.transport.get_extra_info("socket")
        with open("/proc/sys/net/core/rmem_max") as f:
            cap = int(f.read())
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(1 << 20, cap)
    finally:
        await pc.close()
