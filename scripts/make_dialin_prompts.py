"""Generate the dial-in service's Swedish voice prompts once, with espeak-ng (Debian: espeak-ng):
8 kHz mono 16-bit WAV files in services/dialin/prompts/, committed. Run again after changing a text:

    python scripts/make_dialin_prompts.py
"""

from __future__ import annotations

import io
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "services" / "dialin" / "prompts"
RATE = 8000
# The texts (the service plays them by these names; services/dialin/prompts.py lists them).
PROMPTS = {
    "welcome": "Välkommen till Digitala vårdmöten. Ange mötes-ID och avsluta med fyrkant.",
    "wrong_id": "Mötes-ID:t finns inte. Försök igen och avsluta med fyrkant.",
    "too_many": "Fel mötes-ID för många gånger. Samtalet avslutas.",
    "lobby": "Tack. Vänta, samordnaren släpper snart in dig i mötet.",
    "admitted": "Du är nu med i mötet.",
    "removed": "Du har tagits bort.",
    "refused": "Du kan inte ansluta till det här mötet.",
    "not_started": "Mötet har inte startat ännu. Ring igen när det har börjat.",
    "ended": "Mötet är avslutat.",
    "busy": "Det går inte att ringa in just nu. Försök igen senare.",
    "personal_code": "Har du en personlig kod, ange den och avsluta med fyrkant. Annars trycker du bara fyrkant.",
    "wrong_code": "Koden stämmer inte. Försök igen, eller tryck fyrkant för att vänta på samordnaren.",
    "too_many_codes": "Fel kod för många gånger. Samtalet avslutas.",
}


def synthesize(text: str) -> bytes:
    """espeak-ng's WAV (22050 Hz) resampled to 8 kHz mono s16 PCM."""
    raw = subprocess.run(["espeak-ng", "-v", "sv", "-s", "175", "--stdout", text], check=True,
                         capture_output=True).stdout
    container = av.open(io.BytesIO(raw), format="wav")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    chunks = [np.zeros(0, np.int16)]
    for frame in container.decode(audio=0):
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    pcm = np.concatenate(chunks).astype(np.int16)
    # espeak-ng pads with silence: trimmed, so a goodbye fits in the 2 s before the BYE.
    loud = np.flatnonzero(np.abs(pcm) > 300)
    return pcm[loud[0]:loud[-1] + 1].tobytes() if loud.size else pcm.tobytes()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in PROMPTS.items():
        pcm = synthesize(text)
        with wave.open(str(OUT / f"{name}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm)
        print(f"{name}.wav {len(pcm) / 2 / RATE:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
