"""The call's voice codecs towards the trunk: Opus, G.722, G.711 A-law and µ-law, chosen by our
preference among what the offer carries (`choose`).

Inside the service audio is 16 kHz mono 16-bit PCM in 20 ms frames (services/dialin/audio.py): wide
enough for G.722's and wideband Opus's 7 kHz, and a plain 1:2 step down to G.711's 8 kHz. Each codec
here takes and gives those frames and does its own rate step, so aiortp (RTP, jitter buffer, loss
concealment) and the call flow see one format whatever was negotiated.

Encoding and decoding are ffmpeg's, through PyAV (already used to decode the room's audio): its
g722 codec and libopus. G.711 is aiortp's (a table lookup); its 8 kHz ↔ 16 kHz step is ffmpeg's
swresample (av.AudioResampler). Note RFC 3551 §4.5.2: G.722's RTP clock is 8000 although its audio
is 16 kHz, so a 20 ms packet advances the timestamp by 160; Opus's RTP clock is always 48000
(RFC 7587 §4.1), whatever the audio's rate."""

from __future__ import annotations

import fractions
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import av
import numpy as np
from aiortp.codecs import Codec
from aiortp.codecs.g711 import PcmaCodec, PcmuCodec
from aiosipua.sdp import Codec as Offered

from services.dialin.audio import FRAME_SAMPLES, RATE

# The default preference (docs/DIALIN.md): the widest band first, then A-law, the Swedish network's.
PREFERENCE = ("opus", "G722", "PCMA", "PCMU")


@dataclass(frozen=True)
class Choice:
    """The negotiated codec: its name, the offer's payload type and RTP clock."""

    name: str
    payload_type: int
    clock_rate: int

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp units per 20 ms packet."""
        return self.clock_rate // 50


# Canonical name → (RTP clock rate, static payload type or None).
KNOWN: dict[str, tuple[int, int | None]] = {"opus": (48000, None), "G722": (8000, 9), "PCMA": (8000, 8),
                                             "PCMU": (8000, 0)}


def canonical(name: str) -> str | None:
    """A configured or offered codec name in our spelling ("g722" → "G722"), or None if unknown."""
    return next((k for k in KNOWN if k.lower() == name.lower()), None)


def choose(offered: Iterable[Offered], preference: Iterable[str]) -> Choice | None:
    """Our most preferred codec that the offer carries (static payload types without rtpmap included)."""
    by_name: dict[str, Offered] = {}
    for codec in offered:
        name = canonical(codec.encoding_name) if codec.encoding_name else next(
            (k for k, (_, pt) in KNOWN.items() if pt == codec.payload_type), None)
        if name is not None and (codec.clock_rate in (0, KNOWN[name][0])):
            by_name.setdefault(name, codec)
    for name in preference:
        if name in by_name:
            return Choice(name, by_name[name].payload_type, KNOWN[name][0])
    return None


class _Resampled:
    """PCM through ffmpeg's resampler. Towards the encoder it must come out in exact frames: swresample
    hands out what it has (its filter holds a few samples back), so the first frame is completed with
    silence and the rest follow in step. Towards the room it comes out as it is (any length)."""

    def __init__(self, rate: int) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        self._pending = bytearray()
        self._bytes = rate // 50 * 2

    def push(self, frame: av.AudioFrame) -> None:
        for out in self._resampler.resample(frame):
            self._pending += out.to_ndarray().reshape(-1)[:out.samples].tobytes()

    def frame(self) -> bytes:
        """Exactly 20 ms."""
        chunk = bytes(self._pending[:self._bytes]).ljust(self._bytes, b"\0")
        del self._pending[:self._bytes]
        return chunk

    def everything(self) -> bytes:
        out = bytes(self._pending)
        self._pending.clear()
        return out


def _frame(pcm: bytes, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return frame


class _Internal(Codec):
    """A codec seen from inside: 16 kHz frames in, 16 kHz frames out."""

    label = ""

    @property
    def name(self) -> str:
        return self.label

    @property
    def sample_rate(self) -> int:
        return RATE

    @property
    def samples_per_frame(self) -> int:
        return FRAME_SAMPLES


class G711(_Internal):
    def __init__(self, name: str) -> None:
        self.label = name
        self._codec: Codec = PcmaCodec() if name == "PCMA" else PcmuCodec()
        self._down, self._up = _Resampled(8000), _Resampled(RATE)

    def encode(self, pcm: bytes) -> bytes:
        self._down.push(_frame(pcm, RATE))
        return self._codec.encode(self._down.frame())

    def decode(self, payload: bytes) -> bytes:
        self._up.push(_frame(self._codec.decode(payload), 8000))
        return self._up.everything()


class _Ffmpeg(_Internal):
    """A codec of ffmpeg's: one encoder context at 16 kHz, one decoder (output resampled to 16 kHz)."""

    encoder_name = decoder_name = ""

    def __init__(self) -> None:
        self._encoder = cast(av.AudioCodecContext, av.CodecContext.create(self.encoder_name, "w"))
        self._encoder.sample_rate, self._encoder.layout, self._encoder.format = RATE, "mono", "s16"
        self._encoder.time_base = fractions.Fraction(1, RATE)
        self._encoder.open()
        self._decoder = cast(av.AudioCodecContext, av.CodecContext.create(self.decoder_name, "r"))
        self._decoder.sample_rate, self._decoder.layout = RATE, "mono"
        self._decoder.open()
        self._out = _Resampled(RATE)
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes:
        frame = _frame(pcm, RATE)
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        return b"".join(bytes(p) for p in self._encoder.encode(frame))

    def decode(self, payload: bytes) -> bytes:
        for frame in self._decoder.decode(av.Packet(payload)):
            self._out.push(frame)
        return self._out.everything()


class G722(_Ffmpeg):
    label, encoder_name, decoder_name = "G722", "g722", "g722"


class Opus(_Ffmpeg):
    label, encoder_name, decoder_name = "opus", "libopus", "libopus"


def codec(choice: Choice) -> Codec:
    """A fresh encoder/decoder pair for one call."""
    if choice.name == "G722":
        return G722()
    if choice.name == "opus":
        return Opus()
    return G711(choice.name)
