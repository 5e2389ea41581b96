"""Debian's baresip as the phone caller, driven over its ctrl_tcp interface (netstring JSON):
dial, send keys (RFC 4733 telephone events), hang up. Its `aufile` module is the microphone (a WAV
file) and its `sndfile` module keeps what the caller heard (the decoded audio) as a WAV file in
the test's directory — the recorder the issue's test reads the room's tone from. A trunk's ways are
options: SIP over TLS with a client certificate (`tls`), SRTP keyed by SDES (`mediaenc="srtp-mand"`:
RTP/SAVP with a=crypto, baresip's srtp module), and the codec it offers (g711, g722, opus modules)."""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import numpy as np

from devstack.embedded_db import free_port

CONFIG = """poll_method epoll
sip_listen 127.0.0.1:{sip_port}
audio_player alsa,null
audio_source aufile,{source}
audio_alert alsa,null
ausrc_srate {rate}
auplay_srate {rate}
ausrc_channels 1
auplay_channels 1
rtp_ports {rtp_min}-{rtp_max}
module_path /usr/lib/baresip/modules
module g711.so
module g722.so
module opus.so
module srtp.so
module aufile.so
module sndfile.so
module alsa.so
module_app account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{ctrl_port}
snd_path {records}
{tls}"""


def silence_wav(path: Path, seconds: float = 120.0, rate: int = 8000, tone: float = 0.0) -> Path:
    """The microphone: silence, or a steady tone."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * tone * t) * 6000).astype(np.int16) if tone else np.zeros(len(t), np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def netstring(data: dict) -> bytes:
    raw = json.dumps(data).encode()
    return str(len(raw)).encode() + b":" + raw + b","


class Baresip:
    def __init__(self, workdir: Path, number: str, *, codec: str = "PCMA", rate: int = 8000, tone: float = 0.0,
                 mediaenc: str = "", tls: tuple[str, str] | None = None) -> None:
        """`tls`: (PEM with baresip's certificate and key, PEM of the CA the dial-in's certificate chains to)."""
        self.dir = workdir
        self.number = number
        self.codec, self.rate, self.tone, self.mediaenc, self.tls = codec, rate, tone, mediaenc, tls
        self.records = workdir / "records"
        self.ctrl_port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        """Start baresip and connect to its control port. Its SIP listens on UDP and TCP at sip_listen's
        port and for TLS on the one after it, and baresip exits when any of them is taken: so both ports,
        from devstack's range below the ephemeral ones (an ephemeral port + 1 can be any connection's)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.records.mkdir(exist_ok=True)
        self.ctrl_port = free_port()
        self._configure(sip_port=free_port(udp=True, span=2), rtp=free_port(udp=True, span=11))
        log = open(self.dir / "baresip.log", "wb")
        self.proc = await asyncio.create_subprocess_exec("baresip", "-f", str(self.dir), stdin=asyncio.subprocess.DEVNULL,
                                                         stdout=log, stderr=log)
        log.close()
        deadline = asyncio.get_running_loop().time() + 30
        while self.proc.returncode is None and asyncio.get_running_loop().time() < deadline:
            try:
                _, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"baresip did not start (exit {self.proc.returncode}):\n{self.log()[-2000:]}")

    def _configure(self, sip_port: int, rtp: int) -> None:
        (self.dir / "config").write_text(CONFIG.format(
            sip_port=sip_port, source=silence_wav(self.dir / "mic.wav", rate=self.rate, tone=self.tone),
            rtp_min=rtp, rtp_max=rtp + 10, ctrl_port=self.ctrl_port, records=self.records, rate=self.rate,
            tls=f"sip_certificate {self.tls[0]}\nsip_cafile {self.tls[1]}\n" if self.tls else ""))
        transport = ";transport=tls" if self.tls else ""
        mediaenc = f";mediaenc={self.mediaenc}" if self.mediaenc else ""
        (self.dir / "accounts").write_text(
            f"<sip:{self.number}@127.0.0.1{transport}>;regint=0;audio_codecs={self.codec}{mediaenc}\n")
        (self.dir / "contacts").write_text("")

    async def command(self, command: str, params: str = "") -> None:
        assert self._writer is not None
        self._writer.write(netstring({"command": command, "params": params, "token": command}))
        await self._writer.drain()

    def heard(self) -> tuple[np.ndarray, int]:
        """What the caller heard so far (the decoded audio sndfile keeps), and its sample rate. Read
        while baresip still writes it: the WAV header's sizes are filled in only at the end, so the
        samples are taken from after the "data" chunk's header, whatever its size says."""
        files = sorted(self.records.glob("dump-*-dec.wav"))
        raw = files[-1].read_bytes() if files else b""
        fmt, data = raw.find(b"fmt "), raw.find(b"data")
        if fmt < 0 or data < 0:
            return np.zeros(0, np.int16), 8000
        rate = int.from_bytes(raw[fmt + 12:fmt + 16], "little")
        pcm = raw[data + 8:]
        return np.frombuffer(pcm[:len(pcm) // 2 * 2], np.int16), rate

    def log(self) -> str:
        path = self.dir / "baresip.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
