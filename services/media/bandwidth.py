"""A publisher's video held to its weakest subscriber's link (issue #20).

Media forwards one encoded stream per publisher to every subscriber (no simulcast, no transcoding), so
the publisher's bitrate is what every subscriber gets. A publisher's browser sets that bitrate from its
own link to media and from the REMB media's receiver sends it (aiortc's estimate of that link). Without
more, a coordinator on a good link sends what a nurse on 4G cannot take, and her video freezes. So, as
single-stream SFUs do (Janus videoroom, mediasoup without simulcast), media learns each subscriber's
available receive bandwidth and sends the publisher a REMB of ``min(its own estimate, the cap)``.
aiortc has the REMB format (``pack_remb_fci``/``unpack_remb_fci``) and its own receive estimator but no
SFU logic, and no library adds it for aiortc, so the rule is written here; the aiortc internals it hooks
into are in services/media/rtc_internals.py.

The rule (docs/NETWORK.md, "Holding a publisher to its weakest subscriber"):

- **A subscriber's estimate** is what its browser sends back on its video senders: REMB (Chrome's
  receive-side estimate, sent because media negotiates ``goog-remb`` and abs-send-time and no
  transport-cc). One REMB covers all the video the subscriber receives, so each of its video slots that
  shows someone gets an equal share. Smoothing: a subscriber's estimate is the highest it reported in the
  last :data:`HOLD_SECONDS`, so one momentary dip does not throttle everyone; a fall that lasts counts
  after that. A REMB older than :data:`STALE_SECONDS` no longer counts.
- **Fallback, without REMB**: the subscriber's Receiver Reports on that slot (loss fraction), with
  libwebrtc's classic loss-based rule (``SendSideBandwidthEstimation``): above 10 % loss the slot's limit
  becomes what was sent to it times ``1 - loss / 2``; below 2 % it grows 8 % a second until it no longer
  limits; in between it holds.
- **A subscriber with no estimate yet** (just joined, or no feedback at all) does not count: it neither
  throttles nor lifts anything.
- **The cap** of a publication is the lowest of its subscribers' slot estimates, never below
  :data:`FLOOR_BPS` (video at the portal's sizes still plays there; an absurd REMB of 0 costs the others at
  most this) and no cap at all at or above :data:`CEILING_BPS` (more than the portal's camera is ever sent
  with). A departed subscriber no longer counts from the next evaluation (at most :data:`RESEND_SECONDS`).
- **What the publisher gets**: aiortc's own REMB (throttled as libwebrtc's: at once when it falls by more than
  3 %, else at most every 200 ms), clamped to the cap when it is lower; and while the cap
  holds, a REMB of ``min(own estimate, cap)`` every :data:`RESEND_SECONDS`, at once when the cap drops by
  more than 3 % (at most five a second). A subscriber can lower a publisher to the floor at worst and
  never raise it above the publisher's own link's estimate (a huge REMB is no cap).

No person is named in any of this: the metrics count caps and capped publications only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from services.media.metrics import CAPPED_PUBLICATIONS, SUBSCRIBER_ESTIMATES, VIDEO_CAPS
from services.media.rtc_internals import cap_receiver_estimate, watch_receiver_feedback

FLOOR_BPS = 100_000
CEILING_BPS = 2_500_000
HOLD_SECONDS = 1.0
STALE_SECONDS = 5.0
RESEND_SECONDS = 1.0
DROP_AT_ONCE = 0.97  # a cap below this share of the last one sent goes out at once,
MIN_INTERVAL = 0.2  # but not sooner than this after the previous one (libwebrtc's REMB throttle): a subscriber
# stepping its REMB down makes media send the publisher at most five REMBs a second, not one per step
LOSS_HIGH, LOSS_LOW, GROWTH_PER_SECOND = 0.10, 0.02, 1.08  # libwebrtc's loss-based thresholds and increase

Clock = Callable[[], float]
log = logging.getLogger("svpl.media.bandwidth")
REMB_ESTIMATES = SUBSCRIBER_ESTIMATES.labels(source="remb")
LOSS_ESTIMATES = SUBSCRIBER_ESTIMATES.labels(source="receiver_report")


class SubscriberLink:
    """One subscriber's peer connection as a receiver: its REMBs, shared among its video slots."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.slots: list[SlotEstimate] = []
        self._rembs: collections.deque[tuple[float, float]] = collections.deque(maxlen=64)

    def slot(self, track: Any) -> SlotEstimate:
        """A video slot of this subscriber; `track.source` is the publication it shows now (None: nobody)."""
        slot = SlotEstimate(self, track)
        self.slots.append(slot)
        return slot

    def on_remb(self, bitrate: float) -> None:
        REMB_ESTIMATES.inc()
        self._rembs.append((self.clock(), float(bitrate)))
        for slot in self.slots:
            slot.changed()

    def remb(self) -> float | None:
        """The highest REMB of the last HOLD_SECONDS, or the newest if none is that recent and it is fresh."""
        now = self.clock()
        rembs = self._rembs
        while rembs and rembs[0][0] < now - STALE_SECONDS:
            rembs.popleft()
        if not rembs:
            return None
        return max((bps for at, bps in rembs if at >= now - HOLD_SECONDS), default=rembs[-1][1])

    def video_streams(self) -> int:
        return max(1, sum(1 for slot in self.slots if slot.track.source is not None))


class SlotEstimate:
    """One video slot of a subscriber: its share of the subscriber's REMB, or its own loss-based estimate."""

    def __init__(self, link: SubscriberLink, track: Any) -> None:
        self.link = link
        self.track = track
        self._loss_estimate: float | None = None
        self._last_report: tuple[float, int] | None = None  # (time, payload octets sent) at the previous report

    def limit(self) -> float | None:
        remb = self.link.remb()
        if remb is not None:
            return remb / self.link.video_streams()
        return self._loss_estimate

    def on_remb(self, bitrate: int, streams: int) -> None:  # the link shares it among its slots showing someone
        self.link.on_remb(bitrate)

    def on_report(self, fraction_lost: int, octets_sent: int) -> None:
        """A Receiver Report block about this slot's sender: loss in 256ths, payload octets sent so far."""
        now = self.link.clock()
        last, self._last_report = self._last_report, (now, octets_sent)
        if last is None or now - last[0] <= 0 or octets_sent < last[1]:
            return
        elapsed = now - last[0]
        sent_bps = (octets_sent - last[1]) * 8 / elapsed
        loss = fraction_lost / 256
        estimate = self._loss_estimate
        if loss > LOSS_HIGH:
            base = sent_bps if estimate is None else min(estimate, sent_bps)
            self._loss_estimate = max(base * (1 - loss / 2), FLOOR_BPS)
            LOSS_ESTIMATES.inc()
        elif loss < LOSS_LOW and estimate is not None:
            grown = estimate * GROWTH_PER_SECOND ** elapsed
            self._loss_estimate = None if grown >= CEILING_BPS else grown
        if self._loss_estimate != estimate:
            self.changed()

    def changed(self) -> None:
        cap = getattr(self.track.source, "bandwidth", None)
        if cap is not None:
            cap.evaluate()


class PublisherCap:
    """A video publication's cap: the lowest of its subscribers' slot estimates, sent to the publisher as REMB.

    `subscribers()` are the slot tracks showing it (each with its ``bandwidth_slot``), `ssrcs()` the
    publisher's SSRCs, `send_remb(bitrate, ssrcs)` sends a REMB to the publisher; :meth:`on_own_estimate`
    gets aiortc's estimate of the publisher's link as it sends it, and :meth:`cap` is what it is clamped to."""

    def __init__(self, subscribers: Callable[[], Any], ssrcs: Callable[[], list[int]],
                 send_remb: Callable[[int, list[int]], Coroutine[Any, Any, None]] | None = None,
                 clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._sent_at = -1e9
        self._subscribers = subscribers
        self._ssrcs = ssrcs
        self.send_remb = send_remb
        self.own: float | None = None  # aiortc's estimate of the publisher's link, as last sent
        self.applied: float | None = None  # the cap now (None: none)
        self._sent: float | None = None  # the last REMB we sent ourselves while capped
        self._logged: float | None = None  # the cap last logged
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def on_own_estimate(self, bitrate: int) -> None:
        self.own = float(bitrate)
        if self.applied is not None and self.applied < bitrate:
            VIDEO_CAPS.observe(self.applied)

    def cap(self) -> int | None:
        return None if self.applied is None else int(self.applied)

    def compute(self) -> float | None:
        limits = [limit for track in self._subscribers()
                  if (slot := getattr(track, "bandwidth_slot", None)) is not None and (limit := slot.limit()) is not None]
        if not limits:
            return None
        lowest = max(min(limits), FLOOR_BPS)
        return None if lowest >= CEILING_BPS else lowest

    def evaluate(self, periodic: bool = False) -> None:
        """Recompute the cap; send a REMB at once when it dropped, and (`periodic`) every second while it holds."""
        if self._closed:
            return
        before, self.applied = self.applied, self.compute()
        if (before is None) != (self.applied is None):
            if self.applied is None:
                CAPPED_PUBLICATIONS.dec()
            else:
                CAPPED_PUBLICATIONS.inc()
        self._log_change()
        if self.applied is None:
            self._sent = None
            return
        if periodic or self._sent is None or (self.applied < self._sent * DROP_AT_ONCE
                                              and self._clock() - self._sent_at >= MIN_INTERVAL):
            self._send()
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(RESEND_SECONDS, self._tick)

    def _log_change(self) -> None:
        """A line when a cap begins or ends or moves by a quarter (no person in it: figures only)."""
        applied, logged = self.applied, self._logged
        if (applied is None) == (logged is None) and (applied is None or logged is None
                                                       or 0.8 < applied / logged < 1.25):
            return
        self._logged = applied
        own = "unknown" if self.own is None else f"{self.own / 1000:.0f} kbit/s"
        if applied is None:
            log.info("video publication no longer capped by a subscriber (own link estimate %s)", own)
        else:
            log.info("video publication capped at %.0f kbit/s by its weakest subscriber (own link estimate %s)",
                     applied / 1000, own)

    def _tick(self) -> None:
        self._timer = None
        self.evaluate(periodic=True)

    def _send(self) -> None:
        assert self.applied is not None
        bitrate = self.applied if self.own is None else min(self.own, self.applied)
        ssrcs = self._ssrcs()
        if not ssrcs or self.send_remb is None:
            return
        self._sent, self._sent_at = bitrate, self._clock()
        VIDEO_CAPS.observe(bitrate)
        asyncio.ensure_future(self.send_remb(int(bitrate), ssrcs))

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.applied is not None:
            self.applied = None
            CAPPED_PUBLICATIONS.dec()


def hold_to_subscribers(receiver, subscribers: Callable[[], Any]) -> PublisherCap:
    """The cap of the video `receiver` gets from a publisher, over the slot tracks `subscribers()` showing it."""
    cap = PublisherCap(subscribers, lambda: [source.source for source in receiver.getSynchronizationSources()])
    cap.send_remb = cap_receiver_estimate(receiver, cap.cap, cap.on_own_estimate)
    return cap


def watch_slot(sender, link: SubscriberLink, track: Any) -> SlotEstimate:
    """A subscriber's video slot `track`, sent by `sender`: what its browser reports on it counts towards the
    cap of the publication it shows (``track.source``)."""
    slot = link.slot(track)
    watch_receiver_feedback(sender, slot.on_remb, slot.on_report)
    return slot
