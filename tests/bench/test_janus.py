"""The bench-media Janus baseline: its driver really moves media both ways through a real Janus, the
report shows svpl next to Janus, and the Janus it starts answers its API on loopback only."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from bench import janus, media
from bench.media_peers import encode_clip
from services.identity.tokens import KeyRing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def janus_installed() -> None:
    """Janus is a benchmark dependency, not a test one: installed by the bench's own step when missing."""
    if shutil.which("janus") is None:
        subprocess.run([str(ROOT / janus.INSTALL)], check=True)


@pytest.fixture
async def server(janus_installed, tmp_path):
    s = janus.JanusServer(tmp_path)
    try:
        await s.ready()
        yield s
    finally:
        s.stop()


async def test_two_participants_receive_each_others_audio_and_video_through_janus(server, monkeypatch):
    video, audio = encode_clip()
    monkeypatch.setitem(media.CLIP, "video", [base64.b64encode(p).decode() for p in video])
    monkeypatch.setitem(media.CLIP, "audio", [base64.b64encode(p).decode() for p in audio])
    monkeypatch.setattr(media, "MEASURE", 3.0)
    monkeypatch.setattr(media, "WARMUP", 1.0)

    r = await media.run_case("janus", [media.Server(server.pid, server.url)], 1, 2, KeyRing.generate(),
                             {"gateway": ""}, processes=1)

    assert r["streams"] == 2
    assert r["min_fps"] > 0, "a participant received no complete video frame through Janus"
    assert r["min_audio"] > 0, "a participant received no audio through Janus"
    assert r["decoded"] > 0, "what Janus forwarded did not decode as VP8"
    assert r["cpu"] > 0, "Janus's CPU was not read"


def result(target: str, per_stream: float, min_fps: float) -> dict:
    return {"target": target, "rooms": 1, "n": 10, "streams": 90, "per_stream": per_stream, "min_fps": min_fps}


def test_the_report_shows_svpl_next_to_janus_with_the_spread_and_the_ratio_of_each_run():
    runs = [result("sfu", 0.30, 15.0), result("janus", 0.25, 15.0), result("janus", 0.20, 14.5), result("sfu", 0.32, 14.0),
            result("relay", 12.0, 15.0)]

    header, row = media.comparison(runs)

    assert header.split() == ["rooms", "x", "N", "streams", "runs", "svpl", "%/stream", "Janus", "%/stream",
                              "svpl/Janus", "svpl", "min", "fps", "Janus", "min", "fps"]
    assert row.split() == ["1", "x", "10", "90", "2", "0.30-0.32", "0.20-0.25", "1.20-1.60", "14.0-15.0", "14.5-15.0"]


async def test_janus_answers_its_api_on_loopback_only_with_the_videoroom_alone(server):
    """Nobody else on the network can drive the benchmark's Janus, and nothing but the videoroom and
    the HTTP transport is loaded (no admin API, no recording plugins)."""
    port = int(server.url.split(":")[2].split("/")[0])
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect((janus.host_address(), port))
    async with httpx.AsyncClient() as http:
        info = (await http.get(f"{server.url}/info")).json()
    assert list(info["plugins"]) == ["janus.plugin.videoroom"]
    assert list(info["transports"]) == ["janus.transport.http"]


async def test_a_request_janus_refuses_raises_with_its_error_instead_of_hanging(server):
    async with janus.JanusClient(server.url) as client:
        handle = await client.attach()
        with pytest.raises(janus.JanusError) as refused:
            await client.request(handle, {"request": "join", "ptype": "subscriber", "room": 4242, "streams": [{"feed": 1}]})
    assert refused.value.code == 426  # JANUS_VIDEOROOM_ERROR_NO_SUCH_ROOM
