"""Call quality on the trunk side: what the phone's RTP looked like when it reached us.

From aiortp's public receive statistics (`CallSession.stats`, through `sip.Call.rtp_stats`):
packets received and lost (RFC 3550 A.3: expected from the highest sequence number, minus
received), the interarrival jitter (RFC 3550 A.8, in RTP timestamp units, 8 kHz for G.711), and the
frames the jitter buffer concealed because a packet was missing when its turn came (lost, or so
late that it was dropped when it came). Sampled every few seconds while the call lasts (a gauge of
calls that are poor right now) and once at its end (histograms per call). No labels at all: never a
number, a person or a meeting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.dialin import metrics

CLOCK_RATE = 8000  # G.711's RTP clock
# Right now "poor": over a sampling window, more than 5 % of packets lost or concealed, or
# more than 30 ms of jitter (the usual VoIP bounds where speech degrades audibly).
POOR_LOSS = 0.05
POOR_JITTER_SECONDS = 0.030


@dataclass
class _Counts:
    received: int = 0
    lost: int = 0
    concealed: int = 0


class CallQuality:
    """One call's RTP quality: `sample(stats)` every few seconds, `finish()` once at the end."""

    def __init__(self) -> None:
        self._last = _Counts()
        self._window = _Counts()
        self.max_jitter_seconds = 0.0
        self.poor = False

    @staticmethod
    def _counts(stats: Mapping[str, float]) -> _Counts:
        return _Counts(int(stats.get("packets_received", 0)), max(int(stats.get("packets_lost", 0)), 0),
                       int(stats.get("concealed_frames", 0)))

    def sample(self, stats: Mapping[str, float]) -> None:
        now = self._counts(stats)
        if not now.received:
            return
        jitter = float(stats.get("jitter", 0)) / CLOCK_RATE
        self.max_jitter_seconds = max(self.max_jitter_seconds, jitter)
        self._window = _Counts(now.received - self._last.received, now.lost - self._last.lost,
                               now.concealed - self._last.concealed)
        self._last = now
        poor = ratio(self._window.lost, self._window.received + self._window.lost) > POOR_LOSS or \
            ratio(self._window.concealed, self._window.received) > POOR_LOSS or jitter > POOR_JITTER_SECONDS
        if poor != self.poor:
            metrics.POOR_CALLS.inc() if poor else metrics.POOR_CALLS.dec()
            self.poor = poor

    @property
    def loss_ratio(self) -> float:
        return ratio(self._last.lost, self._last.received + self._last.lost)

    @property
    def concealed_ratio(self) -> float:
        return ratio(self._last.concealed, self._last.received)

    def finish(self, stats: Mapping[str, float]) -> None:
        """The call's figures into the histograms (once; a call that never sent RTP has none)."""
        self.sample(stats)
        if self.poor:
            metrics.POOR_CALLS.dec()
            self.poor = False
        if not self._last.received:
            return
        metrics.LOSS.observe(self.loss_ratio)
        metrics.JITTER.observe(self.max_jitter_seconds)
        metrics.CONCEALED.observe(self.concealed_ratio)


def ratio(part: int, whole: int) -> float:
    return min(part / whole, 1.0) if whole > 0 else 0.0
