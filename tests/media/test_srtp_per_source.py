"""One libsrtp session per outgoing SSRC and one each for incoming RTP and SRTCP (services/media/rtc_internals.py,
SrtpPerSource, SrtpInbound): the same bytes on the wire and the same packets taken and refused as aiortc's one
session each way, every packet of a source in its own session, a ceiling on sessions, and real peers through
media with them."""

from __future__ import annotations

import os
import random
import struct

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from services.media import rtc_internals
from services.media.rtc_internals import SrtpInbound, SrtpPerSource, outgoing_session
from tests.media.conftest import SEND_PATHS
from tests.polling import poll

PROFILES = {Policy.SRTP_PROFILE_AES128_CM_SHA1_80: 30, Policy.SRTP_PROFILE_AEAD_AES_128_GCM: 28}


def rtp(ssrc: int, sequence: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, sequence & 0xFFFF, sequence * 3000 & 0xFFFFFFFF, ssrc) + payload


def sender_report(ssrc: int, count: int) -> bytes:
    return struct.pack("!BBHIQIII", 0x80, 200, 6, ssrc, count << 32, count * 3000, count, count * 1000)


def traffic(seed: int) -> list[bytes]:
    """RTP of five sources in a shuffled interleaving, one of them through a sequence-number wrap (its
    rollover counter goes to 1), with a Sender Report of a random source now and then."""
    rng = random.Random(seed)
    ssrcs = [rng.getrandbits(32) for _ in range(5)]
    next_sequence = {ssrc: rng.randrange(0x10000) for ssrc in ssrcs}
    next_sequence[ssrcs[0]] = 0xFFF0
    out = []
    for count in range(600):
        ssrc = rng.choice(ssrcs)
        out.append(rtp(ssrc, next_sequence[ssrc], os.urandom(rng.randint(1, 1100))))
        next_sequence[ssrc] += 1
        if count % 20 == 0:
            out.append(sender_report(rng.choice(ssrcs), count))
    return out


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("seed", range(3))
def test_a_session_per_source_sends_the_bytes_one_session_sends(profile, seed):
    """The same packets protected by aiortc's one outgoing session and by a session per source from the same
    policy: byte for byte the same datagrams (RTP across a rollover, and SRTCP), and the peer's one inbound
    session takes every one."""
    key = os.urandom(PROFILES[profile])
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    one, split = Session(policy), SrtpPerSource(policy)
    peer = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
    for packet in traffic(seed):
        if packet[1] == 200:
            wire = split.protect_rtcp(packet)
            assert wire == one.protect_rtcp(packet)
            assert peer.unprotect_rtcp(wire) == packet
        else:
            wire = split.protect(packet)
            assert wire == one.protect(packet)
            assert peer.unprotect(wire) == packet
    assert len(split._sessions) == 5


@pytest.mark.parametrize("profile", PROFILES)
def test_incoming_rtp_and_srtcp_in_two_sessions_take_and_refuse_what_one_session_does(profile):
    """What a peer sends, with replays, forgeries and packets under a wrong key mixed in: aiortc's one inbound
    session and the two of SrtpInbound give the same plaintext for each packet or both refuse it."""
    key = os.urandom(PROFILES[profile])
    peer = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    stranger = Session(Policy(key=os.urandom(PROFILES[profile]), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=profile))
    inbound = Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    inbound.allow_repeat_tx, inbound.window_size = True, 1024  # as aiortc's _setup_srtp sets them
    one, two = Session(inbound), SrtpInbound(inbound)
    rng = random.Random(7)
    sent: list[tuple[bool, bytes]] = []
    for packet in traffic(3):
        rtcp = packet[1] == 200
        wire = (peer.protect_rtcp if rtcp else peer.protect)(packet)
        sent.append((rtcp, wire))
        roll = rng.random()
        if roll < 0.1:
            sent.append(rng.choice(sent))  # a replay
        elif roll < 0.15:
            sent.append((rtcp, wire[:-1] + bytes([wire[-1] ^ 1])))  # a forged tag
        elif roll < 0.2:
            sent.append((rtcp, (stranger.protect_rtcp if rtcp else stranger.protect)(packet)))
    outcomes = []
    for rtcp, wire in sent:
        results = []
        for unprotect in ((one.unprotect_rtcp, two.unprotect_rtcp) if rtcp else (one.unprotect, two.unprotect)):
            try:
                results.append(unprotect(wire))
            except pylibsrtp.Error as error:
                results.append(type(error))
        assert results[0] == results[1]
        outcomes.append(isinstance(results[0], bytes))
    assert 0 < outcomes.count(False) < len(outcomes) // 3


def test_sources_beyond_the_ceiling_share_one_session_for_good(monkeypatch):
    """Past MAX_SRTP_SESSIONS sources the rest share one more session, and a source never changes session
    (an index used again under the key would be a nonce used twice)."""
    monkeypatch.setattr(rtc_internals, "MAX_SRTP_SESSIONS", 3)
    split = SrtpPerSource(Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    sessions = [split.session(ssrc) for ssrc in range(1, 7)]
    assert len({id(s) for s in sessions}) == 4 and len(split._sessions) == 3
    assert sessions[3] is sessions[4] is sessions[5]
    assert [split.session(ssrc) for ssrc in range(1, 7)] == sessions


@pytest.mark.parametrize("world", SEND_PATHS, indirect=True)
async def test_media_protects_each_sender_in_its_own_session(world):
    """Two people in a room: media's connection to each protects what it sends with a session per outgoing
    source, each slot's sender in its own (the send path's too), and checks what it receives in two; each
    plays the other's video and audio and keeps getting Sender Reports it can read."""
    meeting, nurse, patient = await world.two_in_a_room("nurse", "patient")
    try:
        for who, peer in (("nurse", nurse), ("patient", patient)):
            pc = world.rooms.rooms[meeting].participants[who].pc
            senders = [t.sender for t in pc.getTransceivers() if t.currentDirection in ("sendonly", "sendrecv")]
            dtls = senders[0].transport
            assert isinstance(dtls._tx_srtp, SrtpPerSource) and isinstance(dtls._rx_srtp, SrtpInbound)
            sessions = {id(outgoing_session(dtls, s._ssrc)) for s in senders}
            assert len(sessions) == len(senders) == 2
            for kind, received in (("video", peer.video_received), ("audio", peer.audio_received)):
                got = received()[0].frames
                await poll(lambda r=received: r()[0].frames, 10, what=f"{who} getting {kind}",
                           until=lambda frames, g=got: frames > g + 10)
            receiver = next(t.receiver for t in peer.pc.getTransceivers() if t.kind == "video" and t.receiver.track)
            await poll(lambda r=receiver: r._RTCRtpReceiver__lsr, 10, what=f"{who} reading a Sender Report")
    finally:
        await nurse.close()
        await patient.close()
