"""Quality snapshots from getStats (ms, byte-count bitrates, Swedish warnings), the echo test room,
and connection reports to roster (retried while roster is away; allowed=false drops the participant)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import REGISTRY
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from devstack.harness import as_token
from devstack.peers import Peer
from services.media import quality as quality_module
from services.media import rtc_internals
from services.media.quality import HIGH_DELAY, POOR_CONNECTION, UNEVEN, Quality, QualitySampler, Thresholds, assess
from services.media.rooms import PeerCounter
from services.media.rtc_internals import watch_round_trips
from tests.media.conftest import INSTANCE, SEND_PATHS, MediaWorld
from tests.polling import poll


async def two_talking(world) -> tuple[str, Peer, Peer]:
    """A room with pa and pb exchanging media long enough for RTCP reports (every 0.5-1.5 s)."""
    meeting = await world.open_room()
    a, b = Peer(slots=1), Peer(slots=1)
    await world.join(a, meeting, "pa")
    await world.join(b, meeting, "pb")
    await poll(lambda: a.video_received() and b.video_received(), 10, what="media")
    await asyncio.sleep(2.5)
    return meeting, a, b


@pytest.mark.parametrize("world", SEND_PATHS, indirect=True)  # Sender/Receiver Reports on both send paths
async def test_quality_snapshot_reports_ms_and_bitrates(world):
    meeting, a, b = await two_talking(world)
    try:
        snap = await world.media.GetQualitySnapshot(media_pb2.GetQualitySnapshotRequest(meeting_id=meeting),
                                                    metadata=world.roster_md)
        stats = {s.participant_id: s for s in snap.stats}
        assert set(stats) == {"pa", "pb"}
        settings = world.system.settings("media")
        limits = Thresholds(settings.poor_round_trip_ms, settings.poor_packet_loss, settings.poor_jitter_ms)
        for s in stats.values():
            # Measured, in the fields' units. How large delay and jitter get on loopback depends on the
            # machine's load (a few ms idle, hundreds when the CPU is shared), so these bounds are generous:
            # they tell a unit error (RTP ticks, microseconds) apart, not a busy machine.
            assert 0 < s.round_trip_ms < 5000
            assert 0 <= s.jitter_ms < 5000
            assert 0 <= s.packet_loss <= 1  # a fraction
            assert s.inbound_bitrate_kbps > 5 and s.outbound_bitrate_kbps > 5
            # The verdict is media's thresholds applied to these very numbers (whether this machine's load
            # makes the link "poor" is not the point: test_a_poor_connection_gets_the_swedish_warning forces it).
            verdict = assess(Quality(round_trip_ms=s.round_trip_ms, packet_loss=s.packet_loss, jitter_ms=s.jitter_ms),
                             limits)
            assert (s.poor, list(s.warnings)) == (verdict.poor, verdict.warnings)
        one = await world.media.GetQualitySnapshot(
            media_pb2.GetQualitySnapshotRequest(meeting_id=meeting, participant_id="pa"), metadata=world.gateway_md)
        assert [s.participant_id for s in one.stats] == ["pa"]
        # Asked again at once (the portal, then support's evidence): still a bitrate over the last second,
        # not the few milliseconds since the previous snapshot.
        assert one.stats[0].inbound_bitrate_kbps > 5 and one.stats[0].outbound_bitrate_kbps > 5
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.media.GetQualitySnapshot(
                media_pb2.GetQualitySnapshotRequest(meeting_id=meeting, participant_id="nobody"), metadata=world.roster_md)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await a.close()
        await b.close()


async def test_a_poor_connection_gets_the_swedish_warning(system_factory, keyring, service_token):
    # Thresholds below what even loopback shows: the live connection counts as poor.
    system = await system_factory(["identity", "media"], overrides={"media": {
        "instance_id": INSTANCE, "poor_round_trip_ms": 0.001, "poor_jitter_ms": 1000}})
    world = MediaWorld(system, keyring, service_token)
    meeting, a, b = await two_talking(world)
    warnings_before = REGISTRY.get_sample_value("svpl_media_quality_warnings_total") or 0
    try:
        snap = await world.media.GetQualitySnapshot(
            media_pb2.GetQualitySnapshotRequest(meeting_id=meeting, participant_id="pa"), metadata=world.gateway_md)
        (s,) = snap.stats
        assert s.poor and s.warnings[0] == "Din anslutning är svag: använd nätverkskabel om du kan"
        assert "Lång fördröjning i anslutningen" in s.warnings
        # Counted once when the connection turns poor, not again while it stays poor.
        await world.media.GetQualitySnapshot(
            media_pb2.GetQualitySnapshotRequest(meeting_id=meeting, participant_id="pa"), metadata=world.gateway_md)
        assert REGISTRY.get_sample_value("svpl_media_quality_warnings_total") == warnings_before + 1
    finally:
        await a.close()
        await b.close()


def test_thresholds():
    limits = Thresholds(round_trip_ms=300, packet_loss=0.05, jitter_ms=50)
    assert assess(Quality(round_trip_ms=40, packet_loss=0.01, jitter_ms=5), limits).warnings == []
    assert assess(Quality(packet_loss=0.2), limits).warnings[0] == POOR_CONNECTION
    assert assess(Quality(jitter_ms=80), limits).poor


class _Stats:
    """One transceiver side's getStats, as aiortc gives it."""

    def __init__(self, *reports: SimpleNamespace) -> None:
        self.reports = reports

    async def getStats(self) -> dict:
        return {r.id: r for r in self.reports}


def _transceiver(kind: str, jitter_in: float, jitter_reported: float, round_trip: float = 0.03) -> SimpleNamespace:
    """A transceiver whose stream from the participant, and whose stream to them as they report it,
    has this jitter (in ms), at 2 % loss each way and 30 ms round trip."""
    clock = 48000 if kind == "audio" else 90000
    inbound = SimpleNamespace(type="inbound-rtp", id=f"in-{kind}", packetsReceived=98, packetsLost=2,
                              jitter=jitter_in * clock / 1000)
    remote = SimpleNamespace(type="remote-inbound-rtp", id=f"remote-{kind}", roundTripTime=round_trip, fractionLost=5,
                             jitter=jitter_reported * clock / 1000)
    return SimpleNamespace(kind=kind, _codecs=[SimpleNamespace(clockRate=clock)], receiver=_Stats(inbound),
                           sender=_Stats(remote))


async def test_jitter_is_that_of_audio_not_of_video_frames_spread_over_a_slow_link():
    """On an even 500 kbit/s link a video frame's packets (one timestamp) arrive over the frame's
    transmission time, which RFC 3550 jitter counts: 120-180 ms for video while audio's is 10 ms. The
    connection is not uneven, and is not warned of as such; audio's jitter above the limit is."""
    limits = Thresholds(round_trip_ms=300, packet_loss=0.05, jitter_ms=50)
    even = SimpleNamespace(getTransceivers=lambda: [_transceiver("audio", 10, 8), _transceiver("video", 180, 120)])
    quality = await QualitySampler(limits).sample(even)
    assert quality.jitter_ms == pytest.approx(10)
    assert not quality.poor and quality.packet_loss == pytest.approx(0.02)
    uneven = SimpleNamespace(getTransceivers=lambda: [_transceiver("audio", 10, 70), _transceiver("video", 5, 5)])
    quality = await QualitySampler(limits).sample(uneven)
    assert quality.jitter_ms == pytest.approx(70) and quality.warnings == [POOR_CONNECTION, UNEVEN]


async def test_the_round_trip_follows_the_link_as_it_is_now_not_a_half_minute_average(monkeypatch):
    """A nurse's 4G link cleared: the reports of the last seconds measure 40 ms, and the warning goes,
    although aiortc's smoothed figure still says 900 ms. While the reports measure 900 ms it stays."""
    limits = Thresholds(round_trip_ms=300, packet_loss=0.05, jitter_ms=50)
    now = [1000.0]
    monkeypatch.setattr(quality_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    lagging = SimpleNamespace(getTransceivers=lambda: [_transceiver("audio", 5, 5, round_trip=0.9)])
    sampler = QualitySampler(limits)
    assert (await sampler.sample(lagging)).round_trip_ms == pytest.approx(900)  # nothing measured yet: aiortc's
    sampler.round_trip(0.9)
    now[0] += 1
    sampler.round_trip(0.85)
    weak = await sampler.sample(lagging)
    assert weak.round_trip_ms == pytest.approx(900) and weak.warnings == [POOR_CONNECTION, HIGH_DELAY]
    now[0] += 3.5
    sampler.round_trip(0.04)  # the link cleared
    assert (await sampler.sample(lagging)).round_trip_ms == pytest.approx(850)  # 0.85 s, measured 3.5 s ago, still counts
    now[0] += 1.5
    sampler.round_trip(0.041)
    cleared = await sampler.sample(lagging)
    assert cleared.round_trip_ms == pytest.approx(41) and cleared.warnings == []


async def test_a_report_answering_an_earlier_sender_report_measures_the_round_trip(monkeypatch):
    """On a slow link the next Sender Report leaves before the answer to the last is back: a report block
    naming any of the last Sender Reports measures (arrival - sent - DLSR). Blocks about another stream, naming
    a Sender Report never sent, or with a DLSR longer than the time since are no measurement; aiortc's own
    handlers still get every packet."""
    from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtcpSenderInfo, RtcpSrPacket

    # The wrapper's own clock, set by the test: a real one made the measurement depend on how fast this
    # machine ran the lines between the Sender Report and the answer (a CI run took less than the DLSR).
    clock = {"now": 1_000_000.0}
    monkeypatch.setattr(rtc_internals, "time", SimpleNamespace(time=lambda: clock["now"]))
    passed: list = []

    async def send(packets):
        passed.extend(packets)

    async def handle(packet):
        passed.append(packet)

    sender = SimpleNamespace(_ssrc=1234, _send_rtcp=send, _handle_rtcp_packet=handle)
    measured: list[float] = []
    watch_round_trips(sender, measured.append)
    ntp = [(1_000_000 + 2208988800 + i) << 32 | 0x80000000 for i in range(2)]
    for value in ntp:  # one a second
        await sender._send_rtcp([RtcpSrPacket(ssrc=1234, sender_info=RtcpSenderInfo(
            ntp_timestamp=value, rtp_timestamp=0, packet_count=0, octet_count=0))])
        clock["now"] += 1.0

    def block(ssrc, lsr, dlsr):
        return RtcpReceiverInfo(ssrc=ssrc, fraction_lost=0, packets_lost=0, highest_sequence=0, jitter=0,
                                lsr=lsr, dlsr=dlsr)
    first = (ntp[0] >> 16) & 0xFFFFFFFF
    clock["now"] += 0.5  # the answer to the first arrives 2.5 s after it left, held 2.25 s by the receiver
    await sender._handle_rtcp_packet(RtcpRrPacket(ssrc=9, reports=[
        block(1234, first, 65536 * 9 // 4), block(999, first, 1), block(1234, 12345, 1), block(1234, first, 65536 * 30)]))
    assert measured == [0.25]
    assert len(passed) == 3  # two Sender Reports sent on, one Receiver Report handled by aiortc


async def test_echo_test_room_returns_the_persons_own_tracks(world, person_token):
    peer = Peer(208, 128, slots=0)
    try:
        created = PeerCounter.created
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.media.NegotiateTestRoom(
                media_pb2.NegotiateTestRoomRequest(session_token="bogus", sdp_offer=await peer.offer()),
                metadata=world.gateway_md)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and PeerCounter.created == created
        join, _ = world.join_token("m1", "p1")  # a join token is not a session token
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.media.NegotiateTestRoom(
                media_pb2.NegotiateTestRoomRequest(session_token=join, sdp_offer=peer.pc.localDescription.sdp),
                metadata=world.gateway_md)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and PeerCounter.created == created
        response = await world.media.NegotiateTestRoom(
            media_pb2.NegotiateTestRoomRequest(session_token=person_token("patient"), sdp_offer=peer.pc.localDescription.sdp),
            metadata=world.gateway_md)
        await peer.answer(response.sdp_answer)
        await poll(lambda: peer.video_received() and peer.audio_received(), 10, what="own media echoed back")
        assert peer.video_received()[0].sizes == {(208, 128)}
        before = peer.video_received()[0].frames
        await asyncio.sleep(1.0)
        assert peer.video_received()[0].frames >= before + 10
        assert not world.rooms.rooms  # the echo room is no meeting room
    finally:
        await peer.close()


class RecordingRoster(roster_pb2_grpc.RosterServiceServicer):
    """Roster's ReportConnection contract, answered by the test: records reports, denies chosen participants."""

    def __init__(self) -> None:
        self.reports: list[tuple[roster_pb2.ReportConnectionRequest, str]] = []
        self.deny: set[str] = set()

    async def ReportConnection(self, request, context):
        token = dict(context.invocation_metadata()).get("authorization", "")
        self.reports.append((request, token))
        return roster_pb2.ReportConnectionResponse(allowed=request.participant_id not in self.deny)


async def test_connection_reports_survive_an_absent_roster_and_denial_drops(system_factory, keyring, service_token):
    system = await system_factory(["identity", "media"], overrides={"media": {
        "instance_id": INSTANCE, "report_retry_max_seconds": 0.3}})
    world = MediaWorld(system, keyring, service_token)
    reporter = system.running["media"].component.rooms._reporter
    meeting = await world.open_room()
    a, b, c = Peer(slots=2), Peer(slots=2), Peer(slots=2)
    server = None
    try:
        # Roster is not running: media works regardless and keeps retrying the reports.
        await world.join(a, meeting, "pa")
        await world.join(b, meeting, "pb")
        await poll(lambda: a.video_received() and b.video_received(), 10, what="media without roster")
        await poll(lambda: reporter.failures >= 2, 5, what="failed report attempts")
        # Roster comes up on its address: the queued reports arrive, in order, with media's own token.
        roster = RecordingRoster()
        roster.deny.add("pc")
        server = grpc.aio.server()
        roster_pb2_grpc.add_RosterServiceServicer_to_server(roster, server)
        server.add_insecure_port(system.address("roster"))
        await server.start()
        await poll(lambda: len(roster.reports) >= 2, 10, what="reports delivered")
        first = roster.reports[:2]
        assert {r.participant_id for r, _ in first} == {"pa", "pb"}
        assert all(r.connected and r.media_instance == INSTANCE and r.meeting_id == meeting
                   and r.kind == roster_pb2.CONNECTION_KIND_WEBRTC for r, _ in first)
        assert all(tok == f"Bearer {system.tokens['media']}" for _, tok in first)
        # Roster answers allowed=false for a removed participant: media drops them.
        await world.join(c, meeting, "pc")
        await poll(lambda: "pc" not in world.rooms.rooms[meeting].participants, 10, what="denied participant dropped")
        await poll(lambda: c.pc.connectionState in ("closed", "failed"), 3, what="client sees the drop")
        await poll(lambda: any(r.participant_id == "pc" and not r.connected for r, _ in roster.reports), 5,
                   what="disconnect reported")
        # Leaving is reported too.
        await world.media.Disconnect(media_pb2.DisconnectRequest(meeting_id=meeting, participant_id="pa"),
                                     metadata=as_token(service_token("roster")))
        await poll(lambda: any(r.participant_id == "pa" and not r.connected for r, _ in roster.reports), 5,
                   what="leave reported")
    finally:
        for p in (a, b, c):
            await p.close()
        if server is not None:
            await server.stop(0)
