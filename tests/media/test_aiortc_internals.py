"""The aiortc, aioice and pylibsrtp internals services/media relies on, all of them used in one module,
services/media/rtc_internals.py (the adapter), and only there.

These are the tripwire for a version bump: they fail on an upgrade that changes any of them; then
re-check rtc_internals.py (and its PINNED versions with pyproject.toml's pins)."""

from __future__ import annotations

import ast
import asyncio
import inspect
import queue
import re
import socket
import tomllib
from asyncio.selector_events import _SelectorDatagramTransport  # type: ignore[attr-defined]  # not in typeshed
from fractions import Fraction
from importlib.metadata import version
from pathlib import Path

import aiortc.rtcrtpreceiver
import av
import pylibsrtp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver, clock
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from services.media import rtc_internals
from services.media.forwarding import DatagramBatch, Publication, is_vp8_keyframe, starts_vp8_keyframe
from services.media.rtc_internals import PINNED, PacketSink, RawHistory, settle_counters
from tests.polling import poll

# A VP8 key frame's first 10 bytes (RFC 6386 9.1): frame tag (key frame, shown, first partition size),
# start code 9d 01 2a, 640 x 360.
KEY_TAG = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\x68\x01"


def test_pinned_versions():
    """The installed versions are the ones the adapter is written against, and pyproject.toml pins
    exactly those."""
    assert PINNED == {"aiortc": "1.16.0", "aioice": "0.13.0", "pylibsrtp": "1.0.0"}
    for name, pinned in PINNED.items():
        assert version(name) == pinned, name
    with open(Path(__file__).parents[2] / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    dependencies = {d for extra in project.get("optional-dependencies", {}).values() for d in extra}
    dependencies.update(project["dependencies"])
    for name, pinned in PINNED.items():
        assert [d for d in dependencies if re.match(rf"{name}\b", d)] == [f"{name}=={pinned}"], name


# Where a module other than the adapter may use a private name of a library that is not one of these:
# asyncio's datagram transport socket (forwarding.DatagramBatch, checked in test_sender_loop_that_rtp_out_reproduces).
OTHER_PRIVATE_NAMES = {("forwarding.py", "_sock")}
LIBRARIES = ("aiortc", "aioice", "pylibsrtp")


def test_the_private_names_fastpath_c_reads_and_writes():
    """fastpath.c's fan_out checks a sender before sending (still on its DTLS transport, which is connected,
    and enabled) and updates its Sender Report counters and the transport's byte counters itself, by name:
    these are aiortc's own attributes, set where the pinned aiortc sets them, and nothing else is named."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    source = (Path(rtc_internals.__file__).parent / "fastpath.c").read_text()
    names = set(re.findall(r'PyUnicode_InternFromString\("(_\w+)"\)', source))
    sender = {"_RTCRtpSender__transport", "_enabled", "_RTCRtpSender__ntp_timestamp", "_RTCRtpSender__rtp_timestamp",
              "_RTCRtpSender__octet_count", "_RTCRtpSender__packet_count"}
    dtls = {"_state", "_RTCDtlsTransport__tx_bytes", "_RTCDtlsTransport__tx_packets"}
    assert names == sender | dtls
    for cls, attributes in ((RTCRtpSender, sender), (RTCDtlsTransport, dtls)):
        init = inspect.getsource(cls.__init__)
        for name in attributes:
            short = name.replace(f"_{cls.__name__}", "")
            assert f"self.{short} =" in init or f"self.{short}:" in init, name
    assert "self.__transport = transport" in inspect.getsource(RTCRtpSender.setTransport)
    assert "if not self._enabled:" in inspect.getsource(RTCRtpSender._next_encoded_frame)  # aiortc's loop skips then


def test_only_the_adapter_touches_the_libraries_internals():
    """No other module of services/media imports from these libraries' submodules (their public API is
    the package itself: ``from aiortc import ...``), names a private attribute of anything but itself
    (``x._name`` where x is not self/cls, or by getattr/setattr), or a mangled name in a string."""
    media = Path(rtc_internals.__file__).parent
    found = []
    for path in sorted(media.glob("*.py")):
        if path.name == "rtc_internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
                if "." in node.module:
                    found.append(f"{where} from {node.module} import")
            elif isinstance(node, ast.Import):
                found += [f"{where} import {a.name}" for a in node.names if a.name.split(".")[0] in LIBRARIES
                          and "." in a.name]
            elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__")
                  and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{where} .{node.attr}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1
                  and isinstance(node.args[1], ast.Constant) and str(node.args[1].value).startswith("_")
                  and (path.name, node.args[1].value) not in OTHER_PRIVATE_NAMES):
                found.append(f"{where} {node.func.id}(..., {node.args[1].value!r})")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.match(r"_RTC\w+__", node.value):
                found.append(f"{where} {node.value!r}")
    assert found == [], "use services/media/rtc_internals.py for these"


def test_receiver_hands_every_packet_to_a_replaceable_jitter_buffer():
    """PacketSink stands in for the receiver's jitter buffer: aiortc's handler must still do its REMB,
    statistics, RTX unwrapping and NACK bookkeeping first, then hand each packet to `add`."""
    handle = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    steps = ["self.__remote_bitrate_estimator.add(", "self.__remote_streams[packet.ssrc].add(packet)",
             "packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)",
             "self.__nack_generator.add(packet)", "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)",
             "if pli_flag:", "if encoded_frame is not None and self.__decoder_thread:"]
    assert all(step in handle for step in steps)
    assert [handle.index(step) for step in steps] == sorted(handle.index(step) for step in steps)
    source = inspect.getsource(aiortc.rtcrtpreceiver)
    assert source.count("self.__jitter_buffer") == 3  # set for audio, set for video, used in the handler
    assert "self.__decoder_queue.put(None)" in inspect.getsource(RTCRtpReceiver._RTCRtpReceiver__stop_decoder)


class FrameCapture(queue.Queue):
    """A client receiver's decoder queue that keeps the frames aiortc's jitter buffer assembles."""

    def __init__(self, on_frame) -> None:
        super().__init__()
        self._on_frame = on_frame

    def put(self, item, block=True, timeout=None) -> None:
        if item is None:  # the receiver stops its decoder thread
            super().put(None)
        else:
            self._on_frame(item[1])


def _vp8_packets(frame: bytes, seq: int, timestamp: int, picture_id: int = 7) -> list[RtpPacket]:
    """A VP8 frame as a publisher's browser sends it: aiortc's payloader, marker on the last packet."""
    payloads = Vp8Encoder._packetize(frame, picture_id)
    return [RtpPacket(payload_type=96, sequence_number=(seq + i) & 0xFFFF, timestamp=timestamp, ssrc=1111,
                      marker=int(i == len(payloads) - 1), payload=payload) for i, payload in enumerate(payloads)]


async def test_publication_forwards_packets_from_the_receivers_own_path():
    """Packets go through aiortc's real receive handler into the Publication: audio at once, a video
    frame as one batch when its last packet arrives (keyframes recognised), a late packet on its own;
    the receiver never assembles or decodes a frame."""
    from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
    from aiortc.rtcrtpreceiver import RemoteStreamTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no public STUN server
    try:
        video, audio = pc.addTransceiver("video", direction="recvonly"), pc.addTransceiver("audio", direction="recvonly")
        vpub = Publication("p", "video", video.receiver)
        apub = Publication("p", "audio", audio.receiver)
        assert isinstance(video.receiver._RTCRtpReceiver__jitter_buffer, PacketSink)
        got = {"video": [], "audio": []}
        restarts = {"video": 0, "audio": 0}
        for pub in (vpub, apub):
            pub.subscribers.add(type("S", (), {
                "route": None,  # not compiled: the publication calls its push
                "push": lambda self, packets, key, ntp, ast, kind=pub.kind: got[kind].append(
                    ([(p.sequence_number, p.marker, p.payload) for p in packets], key)),
                "restart": lambda self, kind=pub.kind: restarts.__setitem__(kind, restarts[kind] + 1)})())
        vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
        opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
        for t in (video, audio):  # what the peer connection sets when the remote description adds a track
            t.receiver._track = RemoteStreamTrack(kind=t.kind)
        await video.receiver.receive(RTCRtpReceiveParameters(codecs=[vp8]))
        await audio.receiver.receive(RTCRtpReceiveParameters(codecs=[opus]))

        async def receive(receiver, packet: RtpPacket) -> None:
            await receiver._handle_rtp_packet(RtpPacket.parse(packet.serialize()), arrival_time_ms=clock.current_ms())

        key = KEY_TAG + bytes(3000)  # a key frame's header, larger than one packet
        keyframe = _vp8_packets(key, 100, 9000)
        assert len(keyframe) >= 3
        for packet in keyframe[:-1]:
            await receive(video.receiver, packet)
        assert got["video"] == []  # the frame is not complete yet
        await receive(video.receiver, keyframe[-1])
        assert got["video"] == [([(p.sequence_number, p.marker, p.payload) for p in keyframe], True)]
        delta = _vp8_packets(b"\x11\x02" + bytes(100), 100 + len(keyframe), 12000, 8)
        await receive(video.receiver, delta[0])
        assert got["video"][-1] == ([(delta[0].sequence_number, 1, delta[0].payload)], False)
        await receive(video.receiver, keyframe[1])  # a late (retransmitted) packet: on its own, at once
        assert got["video"][-1] == ([(keyframe[1].sequence_number, 0, keyframe[1].payload)], False)
        # A frame whose last packet is lost goes on when the next frame starts.
        lost_end = _vp8_packets(b"\x11\x02" + bytes(3000), 200, 15000, 9)
        for packet in lost_end[:-1]:
            await receive(video.receiver, packet)
        nxt = _vp8_packets(b"\x11\x02", 200 + len(lost_end), 18000, 10)
        await receive(video.receiver, nxt[0])
        assert [seq for seq, _, _ in got["video"][-2][0]] == [p.sequence_number for p in lost_end[:-1]]
        assert vpub.frames == 3 and vpub.keyframes == 1
        for i in range(3):  # audio: every packet on at once (aiortc's buffer would hold 4)
            await receive(audio.receiver, RtpPacket(payload_type=111, sequence_number=i, timestamp=960 * i, ssrc=2222,
                                                    payload=b"\xfc" + bytes([i])))
            assert got["audio"][-1] == ([(i, 0, b"\xfc" + bytes([i]))], False)
        assert apub.frames == 3
        # The first packet of a source starts it on every subscriber; so does a new SSRC (the browser
        # restarted its sender) or a jump back in the numbering, and a packet a little behind is only late.
        assert restarts == {"video": 1, "audio": 1}
        await receive(audio.receiver, RtpPacket(payload_type=111, sequence_number=40000, timestamp=0, ssrc=2222,
                                                payload=b"\xfc"))
        assert restarts["audio"] == 2 and got["audio"][-1][0][0][0] == 40000  # more than half the space ahead: behind
        await receive(audio.receiver, RtpPacket(payload_type=111, sequence_number=39950, timestamp=0, ssrc=2222,
                                                payload=b"\xfc"))
        assert restarts["audio"] == 2  # 50 behind: late, not a restart
        await receive(audio.receiver, RtpPacket(payload_type=111, sequence_number=39800, timestamp=0, ssrc=2222,
                                                payload=b"\xfc"))
        assert restarts["audio"] == 3  # 200 behind: the numbering jumped back
        await receive(video.receiver, RtpPacket(payload_type=96, sequence_number=7, timestamp=1, ssrc=3333, marker=1,
                                                payload=delta[0].payload))
        assert restarts["video"] == 2
        # The receiver counted the packets (Receiver Reports, getStats) and never queued a frame to decode.
        assert video.receiver._RTCRtpReceiver__remote_streams[1111].packets_received == len(keyframe) + 1 + 1 + len(
            lost_end) - 1 + 1
        assert video.receiver._RTCRtpReceiver__decoder_queue.empty()
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


async def test_negotiation_through_the_adapter():
    """offered_direction (the offer's direction seen from our side) and negotiated_codecs read what the
    remote offer set; set_negotiated_codecs decides what the answer offers."""
    from services.media.rtc_internals import negotiated_codecs, offered_direction, set_negotiated_codecs

    client, server = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        client.addTransceiver("video", direction="recvonly")
        client.addTransceiver("audio", direction="sendrecv")
        await client.setLocalDescription(await client.createOffer())
        await server.setRemoteDescription(client.localDescription)
        video, audio = server.getTransceivers()
        assert (offered_direction(video), offered_direction(audio)) == ("sendonly", "sendrecv")
        vp8 = [c for c in negotiated_codecs(video) if c.mimeType == "video/VP8"]
        assert vp8 and len(negotiated_codecs(video)) > len(vp8)
        set_negotiated_codecs(video, vp8)
        await server.setLocalDescription(await server.createAnswer())
        rtpmaps = [line for line in server.localDescription.sdp.splitlines() if line.startswith("a=rtpmap:")]
        assert [line for line in rtpmaps if "/90000" in line] == [f"a=rtpmap:{vp8[0].payloadType} VP8/90000"]
    finally:
        await client.close()
        await server.close()


def test_vp8_keyframe_bit_and_start_code():
    assert is_vp8_keyframe(KEY_TAG) and not is_vp8_keyframe(b"\x11\x02\x00" + KEY_TAG[3:]) and not is_vp8_keyframe(b"")
    # The key-frame bit without the start code (half of any random payload has the bit) is no key frame.
    assert not is_vp8_keyframe(b"\x10\x02\x00" + bytes(7)) and not is_vp8_keyframe(KEY_TAG[:9])
    first, second = Vp8Encoder._packetize(KEY_TAG + bytes(2000), 5)
    assert starts_vp8_keyframe(first) and not starts_vp8_keyframe(second)  # the frame tag is in the first packet
    assert not starts_vp8_keyframe(Vp8Encoder._packetize(b"\x11\x02\x00", 6)[0])
    assert not starts_vp8_keyframe(b"") and not starts_vp8_keyframe(b"\x90")  # truncated: no error


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


def test_sender_loop_that_rtp_out_reproduces():
    """RtpOut (rtc_internals.py) sends as `RTCRtpSender._run_rtp` does and keeps the state it keeps."""
    import aiortc.rtcrtpsender as sender_module
    from aioice.ice import Connection, StunProtocol
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtcicetransport import RTCIceTransport

    from services.media.rtc_internals import RTP_HISTORY_SIZE

    assert sender_module.RTP_HISTORY_SIZE == RTP_HISTORY_SIZE
    assert "self._run_rtp(parameters.codecs[0])" in inspect.getsource(RTCRtpSender.send)
    assert "self.__started = True" in inspect.getsource(RTCRtpSender.send)
    init = inspect.getsource(RTCRtpSender.__init__)
    for name in ("__rtp_history", "__ntp_timestamp", "__rtp_timestamp", "__octet_count", "__packet_count", "__mid",
                 "__rtp_header_extensions_map", "__started", "_enabled", "_ssrc"):
        assert f"self.{name} =" in init or f"self.{name}:" in init, name
    run = inspect.getsource(RTCRtpSender._run_rtp)
    for line in ("packet.ssrc = self._ssrc", "packet.marker = (i == len(enc_frame.payloads) - 1) and 1 or 0",
                 "packet.extensions.abs_send_time = (", "packet.extensions.mid = self.__mid",
                 "self.__rtp_history[packet.sequence_number % RTP_HISTORY_SIZE] = (",
                 "packet_bytes = packet.serialize(self.__rtp_header_extensions_map)",
                 "await self.transport._send_rtp(packet_bytes)", "self.__ntp_timestamp = clock.current_ntp_time()",
                 "self.__rtp_timestamp = packet.timestamp", "self.__octet_count += len(payload)",
                 "self.__packet_count += 1", "enc_frame = await self._next_encoded_frame(codec)"):
        assert line in run, line
    assert "packet = self.__rtp_history.get(sequence_number % RTP_HISTORY_SIZE)" in inspect.getsource(
        RTCRtpSender._retransmit)
    # RtpOut replaces the history with a RawHistory: nothing else reads or rebinds it, and the
    # extensions map it parses with is the sender's one object, configured in place by send().
    assert inspect.getsource(sender_module).count("__rtp_history") == 3  # __init__, _run_rtp, _retransmit
    assert inspect.getsource(sender_module).count("self.__rtp_header_extensions_map =") == 1
    assert "self.__rtp_header_extensions_map.configure(parameters)" in inspect.getsource(RTCRtpSender.send)
    # DatagramBatch sends on the socket of asyncio's datagram transport when its queue is empty, as
    # the transport's sendto itself does.
    transport_sendto = inspect.getsource(_SelectorDatagramTransport.sendto)
    assert "if not self._buffer:" in transport_sendto and "self._sock.sendto(data, addr)" in transport_sendto
    assert "return self._buffer_size" in inspect.getsource(_SelectorDatagramTransport.get_write_buffer_size)
    send_rtp = inspect.getsource(RTCDtlsTransport._send_rtp)
    assert "if self._state != State.CONNECTED:" in send_rtp  # RtpOut.ready checks the same
    for line in ("data = self._tx_srtp.protect(data)", "await self.transport._send(data)",
                 "self.__tx_bytes += len(data)", "self.__tx_packets += 1"):
        assert line in send_rtp, line
    assert "self._send = self._connection.send" in inspect.getsource(RTCIceTransport)
    sendto = inspect.getsource(Connection.sendto)
    assert "active_pair = self._nominated.get(component)" in sendto
    assert "await active_pair.protocol.send_data(data, active_pair.remote_addr)" in sendto
    assert "self.transport.sendto(data, addr)" in inspect.getsource(StunProtocol.send_data)
    assert "payloads = self._packetize(bytes(packet), self.picture_id)" in inspect.getsource(Vp8Encoder.pack)
    assert list(inspect.signature(Vp8Encoder._packetize).parameters) == ["buffer", "picture_id"]


@pytest.mark.parametrize("fastpath", [True, False], ids=["compiled", "python"])
async def test_rtp_out_delivers_frames_stats_and_retransmissions(monkeypatch, fastpath):
    """A ForwardTrack on a real loopback connection: frames arrive whole with their timestamps, the
    sender's stats count them, and a NACKed packet is retransmitted from the history RtpOut keeps
    (both send paths: fastpath.c and its Python reference)."""
    import aioice.ice

    from services.media.forwarding import ForwardTrack

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    sfu, client = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))

    async def wait_for_frames(done) -> None:
        await poll(done, 10, lambda: f"the frames (received: {len(received)})", 0.02)

    try:
        received = []
        t = client.addTransceiver("video", direction="recvonly")
        t.receiver._RTCRtpReceiver__decoder_queue = FrameCapture(received.append)
        await client.setLocalDescription(await client.createOffer())
        await sfu.setRemoteDescription(client.localDescription)
        track = ForwardTrack("video")
        st = sfu.getTransceivers()[0]
        st.sender.replaceTrack(track)
        track.attach_sender(st.sender, fastpath)
        st.direction = "sendonly"
        await sfu.setLocalDescription(await sfu.createAnswer())
        await client.setRemoteDescription(sfu.localDescription)
        pub = type("P", (), {"request_keyframe": lambda self: None, "unsubscribe": lambda self, track: None})()
        track.source = pub
        key = KEY_TAG + bytes(range(256)) * 12  # a key frame's header, four packets' worth
        payloads = Vp8Encoder._packetize(key, 7)
        deadline = asyncio.get_running_loop().time() + 10
        ts, seq = 0, 65000  # the publisher's numbering: the subscriber's sender uses its own
        while not received:  # until connected, frames are dropped (and keyframes asked for)
            assert asyncio.get_running_loop().time() < deadline, "no frame arrived"
            ts += 6000
            track.push(_vp8_packets(key, seq, ts), True, clock.current_ntp_time(), 0)
            seq = (seq + len(payloads)) & 0xFFFF
            await asyncio.sleep(0.05)
        # Every keyframe sent arrives (some were in flight), except the last: aiortc's jitter buffer
        # hands a frame on when the next one starts, so it still holds that one.
        keys = track.sent
        await wait_for_frames(lambda: len(received) >= keys - 1)
        assert [f.data for f in received] == [key] * (keys - 1)
        for i in range(1, 6):
            frame = _vp8_packets(b"\x11" + bytes([i]) * 3000, seq, ts + i * 6000, 7 + i)
            track.push(frame, False, clock.current_ntp_time(), 0)
            seq = (seq + len(frame)) & 0xFFFF
        await wait_for_frames(lambda: len(received) >= keys + 4)
        assert received[keys - 1].data == key
        assert [f.data for f in received[keys:]] == [b"\x11" + bytes([i]) * 3000 for i in range(1, 5)]
        last_key = received[keys - 1].timestamp
        assert [(f.timestamp - last_key) & 0xFFFFFFFF for f in received[keys:]] == [6000, 12000, 18000, 24000]
        assert track.sent == keys + 5
        stats = [s for s in (await st.sender.getStats()).values() if s.type == "outbound-rtp"][0]
        assert stats.packetsSent == keys * len(payloads) + 5 * 3  # 3000-byte frames: 3 packets each
        # The per-frame patched header is byte for byte aiortc's own serialisation of that packet.
        out = track._out
        assert out._abs_send_time_at is not None  # abs-send-time is negotiated for video
        for timestamp, abs_send_time in ((123456789, 0xABCDEF), (5, 1), (0xFFFFFFFF, 0)):
            expected = RtpPacket(payload_type=out.payload_type, timestamp=timestamp, ssrc=st.sender._ssrc)
            expected.extensions.mid = st.sender._RTCRtpSender__mid
            expected.extensions.abs_send_time = abs_send_time
            assert out.header(timestamp, abs_send_time) == expected.serialize(
                st.sender._RTCRtpSender__rtp_header_extensions_map)
        # Multi-packet frames went out in one GSO sendmsg on the transport's socket (the kernel took it).
        pair = st.sender.transport.transport._connection._nominated[1]
        assert isinstance(pair.protocol.transport, _SelectorDatagramTransport)
        assert isinstance(pair.protocol.transport._sock, socket.socket)
        assert out.state.gso if fastpath else out._batch.gso
        # A NACK for the last packet sent: aiortc's sender retransmits it from RtpOut's history, the
        # same packet (or its RTX wrapping, RFC 4588) as first sent.
        history = st.sender._RTCRtpSender__rtp_history
        assert isinstance(history, RawHistory)
        dtls = st.sender.transport
        before = dtls._RTCDtlsTransport__tx_packets
        seq = (track._out.state.sequence - 1) & 0xFFFF
        original = history.ring[seq % 128]
        assert RtpPacket.parse(original).sequence_number == seq and RtpPacket.parse(original).marker
        retransmitted = []
        send_rtp = dtls._send_rtp

        async def capture(data: bytes) -> None:
            retransmitted.append(data)
            await send_rtp(data)

        monkeypatch.setattr(dtls, "_send_rtp", capture)
        await st.sender._retransmit(seq)
        assert dtls._RTCDtlsTransport__tx_packets == before + 1
        (again,) = retransmitted
        extensions_map = st.sender._RTCRtpSender__rtp_header_extensions_map
        if RtpPacket.parse(again).payload_type == out.payload_type:
            assert again == original
        else:
            rtx, first = RtpPacket.parse(again, extensions_map), RtpPacket.parse(original, extensions_map)
            assert rtx.payload == seq.to_bytes(2, "big") + first.payload
            assert (rtx.timestamp, rtx.marker, rtx.extensions.mid) == (first.timestamp, 1, first.extensions.mid)
        await st.sender._retransmit((seq - 200) & 0xFFFF)  # no longer in the history: nothing sent
        assert len(retransmitted) == 1
        # The slot now shows another participant, numbered in its own way: from that source's first
        # keyframe on, the subscriber gets one continuous stream (sequence numbers go on where they
        # stopped, the timestamp moves on by the time passed).
        last_a = received[-1].timestamp
        track.bind(type("P", (), {"request_keyframe": lambda self: None, "subscribe": lambda self, track: None,
                                   "unsubscribe": lambda self, track: None})())
        next_seq = out.state.sequence
        track.push(_vp8_packets(b"\x11" + bytes(100), 7, 5000), False, clock.current_ntp_time(), 0)
        assert out.state.sequence == next_seq  # a delta frame cannot start the new source
        key_b = b"\x10\x02\x9d\x01\x2a" + bytes(range(200, 256)) * 40
        frames_b = [_vp8_packets(key_b, 30000, 4_000_000, 40), _vp8_packets(b"\x11" + bytes(2000), 30002, 4_003_000, 41),
                    _vp8_packets(b"\x11" + bytes(10), 30004, 4_006_000, 42)]
        for frame in frames_b:
            track.push(frame, frame is frames_b[0], clock.current_ntp_time(), 0)
        first_b = RtpPacket.parse(history.ring[next_seq % 128])
        assert first_b.sequence_number == next_seq and first_b.payload == frames_b[0][0].payload
        await wait_for_frames(lambda: any(f.data == key_b for f in received) and received[-1].data == b"\x11" + bytes(2000))
        b_frames = [f for f in received if f.data in (key_b, b"\x11" + bytes(2000))]
        assert 0 < (b_frames[0].timestamp - last_a) & 0xFFFFFFFF < 90000 * 10
        assert (b_frames[1].timestamp - b_frames[0].timestamp) & 0xFFFFFFFF == 3000
    finally:
        await sfu.close()
        await client.close()


async def test_datagram_batch_keeps_every_datagram_and_its_order():
    """GSO sends (equal sizes, more than one sendmsg's worth), per-datagram fallback for unequal sizes,
    and a socket that refuses GSO (SO_NO_CHECK: the kernel cannot segment without checksums)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.put_nowait(data)

    receiver, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
    sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    addr = receiver.get_extra_info("sockname")

    async def received(count: int) -> list[bytes]:
        return [await asyncio.wait_for(got.get(), 5) for _ in range(count)]

    try:
        batch = DatagramBatch()
        frames = [
            [bytes([i]) * 1330 for i in range(70)] + [b"\xff" * 200],  # 71 packets: three sendmsg calls
            [b"a" * 1330, b"b" * 1330, b"c" * 1330],
            [b"a" * 700, b"b" * 1330, b"c" * 10],  # unequal: datagram by datagram
        ]
        for datas in frames:
            batch.send(sender, datas, addr)
            assert await received(len(datas)) == datas
            assert batch.gso
        assert got.empty()
        sender.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK
        refused = DatagramBatch()
        datas = [b"x" * 1000, b"y" * 1000, b"z" * 3]
        refused.send(sender, datas, addr)
        assert not refused.gso
        assert await received(3) == datas
        refused.send(sender, datas, addr)
        assert await received(3) == datas
        # Single datagrams: on the socket while nothing is queued, behind the queue (in order) otherwise.
        DatagramBatch.send_one(sender, b"one", addr)
        assert await received(1) == [b"one"]
        sender._buffer.append((b"queued", addr))  # as the transport keeps what a full socket refused
        sender._buffer_size += 6
        DatagramBatch.send_one(sender, b"after", addr)
        assert got.empty() and [d for d, _ in sender._buffer] == [b"queued", b"after"]
        sender._sendto_ready()  # what the loop calls when the socket is writable again
        assert await received(2) == [b"queued", b"after"]
    finally:
        sender.close()
        receiver.close()


async def test_rtp_out_audio_header_is_aiortcs_serialisation():
    """Audio negotiates no abs-send-time: the cached header is patched (timestamp only), byte for byte
    what aiortc serialises for that packet."""
    from aiortc.codecs import HEADER_EXTENSIONS
    from aiortc.rtcrtpparameters import RTCRtpParameters

    from services.media.rtc_internals import RtpOut

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender = pc.addTransceiver("audio").sender
        extensions_map = sender._RTCRtpSender__rtp_header_extensions_map
        extensions_map.configure(RTCRtpParameters(headerExtensions=HEADER_EXTENSIONS["audio"]))
        sender._RTCRtpSender__mid = "1"
        out = RtpOut(sender, DatagramBatch())
        out.payload_type = 111
        for timestamp, abs_send_time in ((0, 0), (123456789, 0xABCDEF), (0xFFFFFFFF, 7)):
            expected = RtpPacket(payload_type=111, timestamp=timestamp, ssrc=sender._ssrc)
            expected.extensions.mid = "1"
            expected.extensions.abs_send_time = abs_send_time
            assert out.header(timestamp, abs_send_time) == expected.serialize(extensions_map)
        assert out._patchable and out._abs_send_time_at is None
    finally:
        await pc.close()


def test_aioice_binds_host_candidates_on_the_running_loop_with_port_0():
    """rtc_internals.intercept_host_candidate_binds (for services/media/ports.py) ranges ICE host ports by
    wrapping the running loop's create_datagram_endpoint: if aioice binds some other way (or gains a
    port-range option), re-check it."""
    import aioice.ice

    src = inspect.getsource(aioice.ice.Connection.get_component_candidates)
    assert "loop = asyncio.get_running_loop()" in src
    assert "await loop.create_datagram_endpoint(" in src and "local_addr=(address, 0)" in src
    assert "except OSError as exc:" in src  # a full range skips the address, leaving no socket
    assert "port_range" not in inspect.signature(aioice.ice.Connection).parameters


async def test_aioice_gathers_inside_a_port_scope_and_ephemerally_outside_it():
    import aioice.ice

    from services.media import ports

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a port certainly free right now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inside, outside = aioice.ice.Connection(ice_controlling=False), aioice.ice.Connection(ice_controlling=False)
    try:
        with ports.scope(ports.PortRange(port, port)) as usage:
            await inside.gather_candidates()
        await outside.gather_candidates()
        assert [c.port for c in inside.local_candidates] == [port] and usage.bound == [port]
        assert [c.port for c in outside.local_candidates] != [port]
        # The one port is taken: a second connection in the scope gets no socket and the shortage is recorded.
        full = aioice.ice.Connection(ice_controlling=False)
        with ports.scope(ports.PortRange(port, port)) as usage:
            await full.gather_candidates()
        assert full.local_candidates == [] and usage.exhausted
        await full.close()
    finally:
        await inside.close()
        await outside.close()


def test_srtp_protect_is_pylibsrtps_protect():
    """SrtpProtect (rtc_internals.py) calls libsrtp on pylibsrtp's session buffer: the same bytes as
    ``Session.protect``, which the receiving side's ``unprotect`` accepts, and a clear error for a
    packet that does not fit."""
    import pytest
    from pylibsrtp import Policy, Session

    from services.media.rtc_internals import SrtpProtect

    key = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt

    def session(direction: int) -> Session:
        return Session(policy=Policy(key=key, ssrc_type=direction))

    ours, theirs, receiver = SrtpProtect(session(Policy.SSRC_ANY_OUTBOUND)), session(Policy.SSRC_ANY_OUTBOUND), session(
        Policy.SSRC_ANY_INBOUND)
    for seq in range(5):
        plain = RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000, ssrc=1234,
                          payload=bytes([seq]) * (100 + 300 * seq)).serialize()
        protected = ours(plain)
        assert protected == theirs.protect(plain) and protected != plain
        assert receiver.unprotect(protected) == plain
    with pytest.raises(ValueError):
        ours(bytes(1500))


def test_the_srtp_function_and_context_fastpath_calls():
    """fastpath.c calls libsrtp 2's ``srtp_protect(srtp_t, void *, int *)`` (the one in pylibsrtp's binding,
    by address) on a session's own context; its buffer is pylibsrtp's 1500 bytes."""
    from pylibsrtp import Policy, Session
    from pylibsrtp._binding import ffi, lib

    from services.media.rtc_internals import MAX_PLAIN, SRTP_BUFFER, srtp_context, srtp_protect_function

    function = ffi.addressof(lib, "srtp_protect")
    assert ffi.getctype(ffi.typeof(function)) == "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"
    assert srtp_protect_function() == int(ffi.cast("uintptr_t", function)) != 0
    assert ffi.sizeof("srtp_err_status_t") == ffi.sizeof("int")
    session = Session(policy=Policy(key=bytes(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    assert srtp_context(session) == int(ffi.cast("uintptr_t", session._srtp[0])) != 0
    assert len(session._cdata) == SRTP_BUFFER and MAX_PLAIN == SRTP_BUFFER - 144
    assert "if len(data) > len(self._cdata) - trailer:" in inspect.getsource(Session._Session__process)


def test_receive_path_that_receive_directly_reproduces():
    """rtc_internals.receive_in_callback (for services/media/receive.py) handles RTP/RTCP in the socket
    callback as aiortc's DTLS task would."""
    from aioice.ice import Connection, StunProtocol
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    received = inspect.getsource(StunProtocol.datagram_received)
    assert "message = stun.parse_message(data)" in received
    assert "self.receiver.data_received(data, self.local_candidate.component)" in received
    assert "self._queue.put_nowait((data, component))" in inspect.getsource(Connection.data_received)
    assert "result = await self._queue.get()" in inspect.getsource(Connection.recvfrom)
    recv_next = inspect.getsource(RTCDtlsTransport._recv_next)
    for line in ("self.__rx_bytes += len(data)", "self.__rx_packets += 1",
                 "elif first_byte > 127 and first_byte < 192 and self._rx_srtp:",
                 "arrival_time_ms = clock.current_ms()", "data = self._rx_srtp.unprotect_rtcp(data)",
                 "await self._handle_rtcp_data(data)", "data = self._rx_srtp.unprotect(data)",
                 "await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)",
                 "except pylibsrtp.Error as exc:"):
        assert line in recv_next, line
    assert "self._rx_srtp: Session = None" in inspect.getsource(RTCDtlsTransport.__init__)
    assert "self._protocols: list[StunProtocol] = []" in inspect.getsource(Connection.__init__)


async def test_handlers_run_in_place_never_suspend_with_real_packets(monkeypatch):
    """rtc_internals.run_now runs aiortc's RTP and RTCP handlers to their end in the socket's callback, on
    the assumption that they never suspend. With real traffic (a client's audio and video echoed back to it
    as the test room does: its Sender and Receiver Reports, its media) and with the packets that make
    aiortc send from inside a handler (a NACK: a retransmission; PLI, FIR: a keyframe request; REMB; a
    gap in the sequence: our NACK; BYE), the first step ends the handler: ``send(None)`` raises
    StopIteration, and run_now never raised HandlerSuspended."""
    import collections

    import aioice.ice
    import pytest
    from aiortc.rtp import (
        RTCP_PSFB_APP,
        RTCP_PSFB_FIR,
        RTCP_PSFB_PLI,
        RTCP_RTPFB_NACK,
        RtcpByePacket,
        RtcpPacket,
        RtcpPsfbPacket,
        RtcpRtpfbPacket,
        pack_remb_fci,
    )

    from devstack.peers import SyntheticAudio, SyntheticVideo, count_frames
    from services.media.forwarding import ForwardTrack, restrict_codecs
    from services.media.receive import receive_directly
    from services.media.rtc_internals import HandlerSuspended, negotiated_codecs

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    loop = asyncio.get_running_loop()
    errors: list[dict] = []  # what reached the loop's exception handler (a HandlerSuspended would)
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    handled: collections.Counter[str] = collections.Counter()  # packet kinds run_now ran the handlers for
    run_now = rtc_internals.run_now

    def recording(coro) -> None:
        data = coro.cr_frame.f_locals["data"]  # the handler's argument (it has not started yet)
        if coro.cr_code.co_name == "_handle_rtcp_data":
            handled.update(type(p).__name__ for p in RtcpPacket.parse(data))
        else:
            handled["RtpPacket"] += 1
        run_now(coro)

    monkeypatch.setattr(rtc_internals, "run_now", recording)  # the socket callback looks it up per datagram

    def first_step_ends(coro) -> None:
        with pytest.raises(StopIteration):
            coro.send(None)

    server, client = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    frames: collections.Counter[str] = collections.Counter()
    client.on("track", lambda track: asyncio.ensure_future(count_frames(track, frames)))
    try:
        client.addTrack(SyntheticAudio())
        client.addTrack(SyntheticVideo(160, 120))
        await client.setLocalDescription(await client.createOffer())
        await server.setRemoteDescription(client.localDescription)
        pubs, tracks = {}, {}
        for t in server.getTransceivers():  # as the test room (rooms.py) sets it up
            restrict_codecs(t)
            pubs[t.kind], tracks[t.kind] = Publication("echo", t.kind, t.receiver), ForwardTrack(t.kind)
            t.sender.replaceTrack(tracks[t.kind])
            tracks[t.kind].attach_sender(t.sender)
            tracks[t.kind].bind(pubs[t.kind])
            t.direction = "sendrecv"
        await server.setLocalDescription(await server.createAnswer())
        assert receive_directly(server) >= 1
        await client.setRemoteDescription(server.localDescription)
        await poll(lambda: frames["video"] >= 10 and frames["audio"] >= 25
                   and all(handled[k] for k in ("RtpPacket", "RtcpSrPacket", "RtcpRrPacket")), 15,
                   lambda: f"echoed media and the client's reports through the direct path ({frames}, {handled})")
        assert not [e for e in errors if isinstance(e.get("exception"), HandlerSuspended)], errors

        video = next(t for t in server.getTransceivers() if t.kind == "video")
        dtls, sender = video.receiver.transport, video.sender
        ssrc = sender._ssrc  # our sender's, which the client's feedback names
        (source,) = [s.source for s in video.receiver.getSynchronizationSources()]  # the client's video

        def sent() -> int:  # the compiled path's sends settled (as the NACK's handler does first)
            for transceiver in server.getTransceivers():
                settle_counters(transceiver.sender)
            return dtls._RTCDtlsTransport__tx_packets

        # A NACK for the last packet we sent: aiortc's sender retransmits it, within the first step.
        last = (tracks["video"]._out.state.sequence - 1) & 0xFFFF
        before = sent()
        first_step_ends(dtls._handle_rtcp_data(bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=ssrc,
                                                                     lost=[last]))))
        assert sent() == before + 1
        # PLI and FIR reach our keyframe hook (on to the publisher, throttled); REMB is taken note of.
        requests = pubs["video"].keyframe_requests
        for fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            first_step_ends(dtls._handle_rtcp_data(bytes(RtcpPsfbPacket(fmt=fmt, ssrc=1, media_ssrc=ssrc))))
        assert pubs["video"].keyframe_requests > requests or pubs["video"]._pending is not None
        first_step_ends(dtls._handle_rtcp_data(bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0,
                                                                    fci=pack_remb_fci(300_000, [ssrc])))))
        # A gap in the client's numbering: our receiver sends a NACK, within the first step (the packet
        # has no payload, so nothing is forwarded).
        gap = RtpPacket(payload_type=negotiated_codecs(video)[0].payloadType, ssrc=source,
                        sequence_number=(pubs["video"]._highest + 3) & 0xFFFF, timestamp=0)
        before = sent()
        first_step_ends(dtls._handle_rtp_data(gap.serialize(), arrival_time_ms=clock.current_ms()))
        assert sent() == before + 1
        first_step_ends(dtls._handle_rtcp_data(bytes(RtcpByePacket(sources=[source]))))  # the client leaves
        assert video.receiver._RTCRtpReceiver__decoder_thread is None
        assert not [e for e in errors if isinstance(e.get("exception"), HandlerSuspended)], errors
    finally:
        loop.set_exception_handler(previous_handler)
        await client.close()
        await server.close()


def test_bandwidth_feedback_internals():
    """watch_receiver_feedback and cap_receiver_estimate (services/media/bandwidth.py): the DTLS transport hands
    RTCP to each sender its router names, a REMB by the SSRCs in its FCI, through the instance's
    ``_handle_rtcp_packet``; the sender keeps its payload octets in ``__octet_count``; the receiver sends its
    estimator's REMB through the instance's ``_send_rtcp``, from its ``__rtcp_ssrc``."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter

    assert "await recipient._handle_rtcp_packet(packet)" in inspect.getsource(RTCDtlsTransport._handle_rtcp_data)
    route = inspect.getsource(RtpRouter.route_rtcp)
    assert "rtp.unpack_remb_fci(packet.fci)[1]" in route and "for report in packet.reports" in route
    assert "self.__octet_count += len(payload)" in inspect.getsource(RTCRtpSender._run_rtp)
    handle = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    remb = ["remb = self.__remote_bitrate_estimator.add(", "if self.__rtcp_ssrc is not None and remb is not None:",
            "fci=pack_remb_fci(*remb)", "await self._send_rtcp(rtcp_packet)"]
    assert [handle.index(step) for step in remb] == sorted(handle.index(step) for step in remb)
    assert "self.__rtcp_ssrc = ssrc" in inspect.getsource(RTCRtpReceiver._set_rtcp_ssrc)
    for name in ("RTCP_PSFB_APP", "RtcpPsfbPacket", "RtcpRrPacket", "RtcpSrPacket", "pack_remb_fci", "unpack_remb_fci"):
        assert hasattr(rtc_internals, name), name
    assert rtc_internals.unpack_remb_fci(rtc_internals.pack_remb_fci(rtc_internals.REMB_MAX_BPS, [1]))[0] == (
        rtc_internals.REMB_MAX_BPS)


def test_sender_report_internals():
    """SenderReports (per connection) and sender_report mirror aiortc's per-sender RTCP loop: ``send`` starts
    ``self._run_rtcp()`` (looked up on the instance), ``stop`` cancels it and waits for its two events, the loop
    sends an SR from the sender's counters and an SDES CNAME through ``self._send_rtcp``, notes ``__lsr`` and
    ``__lsr_time`` for the round trip, and a BYE when cancelled; ``_send_rtcp`` ends in the transport's
    ``_send_rtp``, the call SenderReports collects for one tick."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    assert "self.__rtcp_task = asyncio.ensure_future(self._run_rtcp())" in inspect.getsource(RTCRtpSender.send)
    stop = inspect.getsource(RTCRtpSender.stop)
    assert "self.__rtcp_started.wait()" in stop and "self.__rtcp_exited.wait()" in stop
    loop = inspect.getsource(RTCRtpSender._run_rtcp)
    steps = ["self.__rtcp_started.set()", "await asyncio.sleep(0.5 + random.random())", "ssrc=self._ssrc",
             "ntp_timestamp=self.__ntp_timestamp", "rtp_timestamp=self.__rtp_timestamp",
             "packet_count=self.__packet_count & 0xFFFFFFFF", "octet_count=self.__octet_count & 0xFFFFFFFF",
             "self.__lsr = ((self.__ntp_timestamp) >> 16) & 0xFFFFFFFF", "self.__lsr_time = time.time()",
             "if self.__cname is not None:", "items=[(1, self.__cname.encode(\"utf8\"))]",
             "await self._send_rtcp(packets)", "except asyncio.CancelledError:",
             "packet = RtcpByePacket(sources=[self._ssrc])", "await self._send_rtcp([packet])",
             "self.__rtcp_exited.set()"]
    assert [loop.index(step) for step in steps] == sorted(loop.index(step) for step in steps)
    assert "await self.transport._send_rtp(payload)" in inspect.getsource(RTCRtpSender._send_rtcp)
    assert "data = self._tx_srtp.protect_rtcp(data)" in inspect.getsource(RTCDtlsTransport._send_rtp)


def test_srtp_per_source_internals():
    """rtc_internals.srtp_per_source: aiortc makes its SRTP sessions once, in ``_setup_srtp`` (called by
    ``start`` after the handshake, through the instance), through its module's name ``Session``, the outgoing
    one from the one ``SSRC_ANY_OUTBOUND`` policy, the incoming from the ``SSRC_ANY_INBOUND`` one, and
    protects only through ``_tx_srtp``'s ``protect``/``protect_rtcp``, unprotects only through ``_rx_srtp``'s."""
    from aiortc import rtcdtlstransport
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    setup = inspect.getsource(RTCDtlsTransport._setup_srtp)
    assert "ssrc_type=Policy.SSRC_ANY_OUTBOUND," in setup and "self._tx_srtp = Session(tx_policy)" in setup
    assert "ssrc_type=Policy.SSRC_ANY_INBOUND," in setup and "self._rx_srtp = Session(rx_policy)" in setup
    assert setup.count("Session(") == 2
    assert rtcdtlstransport.Session is pylibsrtp.Session
    assert "self._setup_srtp()" in inspect.getsource(RTCDtlsTransport.start)
    source = inspect.getsource(rtcdtlstransport)
    assert source.count("self._tx_srtp") == 4  # set to None, made, and the two protects in _send_rtp
    # set to None, made, and in _recv_next: checked, and the two unprotects (the direct receive uses the same two)
    assert source.count("self._rx_srtp") == 5
    assert "data = self._rx_srtp.unprotect_rtcp(data)" in source and "data = self._rx_srtp.unprotect(data)" in source
