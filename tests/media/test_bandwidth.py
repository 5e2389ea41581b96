"""A publisher's video held to its weakest subscriber's link (services/media/bandwidth.py): the cap rule
directly, then real aiortc peers through media: a subscriber's REMB reaches the publisher clamped, and
what an absurd REMB can and cannot do."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci, unpack_remb_fci

from devstack.peers import Peer
from services.media import bandwidth
from services.media.bandwidth import (
    CEILING_BPS,
    FLOOR_BPS,
    HOLD_SECONDS,
    STALE_SECONDS,
    PublisherCap,
    SubscriberLink,
)
from services.media.metrics import CAPPED_PUBLICATIONS
from tests.polling import poll


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Track:
    """A subscriber's slot track as PublisherCap sees it: what it shows, and its slot estimate."""

    def __init__(self, link: SubscriberLink, source=None) -> None:
        self.source = source
        self.bandwidth_slot = link.slot(self)


class Publication:
    def __init__(self, clock=None) -> None:
        self.subscribers: set[Track] = set()
        self.sent: list[int] = []

        async def send_remb(bitrate: int, ssrcs: list[int]) -> None:
            self.sent.append(bitrate)

        self.bandwidth = PublisherCap(lambda: self.subscribers, lambda: [1234], send_remb, clock=clock or Clock())

    def show_to(self, link: SubscriberLink) -> Track:
        track = Track(link, self)
        self.subscribers.add(track)
        return track


async def settle() -> None:
    await asyncio.sleep(0)  # the REMB sends are tasks


async def test_the_cap_is_the_lowest_subscribers_estimate_and_goes_to_the_publisher_at_once():
    clock = Clock()
    pub = Publication(clock)
    nurse, coordinator = SubscriberLink(clock), SubscriberLink(clock)
    pub.show_to(nurse), pub.show_to(coordinator)
    coordinator.on_remb(1_200_000)
    assert pub.bandwidth.applied == 1_200_000
    clock.now += 0.25
    nurse.on_remb(300_000)
    await settle()
    assert pub.bandwidth.applied == 300_000 and pub.bandwidth.cap() == 300_000
    assert pub.sent == [1_200_000, 300_000]  # the drop went out at once
    for step in range(1, 40):  # a subscriber stepping down: within 0.2 s no more REMBs go to the publisher
        nurse.on_remb(300_000 - step * 5000)
    await settle()
    assert pub.sent == [1_200_000, 300_000], "the next one waits for the periodic REMB"
    clock.now += HOLD_SECONDS + 0.1
    pub.bandwidth._tick()  # the periodic REMB: the fall has lasted
    await settle()
    assert pub.sent[-1] == 105_000
    # aiortc's own estimate of the publisher's link: clamped to the cap when higher, kept when lower.
    pub.bandwidth.on_own_estimate(2_000_000)
    assert pub.bandwidth.cap() == 105_000
    pub.bandwidth.close()


async def test_a_subscriber_shares_its_estimate_among_the_videos_it_receives():
    clock = Clock()
    first, second = Publication(), Publication()
    nurse = SubscriberLink(clock)
    first.show_to(nurse), second.show_to(nurse)
    Track(nurse)  # a slot showing nobody takes no share
    nurse.on_remb(600_000)
    assert first.bandwidth.applied == second.bandwidth.applied == 300_000
    first.bandwidth.close(), second.bandwidth.close()


async def test_a_momentary_dip_does_not_throttle_but_a_lasting_fall_does():
    clock = Clock()
    pub = Publication()
    nurse = SubscriberLink(clock)
    pub.show_to(nurse)
    nurse.on_remb(800_000)
    clock.now += 0.3
    nurse.on_remb(150_000)  # one low report: the highest of the last second still holds
    assert pub.bandwidth.applied == 800_000
    clock.now += 0.5
    nurse.on_remb(790_000)
    clock.now += HOLD_SECONDS + 0.1
    pub.bandwidth.evaluate()
    assert pub.bandwidth.applied == 790_000, "the newest report, once nothing newer is within the hold"
    nurse.on_remb(200_000)
    clock.now += 0.4
    nurse.on_remb(210_000)
    clock.now += HOLD_SECONDS
    nurse.on_remb(205_000)  # the fall lasted: it counts
    assert pub.bandwidth.applied == 210_000
    clock.now += HOLD_SECONDS
    pub.bandwidth.evaluate()
    assert pub.bandwidth.applied == 205_000
    clock.now += STALE_SECONDS + 0.1
    pub.bandwidth.evaluate()
    assert pub.bandwidth.applied is None, "an estimate the subscriber no longer renews does not hold anyone"
    pub.bandwidth.close()


async def test_a_new_subscriber_without_an_estimate_throttles_nobody_and_a_departed_one_lifts_the_cap():
    clock = Clock()
    pub = Publication()
    coordinator, newcomer = SubscriberLink(clock), SubscriberLink(clock)
    pub.show_to(coordinator)
    coordinator.on_remb(900_000)
    capped = CAPPED_PUBLICATIONS._value.get()
    late = pub.show_to(newcomer)  # just joined: no REMB or report yet
    pub.bandwidth.evaluate()
    assert pub.bandwidth.applied == 900_000
    newcomer.on_remb(250_000)
    assert pub.bandwidth.applied == 250_000
    pub.subscribers.discard(late)  # the nurse leaves
    late.source = None
    pub.bandwidth._tick()  # the periodic evaluation (every RESEND_SECONDS)
    assert pub.bandwidth.applied == 900_000
    pub.subscribers.clear()
    pub.bandwidth._tick()
    assert pub.bandwidth.applied is None
    assert CAPPED_PUBLICATIONS._value.get() == capped - 1
    pub.bandwidth.close()


async def test_without_remb_receiver_reports_of_heavy_loss_cap_the_slot():
    clock = Clock()
    pub = Publication()
    nurse = SubscriberLink(clock)
    track = pub.show_to(nurse)
    slot = track.bandwidth_slot
    slot.on_report(0, 0)
    clock.now += 1.0
    slot.on_report(0, 50_000)  # 400 kbit/s sent, nothing lost: no estimate to grow yet
    assert pub.bandwidth.applied is None
    clock.now += 1.0
    slot.on_report(64, 100_000)  # 25 % lost of 400 kbit/s: 400 x (1 - 0.125)
    assert pub.bandwidth.applied == pytest.approx(350_000)
    clock.now += 1.0
    slot.on_report(13, 140_000)  # 5 %: between the thresholds, the estimate holds
    assert pub.bandwidth.applied == pytest.approx(350_000)
    clock.now += 1.0
    slot.on_report(2, 180_000)  # under 2 %: it grows 8 % a second
    assert pub.bandwidth.applied == pytest.approx(350_000 * 1.08)
    # A REMB, once there is one, is the subscriber's estimate.
    nurse.on_remb(600_000)
    assert pub.bandwidth.applied == 600_000
    pub.bandwidth.close()


async def test_absurd_estimates_hold_nobody_below_the_floor_nor_cap_above_the_ceiling():
    clock = Clock()
    pub = Publication()
    attacker, honest = SubscriberLink(clock), SubscriberLink(clock)
    pub.show_to(attacker), pub.show_to(honest)
    attacker.on_remb(0)
    assert pub.bandwidth.applied == FLOOR_BPS
    clock.now += HOLD_SECONDS + 0.1
    attacker.on_remb(1 << 60)
    honest.on_remb(CEILING_BPS + 1)
    clock.now += HOLD_SECONDS + 0.1
    pub.bandwidth.evaluate()
    assert pub.bandwidth.applied is None, "an estimate above anything the portal sends caps nothing"
    pub.bandwidth.close()


# ------------------------------------------------------------------------------------------- real peers


def video_sender(peer: Peer):
    return next(t.sender for t in peer.pc.getTransceivers() if t.kind == "video" and t.sender.track is not None)


def video_receiver(peer: Peer):
    return next(t.receiver for t in peer.pc.getTransceivers()
                if t.kind == "video" and t.receiver.track is not None and t.currentDirection == "recvonly")


def record_rembs(sender) -> list[int]:
    """The REMB bitrates that reach a publisher's video sender (from media's receiver)."""
    got: list[int] = []
    handle = sender._handle_rtcp_packet

    async def handle_rtcp_packet(packet) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            got.append(unpack_remb_fci(packet.fci)[0])
        await handle(packet)

    sender._handle_rtcp_packet = handle_rtcp_packet
    return got


async def send_remb(receiver, bitrate: int, ssrcs: list[int]) -> None:
    """A subscriber's browser's REMB for what it receives (its own estimator is off, so only this one counts)."""
    await receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=receiver._RTCRtpReceiver__rtcp_ssrc,
                                             media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs)))


async def two_peers(world):
    meeting = await world.open_room()
    coordinator, nurse = Peer(320, 240, slots=1), Peer(176, 144, slots=1)
    await world.join(coordinator, meeting, "coordinator")
    await world.join(nurse, meeting, "nurse")
    await poll(lambda: coordinator.video_received() and nurse.video_received(), 10, what="video both ways")
    receiver = video_receiver(nurse)
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # the nurse's REMBs are the test's own
    (ssrc,) = [s.source for s in receiver.getSynchronizationSources()]
    publication = next(p for p in world.rooms.rooms[meeting].participants["coordinator"].publications
                       if p.kind == "video")
    return coordinator, nurse, receiver, ssrc, publication


async def test_a_publisher_gets_a_remb_no_higher_than_its_subscribers(world):
    """The nurse's browser says the floor, 100 kbit/s, for the coordinator's video: the coordinator's sender
    gets REMBs of at most that from media while media's own estimate of the coordinator's loopback link is
    higher, every second while it holds; when the nurse leaves the cap goes."""
    coordinator, nurse, receiver, ssrc, publication = await two_peers(world)
    try:
        rembs = record_rembs(video_sender(coordinator))
        await poll(lambda: publication.bandwidth.own, 20, what="media's own estimate above the nurse's",
                   until=lambda own: own is not None and own > 1.2 * FLOOR_BPS)
        own = publication.bandwidth.own

        async def nurse_says(bitrate: int) -> list[int]:
            await send_remb(receiver, bitrate, [ssrc])
            return rembs

        await poll(lambda: nurse_says(FLOOR_BPS), 10, what="a REMB of the nurse's estimate at the coordinator",
                   interval=0.3, until=lambda got: got and got[-1] <= FLOOR_BPS)
        assert publication.bandwidth.applied == FLOOR_BPS
        seen = len(rembs)
        await poll(lambda: nurse_says(FLOOR_BPS), 10, what="REMBs while the cap holds", interval=0.3,
                   until=lambda got: len(got) >= seen + 3)
        assert max(rembs[seen:]) <= FLOOR_BPS, f"media's own estimate {own}, at the coordinator {rembs[seen:]}"
    finally:
        await nurse.close()
    try:
        await poll(lambda: publication.bandwidth.applied, 10, what="the cap lifted when the nurse left",
                   until=lambda applied: applied is None)
    finally:
        await coordinator.close()


async def test_a_subscriber_cannot_freeze_others_below_the_floor_nor_lift_them_nor_speak_for_another_stream(world):
    """The nurse's browser, hostile: a REMB of 0 holds the coordinator at the floor, no lower; a REMB for an
    SSRC that is not the stream it receives changes nothing; a huge one caps nothing (the coordinator keeps
    media's own estimate, not the nurse's number)."""
    coordinator, nurse, receiver, ssrc, publication = await two_peers(world)
    try:
        rembs = record_rembs(video_sender(coordinator))
        await send_remb(receiver, 0, [ssrc ^ 0x5A5A5A5A])  # someone else's stream, or nobody's
        await send_remb(receiver, 0, [])
        await asyncio.sleep(0.5)
        assert publication.bandwidth.applied is None

        async def nurse_says(bitrate: int) -> list[int]:
            await send_remb(receiver, bitrate, [ssrc])
            return rembs

        await poll(lambda: nurse_says(0), 10, what="the floor at the coordinator", interval=0.3,
                   until=lambda got: got and got[-1] == FLOOR_BPS)
        assert min(rembs) >= FLOOR_BPS, rembs
        seen = len(rembs)
        await poll(lambda: nurse_says(1 << 40), 10, what="the cap gone after huge REMBs", interval=0.3,
                   until=lambda got: publication.bandwidth.applied is None and len(got) > seen)
        own = publication.bandwidth.own
        assert own is not None and own < 1 << 40 and max(rembs[seen:]) <= max(own, FLOOR_BPS) * 2, rembs[seen:]
    finally:
        await nurse.close()
        await coordinator.close()


def test_the_rule_is_documented_where_it_is_set():
    assert "weakest" in bandwidth.__doc__ and "FLOOR_BPS" in bandwidth.__doc__


def estimates(throttled: bool, delay_growth_ms: float, seconds: float = 6.0) -> list[tuple[int, int]]:
    """(arrival ms, bitrate) of every estimate aiortc's real estimator hands on for a 600 kbit/s, 15 fps video
    (5 packets a frame) whose one-way delay grows by `delay_growth_ms` a frame: a link filling up, or a media
    process that is not scheduled in time."""
    from aiortc.rate import RemoteBitrateEstimator

    from services.media.rtc_internals import throttle_estimates

    estimator = RemoteBitrateEstimator()
    if throttled:
        throttle_estimates(estimator)
    got = []
    start_ms = 3_900_000_000_000
    for frame in range(int(seconds * 15)):
        for i in range(5):
            sent = frame / 15 + i * 0.002
            arrival_ms = start_ms + int(1000 * sent + frame * delay_growth_ms)
            remb = estimator.add(arrival_time_ms=arrival_ms, abs_send_time=int(sent * (1 << 18)) & 0xFFFFFF,
                                 payload_size=1000, ssrc=1234)
            if remb is not None:
                got.append((arrival_ms, remb[0]))
    return got


@pytest.mark.parametrize("growth", [0.0, 2.0, 6.0])
def test_a_publisher_gets_remb_as_libwebrtc_sends_it_not_one_per_packet(growth):
    """libwebrtc's RembThrottler: an estimate goes out at once when it is more than 3 % below the last one sent,
    else at most every 200 ms. aiortc's receiver sent one per packet while its detector saw overuse; the
    throttled estimator hands on a subsequence of aiortc's estimates, and withholds none it must send."""
    every = estimates(False, growth)
    sent = estimates(True, growth)
    assert set(sent) <= set(every) and sent and sent[0] == every[0]
    last_ms, last_bps = sent[0]
    for at, bitrate in every[1:]:
        must = bitrate * 103 // 100 <= last_bps or at >= last_ms + 200
        assert ((at, bitrate) in sent) == must, (at, bitrate, last_ms, last_bps)
        if must:
            last_ms, last_bps = at, bitrate
    span = (every[-1][0] - every[0][0]) / 1000
    if growth:  # overuse: aiortc's estimates came with (nearly) every packet
        assert len(every) > 30 * span, len(every)
    lower = sum(1 for (_, a), (_, b) in zip(sent, sent[1:]) if b * 103 // 100 <= a)
    assert len(sent) <= 5 * span + lower + 1, (len(sent), lower, span)
