"""The aiortc 1.16 internals the forwarder relies on (services/media/forwarding.py).

These fail on an aiortc upgrade that changes any of them; then re-check forwarding.py."""

from __future__ import annotations

import asyncio
import inspect
import queue
import socket
from fractions import Fraction
from importlib.metadata import version

import aiortc.rtcrtpreceiver
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver, clock
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from asyncio.selector_events import _SelectorDatagramTransport

from services.media.forwarding import (DatagramBatch, PacketSink, Publication, RawHistory, is_vp8_keyframe,
                                      starts_vp8_keyframe)


def test_pinned_versions():
    assert version("aiortc") == "1.16.0"
    assert version("aioice") == "0.13.0"
    assert version("pylibsrtp") == "1.0.0"


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

        key = b"\x10\x02\x9d\x01\x2a" + bytes(3000)  # a key frame tag, larger than one packet
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


def test_vp8_keyframe_bit():
    assert is_vp8_keyframe(b"\x10\x02") and not is_vp8_keyframe(b"\x11\x02") and not is_vp8_keyframe(b"")
    first, second = Vp8Encoder._packetize(b"\x10\x02" + bytes(2000), 5)
    assert starts_vp8_keyframe(first) and not starts_vp8_keyframe(second)  # the frame tag is in the first packet
    assert not starts_vp8_keyframe(Vp8Encoder._packetize(b"\x11\x02", 6)[0])
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
    """RtpOut (forwarding.py) sends as `RTCRtpSender._run_rtp` does and keeps the state it keeps."""
    import aiortc.rtcrtpsender as sender_module
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtcicetransport import RTCIceTransport
    from aioice.ice import Connection, StunProtocol

    from services.media.forwarding import RTP_HISTORY_SIZE

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


async def test_rtp_out_delivers_frames_stats_and_retransmissions(monkeypatch):
    """A ForwardTrack on a real loopback connection: frames arrive whole with their timestamps, the
    sender's stats count them, and a NACKed packet is retransmitted from the history RtpOut keeps."""
    import aioice.ice

    from services.media.forwarding import ForwardTrack

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    sfu, client = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))

    async def wait_for_frames(done) -> None:
        deadline = asyncio.get_running_loop().time() + 10
        while not done():
            assert asyncio.get_running_loop().time() < deadline, f"frames received: {len(received)}"
            await asyncio.sleep(0.02)

    try:
        received = []
        t = client.addTransceiver("video", direction="recvonly")
        t.receiver._RTCRtpReceiver__decoder_queue = FrameCapture(received.append)
        await client.setLocalDescription(await client.createOffer())
        await sfu.setRemoteDescription(client.localDescription)
        track = ForwardTrack("video")
        st = sfu.getTransceivers()[0]
        st.sender.replaceTrack(track)
        track.attach_sender(st.sender)
        st.direction = "sendonly"
        await sfu.setLocalDescription(await sfu.createAnswer())
        await client.setRemoteDescription(sfu.localDescription)
        pub = type("P", (), {"request_keyframe": lambda self: None, "subscribers": set()})()
        track.source = pub
        key = b"\x10\x02\x9d\x01\x2a" + bytes(range(256)) * 12  # a key frame tag, four packets' worth
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
        assert out._batch.gso
        # A NACK for the last packet sent: aiortc's sender retransmits it from RtpOut's history, the
        # same packet (or its RTX wrapping, RFC 4588) as first sent.
        history = st.sender._RTCRtpSender__rtp_history
        assert isinstance(history, RawHistory)
        dtls = st.sender.transport
        before = dtls._RTCDtlsTransport__tx_packets
        seq = (track._out._sequence - 1) & 0xFFFF
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
        track.bind(type("P", (), {"request_keyframe": lambda self: None, "subscribers": set()})())
        next_seq = out._sequence
        track.push(_vp8_packets(b"\x11" + bytes(100), 7, 5000), False, clock.current_ntp_time(), 0)
        assert out._sequence == next_seq  # a delta frame cannot start the new source
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

    from services.media.forwarding import RtpOut

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender = pc.addTransceiver("audio").sender
        extensions_map = sender._RTCRtpSender__rtp_header_extensions_map
        extensions_map.configure(RTCRtpParameters(headerExtensions=HEADER_EXTENSIONS["audio"]))
        sender._RTCRtpSender__mid = "1"
        out = RtpOut(sender)
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
    """services/media/ports.py ranges ICE host ports by wrapping the running loop's create_datagram_endpoint:
    if aioice binds some other way (or gains a port-range option), re-check ports.py."""
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
    """SrtpProtect (forwarding.py) calls libsrtp on pylibsrtp's session buffer: the same bytes as
    ``Session.protect``, which the receiving side's ``unprotect`` accepts, and a clear error for a
    packet that does not fit."""
    import pytest
    from pylibsrtp import Policy, Session

    from services.media.forwarding import SrtpProtect

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


def test_receive_path_that_receive_directly_reproduces():
    """services/media/receive.py handles RTP/RTCP in the socket callback as aiortc's DTLS task would."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aioice.ice import Connection, StunProtocol

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
