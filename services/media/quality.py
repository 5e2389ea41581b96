"""Connection quality per participant from aiortc's getStats: RTT, loss, jitter (ms), bitrate.

Loss is since the previous sample (the participant's own reports to us are per RTCP interval too),
so a connection that was poor and cleared up reads as good again.

Jitter in RTP statistics is in RTP clock ticks; it is converted with the codec's clock rate. Only
audio streams' jitter counts: audio packets are small and evenly spaced, so their jitter is the
network's unevenness, while a video frame's packets share one timestamp and arrive spread over the
frame's transmission time (a 10 kB keyframe takes 160 ms at 500 kbit/s), so video's jitter grows with
frame size over bandwidth and stays above the threshold on a slow link that is perfectly even.
Bitrates are byte-count deltas of the (bundled) transport over at least BITRATE_SPAN seconds
where the samples allow it: whoever asked just before (the portal, support's evidence, a second
desk) must not leave the next caller a few milliseconds' delta of nothing."""

from __future__ import annotations

import collections
import datetime as dt
import time
from dataclasses import dataclass, field

from services.media.metrics import QUALITY_WARNINGS
from services.media.rtc_internals import negotiated_codecs

POOR_CONNECTION = "Din anslutning är svag: använd nätverkskabel om du kan"
HIGH_DELAY = "Lång fördröjning i anslutningen"
PACKET_LOSS = "Ljud och bild tappas på vägen"
UNEVEN = "Ojämn anslutning: ljud och bild kan hacka"
BITRATE_SPAN = 1.0  # seconds: a bitrate is measured over at least this long once the connection is that old
LOSS_SPAN = 5.0  # seconds: the participant's own loss is that of the last 5 s or a little more
ROUND_TRIP_SPAN = 4.0  # seconds: the round trip is the longest measured in the last 4 s (reports come every ~1 s)


@dataclass
class Thresholds:
    round_trip_ms: float = 300.0
    packet_loss: float = 0.05
    jitter_ms: float = 50.0


@dataclass
class Quality:
    round_trip_ms: float = 0.0
    packet_loss: float = 0.0
    jitter_ms: float = 0.0
    inbound_kbps: float = 0.0
    outbound_kbps: float = 0.0
    measured_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    warnings: list[str] = field(default_factory=list)

    @property
    def poor(self) -> bool:
        return bool(self.warnings)


def assess(q: Quality, limits: Thresholds) -> Quality:
    problems = []
    if q.round_trip_ms > limits.round_trip_ms:
        problems.append(HIGH_DELAY)
    if q.packet_loss > limits.packet_loss:
        problems.append(PACKET_LOSS)
    if q.jitter_ms > limits.jitter_ms:
        problems.append(UNEVEN)
    q.warnings = [POOR_CONNECTION, *problems] if problems else []
    return q


class QualitySampler:
    """Samples one peer connection; bitrates come from byte counts against an earlier sample."""

    def __init__(self, limits: Thresholds) -> None:
        self._limits = limits
        # (monotonic time, bytes received, bytes sent) of earlier samples; the first is the newest
        # one at least BITRATE_SPAN old, if any is. The peer connection is new: no bytes yet.
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque([(time.monotonic(), 0, 0)],
                                                                                     maxlen=256)
        self._poor = False
        # (monotonic time, seconds) of each round trip measured from the participant's reports (round_trip)
        self._round_trips: collections.deque[tuple[float, float]] = collections.deque(maxlen=64)
        # Per inbound stream: (monotonic time, packets received, packets lost) of earlier samples, so
        # loss is that of the last LOSS_SPAN seconds or more (a bad first minute must not flag the
        # connection for the rest of the meeting, and one lost packet of a few must not either).
        self._inbound: dict[str, collections.deque[tuple[float, int, int]]] = {}

    def _since(self, stream_id: str, got: int, lost: int) -> tuple[int, int]:
        """(received, lost) packets of one inbound stream since its oldest kept sample (at most about
        LOSS_SPAN ago; since the connection began while it is younger), and keep this one."""
        history = self._inbound.setdefault(stream_id, collections.deque([(time.monotonic(), 0, 0)], maxlen=256))
        _, got_then, lost_then = history[0]
        history.append((time.monotonic(), got, lost))
        return max(got - got_then, 0), max(lost - lost_then, 0)

    def round_trip(self, seconds: float) -> None:
        """One round trip measured from a report of the participant (rtc_internals.watch_round_trips)."""
        self._round_trips.append((time.monotonic(), seconds))

    async def sample(self, pc) -> Quality:
        rtts, losses, jitters = [], [], []
        received = sent = 0
        for t in pc.getTransceivers():
            codecs = negotiated_codecs(t)
            clock = codecs[0].clockRate if codecs else (48000 if t.kind == "audio" else 90000)
            reports = list((await t.receiver.getStats()).values()) + list((await t.sender.getStats()).values())
            for s in reports:
                if s.type == "inbound-rtp":  # what the participant sends us
                    got, lost = self._since(s.id, s.packetsReceived, max(s.packetsLost, 0))
                    if got + lost:
                        losses.append(lost / (got + lost))
                    if t.kind == "audio":
                        jitters.append(s.jitter / clock * 1000.0)
                elif s.type == "remote-inbound-rtp":  # what the participant reports receiving from us
                    if s.roundTripTime is not None:
                        rtts.append(s.roundTripTime * 1000.0)
                    losses.append(s.fractionLost / 256.0)
                    if t.kind == "audio":
                        jitters.append(s.jitter / clock * 1000.0)
                elif s.type == "transport":
                    received, sent = max(received, s.bytesReceived), max(sent, s.bytesSent)
        now = time.monotonic()
        # The round trips measured in the last few seconds where there are any (they follow the link as it
        # is now); aiortc's smoothed figure, which lags for half a minute, only before the first of them.
        recent = [rtt * 1000.0 for at, rtt in self._round_trips if at >= now - ROUND_TRIP_SPAN]
        q = Quality(
            round_trip_ms=max(recent or rtts, default=0.0),
            packet_loss=max(losses, default=0.0),
            jitter_ms=max(jitters, default=0.0),
        )
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= now - BITRATE_SPAN:
            samples.popleft()
        then, received_then, sent_then = samples[0]
        if now > then:
            q.inbound_kbps = max(received - received_then, 0) * 8 / (now - then) / 1000
            q.outbound_kbps = max(sent - sent_then, 0) * 8 / (now - then) / 1000
        samples.append((now, received, sent))
        assessed = assess(q, self._limits)
        for stream in self._inbound.values():
            while len(stream) > 1 and stream[1][0] <= now - LOSS_SPAN:
                stream.popleft()
        if assessed.poor and not self._poor:  # count the turn to poor, not every sample of it
            QUALITY_WARNINGS.inc()
        self._poor = assessed.poor
        return assessed
