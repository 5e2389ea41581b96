"""Debian's SIPp (sip-tester) as the phone caller, for tests/dialin and bench/dialin.py: a scenario
file per call (INVITE with a G.711 offer, keys as RFC 4733 telephone events or SIP INFO, audio, then wait for the service's BYE),
and the RTP it plays as a pcap written here (keys with distinct timestamps, so "11" is two presses;
SIPp's own dtmf_2833_N.pcap files share one timestamp per digit)."""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

SIPP = "sipp"
EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
PCMA = 8
TELEPHONE_EVENT = 101


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pcap(path: Path, packets: list[tuple[float, bytes]], src_port: int = 6000, dst_port: int = 6002) -> Path:
    """A pcap (Ethernet/IPv4/UDP) of RTP payloads at the given times (seconds), as SIPp replays them."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for t, rtp in packets:
        udp = struct.pack(">HHHH", src_port, dst_port, 8 + len(rtp), 0) + rtp
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([127, 0, 0, 1]),
                         bytes([127, 0, 0, 1])) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        out.append(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return path


def rtp(pt: int, seq: int, ts: int, payload: bytes, marker: bool = False, ssrc: int = 0x5350_4C31) -> bytes:
    return struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def keys_packets(keys: str, start: float = 0.0, seq: int = 1000, ts: int = 8000) -> list[tuple[float, bytes]]:
    """RFC 4733 events: each key 100 ms (5 updates, then 3 end packets), 150 ms apart."""
    packets = []
    t = start
    for key in keys:
        event = EVENTS[key]
        for i in range(1, 6):
            end = i == 5
            payload = struct.pack(">BBH", event, (0x80 if end else 0) | 10, i * 160)
            for _ in range(3 if end else 1):
                packets.append((t + i * 0.02, rtp(TELEPHONE_EVENT, seq, ts, payload, marker=i == 1)))
                seq += 1
        t += 0.25
        ts += 2000
    return packets


def alaw(pcm: np.ndarray) -> bytes:
    """16-bit PCM to G.711 A-law (FFmpeg's encoder, through PyAV)."""
    codec = av.CodecContext.create("pcm_alaw", "w")
    codec.sample_rate, codec.format, codec.layout = 8000, "s16", "mono"
    frame = av.AudioFrame.from_ndarray(pcm.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8000
    return b"".join(bytes(p) for p in codec.encode(frame))


def tone_packets(freq: float, seconds: float, start: float = 0.0, seq: int = 5000, ts: int = 100000,
                 level: int = 12000) -> list[tuple[float, bytes]]:
    """A sine tone as 20 ms PCMA packets."""
    n = int(seconds * 50)
    samples = (np.sin(2 * np.pi * freq * np.arange(n * 160) / 8000) * level).astype(np.int16)
    encoded = alaw(samples)
    return [(start + i * 0.02, rtp(PCMA, seq + i, ts + i * 160, encoded[i * 160:(i + 1) * 160], marker=i == 0))
            for i in range(n)]


INVITE = """INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Uppringare" <sip:{number}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
{authorization}Contact: <sip:{number}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 0 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
"""

ACK = """ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: {cseq} ACK
Contact: <sip:{number}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

"""

# The ACK of a non-2xx final answer (the 401 challenge) belongs to the INVITE's transaction: its Via.
ACK_ERROR = """ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

"""

INFO = """INFO sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: {cseq} INFO
Contact: <sip:{number}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/dtmf-relay
Content-Length: [len]

Signal={key}
Duration=160
"""

BYE = """BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: {cseq} BYE
Max-Forwards: 70
Content-Length: 0

"""

BYE_OK = """SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{number}@[local_ip]:[local_port]>
Content-Length: 0

"""


def _cdata(text: str) -> str:
    return f"<![CDATA[\n{text}\n]]>"


@dataclass
class Step:
    """One part of the caller's behaviour after the call is answered."""

    xml: str


def pause(ms: int) -> Step:
    return Step(f'<pause milliseconds="{ms}"/>')


def play(path: Path) -> Step:
    return Step(f'<nop><action><exec play_pcap_audio="{path}"/></action></nop>')


def info_keys(keys: str, number: str, first_cseq: int = 2) -> Step:
    parts = []
    for i, key in enumerate(keys):
        parts.append(f"<send>{_cdata(INFO.format(number=number, key=key, cseq=first_cseq + i))}</send>")
        parts.append('<recv response="200"/>')
        parts.append('<pause milliseconds="150"/>')
    return Step("\n".join(parts))


def scenario(path: Path, number: str, steps: list[Step], expect: str = "bye", bye_within_ms: int = 120000,
             refused: int = 0, digest: bool = False) -> Path:
    """INVITE from `number`; `refused`: expect that final status instead of 200 (then ACK and stop).
    Else ACK, the steps, then wait for the service's BYE (within bye_within_ms) and answer it, or
    (expect="hangup") hang up: BYE, and its 200.
    `digest`: the first INVITE is challenged (401), and sent again with SIPp's digest credentials
    (run with `credentials`)."""
    cseq = 2 if digest else 1
    body = [f'<send retrans="500">{_cdata(INVITE.format(number=number, cseq=1, authorization=""))}</send>',
            '<recv response="100" optional="true"/>']
    if digest:
        again = INVITE.format(number=number, cseq=2, authorization="[authentication]\n")
        body += ['<recv response="401" auth="true"/>', f"<send>{_cdata(ACK_ERROR.format(cseq=1))}</send>",
                 f'<send retrans="500">{_cdata(again)}</send>', '<recv response="100" optional="true"/>']
    if refused:
        ack = ACK_ERROR.format(cseq=2) if digest else ACK.format(number=number, cseq=cseq)
        body.append(f'<recv response="{refused}"/>')
        body.append(f"<send>{_cdata(ack)}</send>")
    else:
        body.append('<recv response="200" rtd="true"/>')
        body.append(f"<send>{_cdata(ACK.format(number=number, cseq=cseq))}</send>")
        body += [s.xml for s in steps]
        if expect == "hangup":
            body += [f'<send retrans="500">{_cdata(BYE.format(cseq=cseq + 1))}</send>', '<recv response="200"/>']
        else:
            body.append(f'<recv request="BYE" timeout="{bye_within_ms}"/>')
            body.append(f"<send>{_cdata(BYE_OK.format(number=number))}</send>")
    xml = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="svpl dial-in">\n' + "\n".join(body) + \
        "\n</scenario>\n"
    path.write_text(xml, encoding="iso-8859-1")
    return path


async def run(scenario_path: Path, target: tuple[str, int], local_port: int, media_port: int,
              call_seconds: float = 120.0, echo: bool = False,
              credentials: tuple[str, str] | None = None) -> asyncio.subprocess.Process:
    """Start SIPp for one call (it exits 0 when the scenario completed, 1 when it failed). `echo`:
    SIPp sends every RTP packet it receives straight back (-rtp_echo); `credentials`: the digest
    username and password SIPp answers a challenge with."""
    log_dir = scenario_path.parent
    auth = ["-au", credentials[0], "-ap", credentials[1]] if credentials else []
    return await asyncio.create_subprocess_exec(
        SIPP, *(["-rtp_echo"] if echo else []), *auth, f"{target[0]}:{target[1]}", "-sf", str(scenario_path), "-m", "1",
        "-i", "127.0.0.1", "-p", str(local_port), "-mi", "127.0.0.1", "-mp", str(media_port), "-s", "dialin",
        "-timeout", f"{int(call_seconds)}s", "-nostdin", "-trace_err", "-error_file", str(log_dir / "sipp-errors.log"),
        "-trace_msg", "-message_file", str(log_dir / "sipp-messages.log"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=str(log_dir))
