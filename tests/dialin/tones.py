"""Tone detection for the dial-in tests: a WebRTC participant that keeps what it hears (the last few
seconds, in memory) and a Goertzel measure of one frequency's share of a signal's power."""

from __future__ import annotations

import collections

import numpy as np
from aiortc.mediastreams import MediaStreamError

from devstack.peers import Peer, Received


def tone_share(samples: np.ndarray, rate: int, freq: float, width: float = 25.0) -> float:
    """The share (0..1) of the signal's power within ±width Hz of `freq` (Hann-windowed spectrum)."""
    x = samples.astype(np.float64)
    if len(x) < 64 or not np.any(x):
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    bins = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[np.abs(bins - freq) <= width].sum() / spectrum.sum())


class ListeningPeer(Peer):
    """A participant's browser stand-in that keeps the last `seconds` of each audio track it receives
    (mono, 48 kHz), to look for a tone in."""

    def __init__(self, seconds: float = 3.0, **kw) -> None:
        super().__init__(**kw)
        self.heard: dict[int, collections.deque] = {}
        self._keep = int(seconds * 50)

    async def _consume(self, track, rec: Received) -> None:
        if track.kind != "audio":
            return await super()._consume(track, rec)
        frames = self.heard.setdefault(id(track), collections.deque(maxlen=self._keep))
        try:
            while True:
                frame = await track.recv()
                rec.frames += 1
                samples = frame.to_ndarray().reshape(-1)
                if len(frame.layout.channels) == 2:
                    samples = samples[::2]
                frames.append(samples.astype(np.int16))
        except MediaStreamError:
            pass

    def hears(self, freq: float, share: float = 0.5) -> bool:
        """Whether one of the received audio tracks carries mostly this tone now."""
        return any(tone_share(np.concatenate(list(f)[-25:]), 48000, freq) >= share for f in self.heard.values() if f)
