"""CPU of the dial-in's voice codecs towards the trunk (services/dialin/voice.py): encode + decode of one
20 ms frame, as a call does 50 times a second each way, including the 16 ↔ 8 kHz step for G.711.

    python bench/dialin_codecs.py [seconds of audio, default 10]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from services.dialin import voice
from services.dialin.audio import FRAME_BYTES, RATE


def main(seconds: float = 10.0) -> None:
    t = np.arange(int(RATE * seconds)) / RATE
    pcm = (np.sin(2 * np.pi * 1000 * t) * 8000).astype(np.int16).tobytes()
    frames = [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    print(f"encode + decode of one 20 ms frame ({seconds:.0f} s of a 1 kHz tone, process CPU time)")
    for name in voice.PREFERENCE:
        codec = voice.codec(voice.Choice(name, 111, voice.KNOWN[name][0]))
        start = time.process_time()
        for frame in frames:
            codec.decode(codec.encode(frame))
        per_frame = (time.process_time() - start) / len(frames)
        print(f"  {name:5s} {per_frame * 1e6:7.1f} µs per frame   {per_frame / 0.02 * 100:5.2f} % of a core per call")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)
