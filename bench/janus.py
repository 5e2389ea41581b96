"""Janus WebRTC Server (C, Debian package `janus`, videoroom plugin) as the compiled-SFU baseline of
`make bench-media`, driven by the same synthetic participants as our media service.

- `JanusServer`: a fresh `janus` process per case, from a generated configuration directory: the
  videoroom plugin and the plain-HTTP transport only, `event_loops` = the number of cores (its best
  setting on this machine, issue #21; by default Janus runs one thread per handle), ICE on the
  host's own non-loopback address (libnice never gathers 127.0.0.1; the traffic still never leaves
  the machine, a packet to one's own address goes through the kernel's loopback).
- `JanusClient`: the Janus HTTP API (one session, a long poll for the plugin's events), with the
  message shapes of Janus's own documentation (src/mainpage.dox, plugins/janus_videoroom.c).
  Hand-written: there is no maintained Python client for it (aiortc's examples/janus is a demo),
  and the API is four POSTs and a GET.
- `JanusParticipant`: one participant as a browser would do it with Janus >= 1.0: a publisher handle
  (audio + video, our offer, Janus's answer) and one multistream subscriber handle receiving every
  other participant's audio and video (Janus's offer, our answer). Its subscriber slots are counted
  as bench/media_peers.py counts ours.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from aiortc import RTCSessionDescription

from bench.media_peers import (
    SETUP_TIMEOUT,
    SOCKET_BUFFER,
    Participant,
    loopback_only,
    new_connection,
    participants,
    publish,
)
from services.media.forwarding import enlarge_socket_buffers

NO_SUCH_FEED = 428  # JANUS_VIDEOROOM_ERROR_NO_SUCH_FEED: the publisher's PeerConnection is not up yet
INSTALL = "scripts/bench-deps.sh"


def host_address() -> str:
    """The host's own non-loopback IPv4 address (where the default route leaves from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))  # TEST-NET-2; no packet is sent: connect() on UDP only picks the route
            address = str(s.getsockname()[0])
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        raise RuntimeError("Janus needs a non-loopback IPv4 address and this host has none: add one, e.g. "
                           "`ip link add bench0 type dummy && ip addr add 10.254.0.1/32 dev bench0 && ip link set bench0 up`")
    return address


def binary() -> str:
    found = shutil.which("janus")
    if not found:
        raise RuntimeError(f"janus is not installed: run {INSTALL} (make bench-media does)")
    return found


def version() -> str:
    """The installed Janus's version, e.g. "1.1.2" (from `janus --version`)."""
    out = subprocess.run([binary(), "--version"], capture_output=True, text=True).stdout  # it exits 1
    return next((line.split("(")[-1].rstrip(")") for line in out.splitlines() if line.startswith("Janus version")), "?")


def installed() -> Path:
    """The Debian package's module folder (/usr/lib/<multiarch>/janus)."""
    found = next(Path("/usr/lib").glob("*/janus/plugins/libjanus_videoroom.so"), None)
    if found is None:
        raise RuntimeError(f"janus's videoroom plugin is not installed: run {INSTALL} (make bench-media does)")
    return found.parent.parent


def write_config(folder: Path, address: str, http_port: int, event_loops: int) -> Path:
    """janus.jcfg, the videoroom and the HTTP transport; every other plugin, transport, logger and
    event handler stays unloaded (an empty folder for the last two)."""
    modules = installed()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty").mkdir(exist_ok=True)

    def others(kind: str, keep: str) -> str:
        return ",".join(sorted(p.name for p in (modules / kind).glob("*.so") if p.name != keep))

    (folder / "janus.jcfg").write_text(f"""general: {{
	configs_folder = "{folder}"
	plugins_folder = "{modules / 'plugins'}"
	transports_folder = "{modules / 'transports'}"
	events_folder = "{folder / 'empty'}"
	loggers_folder = "{folder / 'empty'}"
	debug_level = 3
	debug_colors = false
	session_timeout = 0
	event_loops = {event_loops}
}}
media: {{
	no_media_timer = 0
}}
nat: {{
	ice_enforce_list = "{address}"
}}
plugins: {{
	disable = "{others('plugins', 'libjanus_videoroom.so')}"
}}
transports: {{
	disable = "{others('transports', 'libjanus_http.so')}"
}}
events: {{
	broadcast = false
}}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
	json = "plain"
	base_path = "/janus"
	http = true
	port = {http_port}
	ip = "127.0.0.1"
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")  # rooms are created per case
    return folder / "janus.jcfg"


class JanusServer:
    """One janus process with its own configuration folder; `url` is its HTTP API."""

    def __init__(self, workdir: Path, event_loops: int | None = None) -> None:
        self.folder = workdir / f"janus-{uuid.uuid4().hex[:8]}"
        self.address = host_address()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/janus"
        config = write_config(self.folder, self.address, port, event_loops or os.cpu_count() or 1)
        self.log = self.folder / "janus.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen([binary(), "-C", str(config), "-F", str(self.folder)],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.process.pid

    async def ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"janus exited with {self.process.returncode}: {self.tail()}")
                try:
                    info = (await http.get(f"{self.url}/info", timeout=1)).json()
                    if "janus.plugin.videoroom" in info.get("plugins", {}):
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"janus did not answer on {self.url}: {self.tail()}")
                await asyncio.sleep(0.2)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


class JanusError(RuntimeError):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"janus error {code}: {reason}")
        self.code = code


class JanusClient:
    """One Janus session over the HTTP API; plugin events arrive on a long poll and are matched to
    the request by transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(timeout=SETUP_TIMEOUT)
        self.session = ""
        self.waiting: dict[str, asyncio.Future[dict]] = {}
        self.poller: asyncio.Task | None = None

    async def __aenter__(self) -> JanusClient:
        self.session = f"{self.url}/{(await self.post(self.url, {'janus': 'create'}))['data']['id']}"
        self.poller = asyncio.ensure_future(self.poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.poller:
            self.poller.cancel()
        try:
            await self.post(self.session, {"janus": "destroy"})
        except (httpx.HTTPError, JanusError):
            pass  # the server may be gone already
        await self.http.aclose()

    async def post(self, url: str, message: dict) -> dict:
        transaction = uuid.uuid4().hex
        reply = (await self.http.post(url, json={**message, "transaction": transaction})).json()
        if reply["janus"] == "error":
            raise JanusError(reply["error"]["code"], reply["error"]["reason"])
        if reply["janus"] == "ack":  # the answer comes as an event on the long poll
            future = self.waiting.setdefault(transaction, asyncio.get_running_loop().create_future())
            reply = await asyncio.wait_for(future, SETUP_TIMEOUT)
            self.waiting.pop(transaction, None)
        return reply

    async def poll(self) -> None:
        while True:
            try:
                events = (await self.http.get(self.session, params={"maxev": 10})).json()
            except httpx.TransportError:  # a long poll cut short (a saturated machine): poll again
                continue
            for event in events if isinstance(events, list) else [events]:
                transaction = event.get("transaction")
                if event.get("janus") == "event" and transaction:
                    future = self.waiting.setdefault(transaction, asyncio.get_running_loop().create_future())
                    if not future.done():
                        future.set_result(event)

    async def attach(self) -> str:
        reply = await self.post(self.session, {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        return f"{self.session}/{reply['data']['id']}"

    async def request(self, handle: str, body: dict, jsep: RTCSessionDescription | None = None) -> tuple[dict, dict | None]:
        """A videoroom request; returns the plugin's data and the JSEP that came with it."""
        message: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:  # every candidate is in the SDP: no trickle
            message["jsep"] = {"type": jsep.type, "sdp": jsep.sdp, "trickle": False}
        reply = await self.post(handle, message)
        data = reply["plugindata"]["data"]
        if "error_code" in data:
            raise JanusError(data["error_code"], data["error"])
        return data, reply.get("jsep")


async def create_room(url: str, room: int, participants: int) -> None:
    """A videoroom for `participants` publishers, Janus's defaults otherwise (VP8, Opus), and no
    periodic keyframe requests (`fir_freq` 0: our media service sends none either)."""
    async with JanusClient(url) as janus:
        handle = await janus.attach()
        await janus.request(handle, {"request": "create", "room": room, "publishers": participants,
                                     "fir_freq": 0, "bitrate": 0, "permanent": False})


class JanusParticipant(Participant):
    """A publisher connection and a multistream subscriber connection to every other participant.

    spec: {"room": <number>, "feed": <this participant's publisher id>, "others": [<feed ids>],
    "address": <Janus's HTTP API URL>, "slots": <len(others)>}."""

    def __init__(self, spec: dict, clip: tuple[list[bytes], list[bytes]], decode_one: bool) -> None:
        self.spec = spec
        self.decode_one = decode_one
        self.pc = new_connection()  # the subscriber connection: its slots are counted
        self.publisher = new_connection()
        self.video, self.audio = publish(self.publisher, *clip)
        self.slots = []
        self.light = {}

    async def close(self) -> None:
        await super().close()
        await self.publisher.close()

    async def publish(self, janus: JanusClient) -> None:
        handle = await janus.attach()
        await janus.request(handle, {"request": "join", "ptype": "publisher", "room": self.spec["room"],
                                     "id": self.spec["feed"]})
        await self.publisher.setLocalDescription(await self.publisher.createOffer())
        enlarge_socket_buffers(self.publisher, SOCKET_BUFFER)
        _, answer = await janus.request(handle, {"request": "publish"}, self.publisher.localDescription)
        if answer is None:
            raise RuntimeError("janus answered a publish without SDP")
        await self.publisher.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def subscribe(self, janus: JanusClient, timeout: float = SETUP_TIMEOUT) -> None:
        """Every other participant's audio and video on one connection, once their publishers are up."""
        handle = await janus.attach()
        body = {"request": "join", "ptype": "subscriber", "room": self.spec["room"],
                "streams": [{"feed": feed} for feed in self.spec["others"]]}
        deadline = time.monotonic() + timeout
        while True:  # a publisher in the other load generator may not be connected yet
            try:
                _, offer = await janus.request(handle, body)
                break
            except JanusError as e:
                if e.code != NO_SUCH_FEED or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        if offer is None:
            raise RuntimeError("janus attached a subscriber without SDP")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        for transceiver in self.pc.getTransceivers():
            self.add_slot(transceiver)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        enlarge_socket_buffers(self.pc, SOCKET_BUFFER)
        await janus.request(handle, {"request": "start"}, self.pc.localDescription)
        self.count_light(offer["sdp"])  # Janus's offer names the SSRC it sends on each slot


async def join(cfg: dict, stack: AsyncExitStack) -> list[JanusParticipant]:
    """The load generator's participants, published and subscribed through one Janus session that
    stays open (closing it would end their handles) until `stack` closes."""
    loopback_only(host_address())
    people = participants(cfg, JanusParticipant)
    janus = await stack.enter_async_context(JanusClient(cfg["participants"][0]["address"]))
    for p in people:  # one after the other, as the load generator joins our media service
        await p.publish(janus)
    for p in people:
        await p.subscribe(janus)
    return people
