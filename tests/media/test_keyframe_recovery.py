"""A subscriber waiting for its first keyframe keeps asking for one until it gets through: a lost
PLI, or a keyframe that arrived while its sender was not ready, must not leave it without video
(its browser has decoded nothing, so it never asks by itself)."""

from aiortc.rtp import RtpPacket

from services.media.forwarding import ForwardTrack


class Source:
    def __init__(self) -> None:
        self.requests = 0
        self.subscribers: set = set()

    def request_keyframe(self) -> None:
        self.requests += 1

    def unsubscribe(self, track) -> None:
        self.subscribers.discard(track)


class Out:
    def __init__(self) -> None:
        self.is_ready = False
        self.payload_type = 96
        self.sent: list[int | str] = []  # timestamps, and "rebase"

    def ready(self) -> bool:
        return self.is_ready

    def arm(self, armed: bool) -> None:
        """Compiled only (the fan-out's route); this sender is Python's."""

    def rebase(self, first, clock_rate) -> None:
        self.sent.append("rebase")

    def send(self, packets, ntp, abs_send_time) -> bool:
        if not self.is_ready:
            return False
        self.sent.extend(p.timestamp for p in packets)
        return True


def packet(timestamp: int) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence_number=timestamp, timestamp=timestamp, marker=1, payload=b"x")


async def test_a_waiting_subscriber_asks_again_on_every_delta_frame_until_a_keyframe_arrives():
    track, source, out = ForwardTrack("video"), Source(), Out()
    track.source, track._out = source, out
    track.push([packet(1)], True, 0, 0)  # the keyframe arrives before the subscriber's sender is ready: dropped
    out.is_ready = True
    for ts in (2, 3, 4):  # the PLI that followed was lost: only delta frames come
        track.push([packet(ts)], False, 0, 0)
    assert out.sent == [] and source.requests == 3  # nothing undecodable sent; asked each time (throttled upstream)
    track.push([packet(5)], True, 0, 0)
    track.push([packet(6)], False, 0, 0)
    # forwarding from the keyframe on, numbered from it; no more asking
    assert out.sent == ["rebase", 5, 6] and source.requests == 3
    track.stop()
