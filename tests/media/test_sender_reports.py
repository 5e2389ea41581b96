"""Sender Reports per connection (services/media/rtc_internals.py, SenderReports): one timer per meeting
connection sends every slot's Sender Report and CNAME, aggregated into few SRTCP datagrams, instead of one
RTCP task and one datagram per sender. Real aiortc peers through media."""

from __future__ import annotations

import collections

from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtcpPacket, RtcpSdesPacket, RtcpSrPacket

from devstack.peers import Peer
from services.media.rtc_internals import RTCP_DATAGRAM_BYTES, SenderReports
from tests.polling import poll

SLOTS = 12  # the coordinator's connection: 24 senders, more reports than one datagram holds


def record_rtcp(peer: Peer) -> list[bytes]:
    """Every RTCP datagram the peer's DTLS transport receives from media, unprotected."""
    dtls = peer.pc.getTransceivers()[0].receiver.transport
    got: list[bytes] = []
    handle = dtls._handle_rtcp_data

    async def handle_rtcp_data(data: bytes) -> None:
        got.append(data)
        await handle(data)

    dtls._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]  # observed, then aiortc's own
    return got


def server_senders(world, meeting: str, participant: str) -> list[RTCRtpSender]:
    pc = world.rooms.rooms[meeting].participants[participant].pc
    return [t.sender for t in pc.getTransceivers() if t.sender is not None and t.currentDirection in ("sendonly",
                                                                                                    "sendrecv")]


async def test_a_participant_gets_every_slots_sender_report_each_second_in_a_few_datagrams(world):
    """The coordinator shows the two others in 2 of her 12 slots: each of media's 24 senders to her reports
    (Sender Report + CNAME) every 0.5-1.5 s, as aiortc's own loop did; the reports come several to a datagram,
    none larger than RTCP_DATAGRAM_BYTES, each starting with a Sender Report; the counts of the slots
    showing someone grow; and media measures the round trip from her answers (aiortc's __lsr kept)."""
    meeting = await world.open_room()
    coordinator, others = Peer(slots=SLOTS), [Peer(slots=2), Peer(slots=2)]
    try:
        await world.join(coordinator, meeting, "coordinator")
        for i, peer in enumerate(others):
            await world.join(peer, meeting, f"p{i}")
        await poll(lambda: len(coordinator.video_received()) == 2, 10, what="the coordinator receiving two videos")
        senders = server_senders(world, meeting, "coordinator")
        assert len(senders) == 2 * SLOTS
        received = record_rtcp(coordinator)
        ssrcs = {s._ssrc for s in senders}

        def reports_in(datagrams: list[bytes]) -> dict[int, list[RtcpSrPacket]]:
            reports: dict[int, list[RtcpSrPacket]] = collections.defaultdict(list)
            for data in datagrams:
                for p in RtcpPacket.parse(data):
                    if isinstance(p, RtcpSrPacket):
                        reports[p.ssrc].append(p)
            return reports

        # aiortc's interval is 0.5-1.5 s: every sender has reported twice within 3 s on an idle machine
        await poll(lambda: reports_in(list(received)), 10, what="two Sender Reports from each of media's senders",
                   until=lambda got: set(got) == ssrcs and all(len(r) >= 2 for r in got.values()))
        seen = list(received)
        reports = reports_in(seen)
        datagrams = 0
        for data in seen:
            packets = RtcpPacket.parse(data)
            if not any(isinstance(p, RtcpSrPacket) for p in packets):
                continue
            datagrams += 1
            assert len(data) <= RTCP_DATAGRAM_BYTES and isinstance(packets[0], RtcpSrPacket), packets
            cnames = {chunk.ssrc for p in packets if isinstance(p, RtcpSdesPacket) for chunk in p.chunks}
            assert all(p.ssrc in cnames for p in packets if isinstance(p, RtcpSrPacket)), "an SR without its CNAME"
        total = sum(len(r) for r in reports.values())
        assert datagrams * 5 <= total, (datagrams, total)  # aiortc sent one datagram per report
        showing = [s._ssrc for s in senders if s.kind == "video" and s.track is not None
                   and s.track.source is not None]
        assert len(showing) == 2
        for ssrc in showing:
            counts = [r.sender_info.packet_count for r in reports[ssrc]]
            assert counts == sorted(counts) and counts[-1] > counts[0], counts

        async def round_trips() -> list:
            stats = [await s.getStats() for s in senders if s._ssrc in showing]
            return [v.roundTripTime for st in stats for v in st.values() if v.type == "remote-inbound-rtp"]

        await poll(round_trips, 10, what="media's round trip to the coordinator from her receiver reports",
                   until=lambda rtts: len(rtts) == 2 and all(r is not None and 0 <= r < 1 for r in rtts))
    finally:
        for peer in [coordinator, *others]:
            await peer.close()


async def test_a_connection_that_ends_leaves_no_timer_and_the_others_keep_their_reports(world):
    """When a participant leaves, her connection's senders stop (each sends its BYE, as aiortc's did) and its
    Sender Report timer is gone; the one who stays still gets his reports."""
    meeting, nurse, kin = await world.two_in_a_room("nurse", "kin")
    try:
        nurse_senders = server_senders(world, meeting, "nurse")
        reports = SenderReports.of(nurse_senders[0].transport)
        assert len(reports.senders) == 2 and reports._timer is not None
        await nurse.close()
        await poll(lambda: (reports.senders, reports._timer), 10, what="the nurse's report timer gone",
                   until=lambda state: state == ([], None))
        received = record_rtcp(kin)
        await poll(lambda: [d for d in received if isinstance(RtcpPacket.parse(d)[0], RtcpSrPacket)], 5,
                   what="kin's Sender Reports after the nurse left")
    finally:
        await nurse.close()
        await kin.close()
