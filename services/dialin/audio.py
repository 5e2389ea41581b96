"""Audio between the call (16 kHz mono, 20 ms frames of 16-bit PCM: wideband, so a G.722 or Opus
caller keeps their 7 kHz; services/dialin/voice.py converts to and from the negotiated codec) and
the room (aiortc: Opus decoded to 48 kHz frames): the prompts, the caller's track published into
the room, and the mix of everyone else's audio the caller hears. No audio is ever written anywhere."""

from __future__ import annotations

import asyncio
import fractions
import time
import wave
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 16000
FRAME_SAMPLES = 320  # 20 ms
PROMPT_RATE = 8000  # the committed prompt files (espeak-ng's voice has nothing above 4 kHz worth keeping)
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE = bytes(FRAME_BYTES)
PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
# Playout buffers (room audio per track, the caller's audio for the room): play once this many
# 20 ms frames wait (absorbs the arrival jitter of the other side's clock), drop the oldest beyond
# the limit (a clock running fast never builds up delay).
PLAYOUT_START_FRAMES = 2
PLAYOUT_LIMIT_FRAMES = 10


class Prompts:
    """The Swedish voice prompts (scripts/make_dialin_prompts.py made them), as 20 ms frames at RATE
    (the 8 kHz files resampled once, at start)."""

    def __init__(self, directory: Path = PROMPTS_DIR) -> None:
        self._frames: dict[str, list[bytes]] = {}
        for path in sorted(directory.glob("*.wav")):
            with wave.open(str(path), "rb") as w:
                if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (PROMPT_RATE, 1, 2):
                    raise ValueError(f"{path.name}: not 8 kHz mono 16-bit")
                pcm = _resample(w.readframes(w.getnframes()), PROMPT_RATE)
            pcm += bytes(-len(pcm) % FRAME_BYTES)
            self._frames[path.stem] = [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]

    def frames(self, name: str) -> list[bytes]:
        return self._frames[name]

    def seconds(self, name: str) -> float:
        return len(self._frames[name]) * FRAME_SAMPLES / RATE


def _resample(pcm: bytes, rate: int) -> bytes:
    """16-bit mono PCM at `rate` as RATE (ffmpeg's swresample, flushed so the end is kept)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return b"".join(out.to_ndarray().reshape(-1)[:out.samples].tobytes()
                    for out in [*resampler.resample(frame), *resampler.resample(None)])


class PlayoutBuffer:
    """A small playout (jitter) buffer of 16-bit PCM between two clocks: audio arrives in packets of
    any size whenever the sender's clock and the network deliver them, and leaves in 20 ms frames on
    our clock. It starts (and, after running dry, restarts) only once `start` frames wait, so short
    arrival jitter does not chop the sound; beyond `limit` frames the oldest audio is dropped, so the
    delay stays bounded. Hand-written: aiortp's jitter buffer orders RTP packets of the phone side
    only; here the other side is aiortc's decoded frames (or the phone's decoded audio)."""

    def __init__(self, start: int = PLAYOUT_START_FRAMES, limit: int = PLAYOUT_LIMIT_FRAMES) -> None:
        self._pcm = bytearray()
        self._start, self._limit = start * FRAME_BYTES, limit * FRAME_BYTES
        self._playing = False
        self.dropped = 0  # bytes dropped because the buffer was full
        self.underruns = 0  # times it ran dry while playing

    def push(self, pcm: bytes) -> None:
        self._pcm += pcm
        over = len(self._pcm) - self._limit
        if over > 0:
            del self._pcm[:over]
            self.dropped += over

    def pull(self) -> bytes | None:
        """The next 20 ms frame, or None (nothing to play yet)."""
        if not self._playing and len(self._pcm) >= self._start:
            self._playing = True
        if not self._playing:
            return None
        if len(self._pcm) < FRAME_BYTES:
            self._playing = False
            self.underruns += 1
            return None
        frame = bytes(self._pcm[:FRAME_BYTES])
        del self._pcm[:FRAME_BYTES]
        return frame

    @property
    def buffered_frames(self) -> float:
        return len(self._pcm) / FRAME_BYTES


def mix(frames: list[bytes]) -> bytes:
    """Sum 20 ms frames of 16-bit PCM, clipped."""
    if not frames:
        return SILENCE
    if len(frames) == 1:
        return frames[0]
    total = np.sum([np.frombuffer(f, np.int16).astype(np.int32) for f in frames], axis=0)
    return np.clip(total, -32768, 32767).astype(np.int16).tobytes()


class RoomMix:
    """Everyone else's audio in the room, each track decoded (aiortc) and resampled to 16 kHz mono
    into its own short buffer; `pull()` takes one 20 ms frame of their sum."""

    def __init__(self) -> None:
        self._buffers: dict[int, PlayoutBuffer] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, track: MediaStreamTrack) -> None:
        task = asyncio.ensure_future(self._receive(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _receive(self, track: MediaStreamTrack) -> None:
        buffer = self._buffers.setdefault(id(track), PlayoutBuffer())
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                for out in resampler.resample(frame):
                    buffer.push(out.to_ndarray().tobytes())
        except MediaStreamError:
            pass
        finally:
            self._buffers.pop(id(track), None)

    def pull(self) -> bytes:
        return mix([f for f in (b.pull() for b in self._buffers.values()) if f is not None])

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class CallerTrack(MediaStreamTrack):
    """The caller's voice as the room's audio track: 20 ms frames at 16 kHz on a steady clock (aiortc's
    Opus encoder resamples); silence when the phone side sent nothing in time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._buffer = PlayoutBuffer()
        self._sent = 0
        self._start: float | None = None
        self._time_base = fractions.Fraction(1, RATE)

    def push(self, pcm: bytes) -> None:
        """Audio from the phone, in order (the SIP stack's jitter buffer ordered it; any packet size)."""
        self._buffer.push(pcm)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._sent * FRAME_SAMPLES / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pcm = self._buffer.pull() or SILENCE
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._sent * FRAME_SAMPLES
        frame.time_base = self._time_base
        self._sent += 1
        return frame
