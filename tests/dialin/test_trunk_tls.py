"""Trunk transport security and wideband codecs (issue #17): SIP over TLS with the trunk's client
certificate, SRTP keyed by SDES, and G.722 towards the trunk — with Debian's baresip as the trunk's
caller, against the dial-in service and a live meeting with WebRTC participants.

What the person does: calls over TLS with SRTP, keys the meeting ID, is let in, hears the room and is
heard. What an attacker with a way onto the trunk network tries: plain RTP to a trunk that must be
encrypted, a TLS client certificate from another CA, no client certificate."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from pathlib import Path

import numpy as np
import pytest
from aiosipua.sdp import Codec
from prometheus_client import REGISTRY

from devstack.embedded_db import free_port
from devstack.pki import Issued, make_ca, make_leaf
from services.dialin import voice
from services.dialin.config import DialinSettings
from tests.dialin.baresip import Baresip
from tests.dialin.test_baresip_caller import let_in
from tests.dialin.test_phone_caller import live_meeting_with_browsers, unidentified
from tests.dialin.tones import tone_share
from tests.polling import poll

SPEAKER_TONE = 440.0  # the coordinator's browser microphone (devstack.peers.SyntheticAudio)
CALLER_TONE = 1000.0
WIDEBAND_TONE = 6000.0  # above G.711's 4 kHz, within G.722's 7 kHz


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def pem(directory: Path, name: str, *issued: Issued, key: bool = False) -> str:
    path = directory / f"{name}.pem"
    path.write_text("".join(i.pem for i in issued) + (issued[0].key_pem if key else ""))
    return str(path)


class Pki:
    """The dial-in's server certificate (from the region's CA), the trunk's client certificate (from
    the trunk's CA, the one the service trusts) and an attacker's (from a CA of their own)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        region_ca, trunk_ca, foreign_ca = make_ca("Region Test CA"), make_ca("Trunk Test CA"), make_ca("Foreign CA")
        server = make_leaf(region_ca, "svpl-dialin", server_names=["127.0.0.1", "localhost"], mutual=True)
        self.trunk = make_leaf(trunk_ca, "sbc.region.test", server_names=["sbc.region.test"], mutual=True)
        self.foreign = make_leaf(foreign_ca, "sbc.region.test", server_names=["sbc.region.test"], mutual=True)
        self.dir = directory
        self.server_cert, self.server_key = pem(directory, "server", server), str(directory / "server.key")
        Path(self.server_key).write_text(server.key_pem)
        self.region_ca = pem(directory, "region-ca", region_ca)
        self.trunk_ca = pem(directory, "trunk-ca", trunk_ca)

    def client(self, issued: Issued, name: str) -> tuple[str, str]:
        """baresip's files: its certificate with its key, and the CA that issued the server's."""
        return pem(self.dir, name, issued, key=True), self.region_ca

    def settings(self, **extra) -> dict:
        return {"sip_tls_port": free_port(), "sip_tls_cert_file": self.server_cert,
                "sip_tls_key_file": self.server_key, "sip_tls_client_ca_file": self.trunk_ca,
                "require_srtp": True, **extra}


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
async def tls_world(dialin_factory, pki):
    return await dialin_factory(**pki.settings())


def recorded_share(phone: Baresip, freq: float) -> float:
    samples, rate = phone.heard()
    return tone_share(samples[-rate:], rate, freq) if len(samples) >= rate else 0.0


def tls_uri(world) -> str:
    return f"sip:dialin@127.0.0.1:{world.component.endpoint.tls_port};transport=tls"


@pytest.mark.slow
async def test_a_call_over_tls_with_srtp_enters_the_meeting_and_is_heard_both_ways(tls_world, pki, tmp_path):
    world = tls_world
    m, patient, speaker, listener, _ = await live_meeting_with_browsers(world)
    before = sample("svpl_dialin_answered_calls_total", {"codec": "PCMA", "media": "srtp", "transport": "tls"})
    rejected = sample("svpl_dialin_srtp_rejected_packets_total", {"kind": "srtp"})
    phone = Baresip(tmp_path / "baresip", "0707777712", tone=CALLER_TONE, mediaenc="srtp-mand",
                    tls=pki.client(pki.trunk, "trunk"))
    try:
        await phone.start()
        await let_in(world, phone, m, patient, tls_uri(world))
        assert sample("svpl_dialin_answered_calls_total",
                      {"codec": "PCMA", "media": "srtp", "transport": "tls"}) - before == 1
        # Both ways through SRTP: baresip (srtp-mand) decrypts the room's tone with our key, and the
        # bridge decrypts the caller's tone with theirs.
        await poll(lambda: recorded_share(phone, SPEAKER_TONE), timeout=30,
                   what=lambda: "the room's tone in what the caller recorded\n" + phone.log(),
                   until=lambda share: share >= 0.5)
        await poll(lambda: listener.hears(CALLER_TONE), timeout=30, what="the caller's tone at a WebRTC listener")
        # No media packet failed authentication. (baresip's RTCP sends a short APP packet in clear, and
        # its BYE at the end: SRTCP drops those, which counts them as kind "srtcp".)
        assert sample("svpl_dialin_srtp_rejected_packets_total", {"kind": "srtp"}) == rejected
        # The caller hangs up over the TLS connection: the BYE reaches the service.
        await phone.command("hangup")
        await poll(lambda: world.component.dialin.active == 0, timeout=10, what="the call ended by the caller's BYE")
    finally:
        await phone.stop()
        await speaker.close()
        await listener.close()


@pytest.mark.slow
async def test_plain_rtp_to_a_trunk_that_must_use_srtp_is_refused_488(tls_world, pki, tmp_path):
    """The attacker (or a misconfigured SBC): a valid TLS client certificate, but plain RTP offered."""
    world = tls_world
    m = await world.live()
    before = sample("svpl_dialin_calls_total", {"outcome": "plain_rtp_refused"})
    phone = Baresip(tmp_path / "baresip", "0708888812", tls=pki.client(pki.trunk, "trunk"))
    try:
        await phone.start()
        await phone.command("dial", tls_uri(world))
        await poll(lambda: sample("svpl_dialin_calls_total", {"outcome": "plain_rtp_refused"}) - before, timeout=15,
                   what=lambda: "the plain-RTP offer refused\n" + phone.log())
        await poll(lambda: "488" in phone.log(), timeout=5, what=lambda: "baresip told 488\n" + phone.log())
        assert world.component.dialin.active == 0
        assert await unidentified(world, m.meeting_id) == []
    finally:
        await phone.stop()


INVITE = ("INVITE sip:dialin@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-1;rport\r\n"
          "From: <sip:0709999912@127.0.0.1>;tag=1\r\nTo: <sip:dialin@127.0.0.1>\r\nCall-ID: attacker-1\r\n"
          "CSeq: 1 INVITE\r\nContact: <sip:0709999912@127.0.0.1:5099;transport=tls>\r\nContent-Length: 0\r\n\r\n")


async def tls_attempt(port: int, ca: str, client: Issued | None, directory: Path, invite: str = INVITE) -> bytes:
    """Connect with Python's TLS client (with `client`'s certificate, or none), send an INVITE and
    return what comes back up to the final response (b"" when the service closes the connection), or
    raise the TLS error."""
    context = ssl.create_default_context(cafile=ca)
    if client is not None:
        context.load_cert_chain(pem(directory, "attacker", client, key=True))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
    try:
        writer.write(invite.encode())
        await writer.drain()
        received = b""
        async with asyncio.timeout(10):
            while not re.search(rb"SIP/2\.0 [2-6]\d\d", received):
                more = await reader.read(1000)
                if not more:
                    break
                received += more
        return received
    finally:
        writer.close()


@pytest.mark.slow
async def test_a_tls_client_with_a_foreign_or_no_certificate_is_refused_before_any_sip(tls_world, pki):
    world = tls_world
    port = world.component.endpoint.tls_port
    before = sample("svpl_dialin_tls_handshakes_total", {"result": "refused"})
    for client in (pki.foreign, None):
        try:
            answer = await tls_attempt(port, pki.region_ca, client, pki.dir)
        except (ssl.SSLError, ConnectionError):
            answer = b""
        assert not answer.startswith(b"SIP/2.0")
    assert sample("svpl_dialin_tls_handshakes_total", {"result": "refused"}) - before == 2
    assert world.component.dialin.active == 0
    # The trunk's own certificate is let through to SIP (a 488 here: its INVITE offers no audio). Our
    # Contact keeps the trunk on TLS: transport=tls, or a SIPS URI where the dialog began with one.
    answer = await tls_attempt(port, pki.region_ca, pki.trunk, pki.dir)
    assert b"SIP/2.0 488" in answer and f"<sip:127.0.0.1:{port};transport=tls>".encode() in answer, answer
    answer = await tls_attempt(port, pki.region_ca, pki.trunk, pki.dir,
                               INVITE.replace("sip:dialin@", "sips:dialin@").replace("attacker-1", "trunk-2"))
    assert b"SIP/2.0 488" in answer and f"Contact: <sips:127.0.0.1:{port}>".encode() in answer, answer


@pytest.mark.slow
async def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(tls_world, pki):
    """cert-manager renews the Secret and the kubelet swaps its files: the next connection gets the new
    certificate (here from a new CA, so a client that trusts only the old one sees the change)."""
    world = tls_world
    port = world.component.endpoint.tls_port
    assert b"SIP/2.0 488" in await tls_attempt(port, pki.region_ca, pki.trunk, pki.dir)
    new_ca = make_ca("Region Test CA 2")
    renewed = make_leaf(new_ca, "svpl-dialin", server_names=["127.0.0.1", "localhost"], mutual=True)
    new_ca_file = pem(pki.dir, "region-ca-2", new_ca)
    for name, text in ((pki.server_key, renewed.key_pem), (pki.server_cert, renewed.pem)):
        Path(name + ".new").write_text(text)
        os.replace(name + ".new", name)  # a new inode, as the kubelet's swap
    with pytest.raises(ssl.SSLCertVerificationError):
        await tls_attempt(port, pki.region_ca, pki.trunk, pki.dir)
    assert b"SIP/2.0 488" in await tls_attempt(port, new_ca_file, pki.trunk, pki.dir)


@pytest.mark.slow
@pytest.mark.parametrize(("codec", "offer", "rate"), [("G722", "G722/16000/1", 16000), ("opus", "opus/48000/2", 48000)])
async def test_a_wideband_call_carries_a_6_khz_tone_into_the_room(dialin_factory, tmp_path, codec, offer, rate):
    """Wideband: the caller's 6 kHz tone reaches a WebRTC listener through a G.722 call and through an
    Opus call (G.711 could not carry it: see the codec test below). baresip offers only that codec, and
    the service, preferring Opus, answers with it (the answered-calls metric names the codec)."""
    world = await dialin_factory()
    m, patient, speaker, listener, _ = await live_meeting_with_browsers(world)
    before = sample("svpl_dialin_answered_calls_total", {"codec": codec, "media": "rtp", "transport": "udp"})
    wide = Baresip(tmp_path / codec, "0707777712", codec=offer, rate=rate, tone=WIDEBAND_TONE)
    try:
        await wide.start()
        await let_in(world, wide, m, patient, f"sip:dialin@{world.sip[0]}:{world.sip[1]}")
        assert sample("svpl_dialin_answered_calls_total",
                      {"codec": codec, "media": "rtp", "transport": "udp"}) - before == 1
        await poll(lambda: listener.hears(WIDEBAND_TONE), timeout=30,
                   what=lambda: f"the caller's 6 kHz tone at a WebRTC listener, through {codec}\n" + wide.log())
    finally:
        await wide.stop()
        await speaker.close()
        await listener.close()


def test_codec_preference_is_ours_not_the_offers():
    offer = [Codec(0, "PCMU", 8000), Codec(8, "PCMA", 8000), Codec(9, "G722", 8000), Codec(111, "opus", 48000, 2),
             Codec(101, "telephone-event", 8000)]
    assert voice.choose(offer, voice.PREFERENCE) == voice.Choice("opus", 111, 48000)
    assert voice.choose(offer, ("G722", "PCMA")) == voice.Choice("G722", 9, 8000)
    assert voice.choose(offer, ("G722",)).timestamp_step == 160  # RFC 3551: G.722's clock is 8000
    assert voice.choose(offer[:2], ("G722", "PCMA")) == voice.Choice("PCMA", 8, 8000)
    assert voice.choose([Codec(0, "", 0)], voice.PREFERENCE) == voice.Choice("PCMU", 0, 8000)  # static, no rtpmap
    assert voice.choose(offer[2:3], ("PCMA", "PCMU")) is None


def test_settings_refuse_tls_without_files_srtp_without_tls_and_unknown_codecs():
    key = "k" * 40
    base = {"connection_key": key, "trunk_networks": ["10.0.0.0/24"]}
    with pytest.raises(ValueError, match="sip_tls_cert_file"):
        DialinSettings(**base, sip_tls_port=5061)
    with pytest.raises(ValueError, match="require_srtp needs SIP over TLS"):
        DialinSettings(**base, require_srtp=True)
    assert DialinSettings(**base, require_srtp=True, sdes_over_insecure=True).require_srtp
    with pytest.raises(ValueError, match="codecs"):
        DialinSettings(**base, codecs=["G729"])
    with pytest.raises(ValueError, match="codecs"):
        DialinSettings(**base, codecs=["PCMA", "pcma"])
    assert DialinSettings(**base, codecs=["g722", "pcma"]).codecs == ["G722", "PCMA"]


@pytest.mark.parametrize(("name", "kept"), [("G722", True), ("opus", True), ("PCMA", False), ("PCMU", False)])
def test_a_6_khz_tone_survives_the_wideband_codecs_and_g711_drops_it_without_an_alias(name, kept):
    """Through each codec as the call uses it (16 kHz frames in and out): G.722 and Opus keep 6 kHz;
    G.711 cannot carry it, and its 16 → 8 kHz step filters it instead of folding it to 2 kHz."""
    rate = 16000
    t = np.arange(rate) / rate
    tone = (np.sin(2 * np.pi * WIDEBAND_TONE * t) * 8000).astype(np.int16).tobytes()
    choice = voice.choose([Codec(111, name, voice.KNOWN[name][0])], (name,))
    assert choice is not None
    codec = voice.codec(choice)
    frame = 640
    out = b"".join(codec.decode(codec.encode(tone[i:i + frame])) for i in range(0, len(tone), frame))
    heard = np.frombuffer(out, np.int16)[-rate // 2:]
    if kept:
        assert tone_share(heard, rate, WIDEBAND_TONE) > 0.9
    else:
        # Nothing comes out (below -30 dB of the tone): neither the tone nor its 2 kHz alias.
        rms = float(np.sqrt(np.mean(heard.astype(np.float64) ** 2)))
        assert rms < 8000 / np.sqrt(2) * 10 ** (-30 / 20), rms
