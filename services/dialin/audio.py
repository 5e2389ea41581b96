"""Audio between the call (8 kHz mono, 20 ms frames of 16-bit PCM; the SIP stack does G.711) and
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

RATE = 8000
FRAME_SAMPLES = 160  # 20 ms
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE = bytes(FRAME_BYTES)
PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
# Room audio waiting to be mixed, per track: more than this is dropped (oldest first), so a stalled
# mixer never builds up delay; the caller's audio waiting for the room, likewise.
MAX_BUFFERED_FRAMES = 6


class Prompts:
    """The Swedish voice prompts (scripts/make_dialin_prompts.py made them), as 20 ms frames."""

    def __init__(self, directory: Path = PROMPTS_DIR) -> None:
        self._frames: dict[str, list[bytes]] = {}
        for path in sorted(directory.glob("*.wav")):
            with wave.open(str(path), "rb") as w:
                if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
                    raise ValueError(f"{path.name}: not 8 kHz mono 16-bit")
                pcm = w.readframes(w.getnframes())
            pcm += bytes(-len(pcm) % FRAME_BYTES)
            self._frames[path.stem] = [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]

    def frames(self, name: str) -> list[bytes]:
        return self._frames[name]

    def seconds(self, name: str) -> float:
        return len(self._frames[name]) * FRAME_SAMPLES / RATE


def mix(frames: list[bytes]) -> bytes:
    """Sum 20 ms frames of 16-bit PCM, clipped."""
    if not frames:
        return SILENCE
    if len(frames) == 1:
        return frames[0]
    total = np.sum([np.frombuffer(f, np.int16).astype(np.int32) for f in frames], axis=0)
    return np.clip(total, -32768, 32767).astype(np.int16).tobytes()


class RoomMix:
    """Everyone else's audio in the room, each track decoded (aiortc) and resampled to 8 kHz mono
    into its own short buffer; `pull()` takes one 20 ms frame of their sum."""

    def __init__(self) -> None:
        self._buffers: dict[int, bytearray] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, track: MediaStreamTrack) -> None:
        task = asyncio.ensure_future(self._receive(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _receive(self, track: MediaStreamTrack) -> None:
        buffer = self._buffers.setdefault(id(track), bytearray())
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                for out in resampler.resample(frame):
                    buffer += out.to_ndarray().tobytes()
                if len(buffer) > MAX_BUFFERED_FRAMES * FRAME_BYTES:
                    del buffer[:len(buffer) - MAX_BUFFERED_FRAMES * FRAME_BYTES]
        except MediaStreamError:
            pass
        finally:
            self._buffers.pop(id(track), None)

    def pull(self) -> bytes:
        frames = []
        for buffer in self._buffers.values():
            if len(buffer) >= FRAME_BYTES:
                frames.append(bytes(buffer[:FRAME_BYTES]))
                del buffer[:FRAME_BYTES]
        return mix(frames)

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class CallerTrack(MediaStreamTrack):
    """The caller's voice as the room's audio track: 20 ms frames at 8 kHz on a steady clock (aiortc's
    Opus encoder resamples); silence when the phone side sent nothing in time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pcm = bytearray()
        self._sent = 0
        self._start: float | None = None
        self._time_base = fractions.Fraction(1, RATE)

    def push(self, pcm: bytes) -> None:
        """Audio from the phone, in order (the SIP stack's jitter buffer ordered it; any packet size)."""
        self._pcm += pcm
        if len(self._pcm) > MAX_BUFFERED_FRAMES * FRAME_BYTES:
            del self._pcm[:len(self._pcm) - MAX_BUFFERED_FRAMES * FRAME_BYTES]

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._sent * FRAME_SAMPLES / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pcm = SILENCE
        if len(self._pcm) >= FRAME_BYTES:
            pcm = bytes(self._pcm[:FRAME_BYTES])
            del self._pcm[:FRAME_BYTES]
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._sent * FRAME_SAMPLES
        frame.time_base = self._time_base
        self._sent += 1
        return frame
