"""The only module that touches the SIP stack: aiosipua (RFC 3261 transactions and dialogs, SDP
offer/answer) and aiortp (RTP/RTCP, its jitter buffer, G.711 A-law/µ-law, RFC 4733 telephone events).

Why these (evaluated for issue #17, see docs/DIALIN.md): both are asyncio-native and pure Python,
so a call lives in the same event loop as the aiortc peer connection it is bridged to, with no
thread hand-over per 20 ms frame. PJSIP's `pjsua2-python` wheels are the most complete stack (TLS,
SRTP, a tuned jitter buffer) but run their own worker threads and sound-device clock, and need
a registered-thread dance for every callback into Python; `sippy` is a threaded B2BUA without RTP.

Private names used (pinned in pyproject.toml; tests/dialin/test_sip_stack.py trips if they move):
`UdpSipTransport._udp_transport` / `_dispatch` (see _UdpTransport), `SipUAS._handlers` (to add SIP
INFO, the DTMF fallback, which aiosipua answers 405), `SipUAS._send_error`
(INFO outside a dialog: 481), `SipUAS._calls` (to forget a call we ended ourselves, which aiosipua keeps
until a BYE arrives), `IncomingCall._send_response` (a 401 with its WWW-Authenticate challenge:
aiosipua's public `reject` takes no headers) and `Call._incoming` within this module.

Trunk digest authentication (RFC 3261 §22, RFC 2617 with qop=auth): aiosipua implements the
client side only (answering a challenge). The server side here reuses its parser and its response
computation (`aiosipua.auth.build_credentials`) and adds only what a server must: a nonce it can
check without keeping state (time-stamped and HMAC-signed, so any instance can check it, and it goes
stale), and the comparison in constant time."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiortp import PortAllocator
from aiosipua import (
    AuthChallenge,
    CallSession,
    IncomingCall,
    SipDigestAuth,
    SipRequest,
    SipUAS,
    UdpSipTransport,
    parse_auth,
)
from aiosipua.auth import build_credentials

from services.dialin.audio import FRAME_BYTES, FRAME_SAMPLES, RATE, SILENCE
from services.dialin.entry import caller_number

log = logging.getLogger("svpl.dialin.sip")

PCMA, PCMU = 8, 0
# Packets aiortp's jitter buffer holds before it delivers (its default is 4, 80 ms): 2 rides out the
# reordering a trunk shows and keeps the bridge's added delay down (make bench-dialin).
JITTER_PREFETCH = 2
USER_AGENT = "svpl-dialin"
# RFC 4733 key names (aiortp's) and SIP INFO's (application/dtmf-relay "Signal=").
KEYS = frozenset("0123456789*#")
INFO_SIGNAL = re.compile(r"^\s*Signal\s*=\s*(\S)", re.IGNORECASE | re.MULTILINE)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, owner: _UdpTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._owner._dispatch(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.warning("SIP UDP error: %s", exc)


class _UdpTransport(UdpSipTransport):
    """aiosipua's UDP transport, bound without its protocol's `isinstance(transport,
    asyncio.DatagramTransport)` assertion: Python 3.11's selector datagram transport is not a
    subclass of it (3.12's is), so aiosipua logs a traceback at every start on 3.11."""

    async def start(self) -> None:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=self.local_addr)
        self._udp_transport = transport


class SrtpOffered(ValueError):
    """The offer is SRTP only (RTP/SAVP): not supported here (docs/DIALIN.md), so 488."""


class Call:
    """One incoming call: answer with audio, the caller's keys, play frames to them, hang up."""

    def __init__(self, endpoint: Endpoint, incoming: IncomingCall) -> None:
        self._endpoint = endpoint
        self._incoming = incoming
        self.source: tuple[str, int] = incoming.source_addr
        # The trunk asserts the caller's identity (RFC 3325) where it can; else the From user.
        invite = incoming.invite
        self.number = caller_number(invite.get_header("p-asserted-identity") or "") or caller_number(
            incoming.caller)
        self.keys: asyncio.Queue[str] = asyncio.Queue()
        self.ended = asyncio.Event()  # the caller hung up (BYE / CANCEL), or we did
        self.on_audio: Callable[[bytes], None] | None = None
        self.source_audio: Callable[[], bytes] | None = None  # what the caller hears when no prompt plays
        self._session: CallSession | None = None
        self._port = 0
        self._queue: list[bytes] = []
        self._played = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self.codec = ""

    @property
    def call_id(self) -> str:
        return self._incoming.call_id

    @property
    def request_uri(self) -> str:
        return self._incoming.invite.uri

    @property
    def authorization(self) -> str:
        """The INVITE's Authorization header ("" without one)."""
        return self._incoming.invite.get_header("authorization") or ""

    def reject(self, status: int, reason: str = "") -> None:
        self._incoming.reject(status, reason)
        self._endpoint.forget(self)
        self.ended.set()

    def challenge(self, www_authenticate: str) -> None:
        """401 Unauthorized with a digest challenge; the trunk sends the INVITE again with its credentials."""
        self._incoming._send_response(401, "Unauthorized", extra_headers={"WWW-Authenticate": www_authenticate})
        self._incoming.dialog.terminate()
        self._endpoint.forget(self)
        self.ended.set()

    async def answer(self) -> None:
        """200 OK with our SDP answer (PCMA or PCMU, as the offer prefers; telephone-event at the
        offer's payload type); then RTP both ways and the 20 ms send clock."""
        offer = self._incoming.sdp_offer
        if offer is None or offer.audio is None:
            self.reject(488, "Not Acceptable Here")
            raise ValueError("INVITE without an audio offer")
        if "SAVP" in offer.audio.proto.upper():
            # aiosipua would echo RTP/SAVP in the answer and send plain RTP: refuse instead, clearly.
            self.reject(488, "Not Acceptable Here")
            raise SrtpOffered(f"the offer's audio is {offer.audio.proto} (SRTP), which this service does not speak")
        events = [c.payload_type for c in offer.audio.codecs if c.encoding_name.lower() == "telephone-event"]
        self._port, _ = await self._endpoint.ports.allocate()
        try:
            self._session = CallSession(self._endpoint.host, self._port, offer, supported_codecs=[PCMA, PCMU],
                                        advertised_ip=self._endpoint.advertised_ip or None,
                                        dtmf_payload_type=events[0] if events else 101, symmetric_rtp=True,
                                        jitter_prefetch=JITTER_PREFETCH)
            await self._session.start()
        except ValueError:  # nothing we can speak (no G.711 offered)
            await self._endpoint.ports.release(self._port)
            self.reject(488, "Not Acceptable Here")
            raise
        self.codec = "PCMA" if self._session.chosen_payload_type == PCMA else "PCMU"
        self._session.on_audio = lambda pcm, _ts: self.on_audio(pcm) if self.on_audio else None
        self._session.on_dtmf = lambda key, _duration: self.key(key)
        self._incoming.accept(self._session.sdp_answer)
        self._sender = asyncio.ensure_future(self._send())

    def rtp_stats(self) -> dict:
        """The call's RTP receive statistics (aiortp's public CallSession.stats: packets received and
        lost, RFC 3550 jitter in timestamp units, concealed frames); empty before answer / after close."""
        return dict(self._session.stats) if self._session is not None else {}

    def key(self, key: str) -> None:
        if key in KEYS:
            self.keys.put_nowait(key)

    def start_playing(self, frames: list[bytes]) -> None:
        """Play 20 ms frames to the caller now (instead of what was playing)."""
        self._queue = list(frames)
        self._played.clear()

    async def play(self, frames: list[bytes]) -> None:
        """Play 20 ms frames to the caller now; returns when played, or at once if the call ended."""
        self.start_playing(frames)
        waiter = asyncio.ensure_future(self._played.wait())
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            ended.cancel()

    def stop_playing(self) -> None:
        self._queue = []
        self._played.set()

    async def _send(self) -> None:
        """One frame every 20 ms on an absolute clock: a prompt frame, else the room's mix, else silence."""
        start, n = time.monotonic(), 0
        while not self.ended.is_set():
            if self._queue:
                pcm = self._queue.pop(0)
                if not self._queue:
                    self._played.set()
            else:
                pcm = self.source_audio() if self.source_audio else SILENCE
            if self._session is not None and len(pcm) == FRAME_BYTES:
                self._session.send_audio_pcm(pcm, n * FRAME_SAMPLES)
            n += 1
            delay = start + n * FRAME_SAMPLES / RATE - time.monotonic()
            if delay < -0.2:  # the loop stalled: resynchronise instead of bursting to catch up
                start, n = time.monotonic(), 0
                delay = 0
            await asyncio.sleep(max(delay, 0))

    async def hangup(self) -> None:
        """BYE (if the call was answered and the caller has not hung up), then free its RTP port."""
        if not self.ended.is_set():
            self._incoming.hangup()
        self.ended.set()
        self._endpoint.forget(self)
        await self.close()

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            self._sender = None
        if self._session is not None:
            await self._session.close()
            self._session = None
            await self._endpoint.ports.release(self._port)


def _uri_host(uri: str) -> str:
    """A SIP URI's host[:port] ("sip:dialin@10.0.0.5:5060;transport=udp" -> "10.0.0.5:5060")."""
    return uri.split(":", 1)[-1].rsplit("@", 1)[-1].split(";", 1)[0].lower()


@dataclass(frozen=True)
class DigestCheck:
    """SIP digest authentication of INVITEs with the trunk's configured credentials.

    The digest's uri must name the host of the INVITE's Request-URI; its user part may differ
    (SIPp, and some trunks, answer for "sip:host:port" where the request went to "sip:dialin@host:port").
    `verify` answers "ok", "missing" (no credentials: challenge), "stale" (a good answer to an
    expired nonce: challenge again, stale=true) or "wrong" (refuse)."""

    realm: str
    username: str
    password: str
    key: bytes  # signs nonces
    nonce_seconds: float = 300.0

    def _sign(self, issued: str) -> str:
        mac = hmac.new(self.key, f"sip-nonce:{self.realm}:{issued}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode()

    def challenge(self, now: float, stale: bool = False) -> str:
        issued = str(int(now))
        return (f'Digest realm="{self.realm}", nonce="{issued}.{self._sign(issued)}", algorithm=MD5, qop="auth"'
                + (", stale=true" if stale else ""))

    def verify(self, authorization: str, method: str, request_uri: str, now: float) -> str:
        if not authorization:
            return "missing"
        given = parse_auth(authorization, credentials=True)
        p = given.params
        if given.scheme.lower() != "digest" or p.get("algorithm", "MD5").upper() != "MD5" or p.get("qop") != "auth":
            return "wrong"
        issued, _, signature = p.get("nonce", "").partition(".")
        if not issued.isdigit() or not hmac.compare_digest(signature, self._sign(issued)):
            return "wrong"
        if p.get("realm") != self.realm or _uri_host(p.get("uri", "")) != _uri_host(request_uri):
            return "wrong"
        try:
            count = int(p.get("nc", ""), 16)
        except ValueError:
            return "wrong"
        expected = build_credentials(
            SipDigestAuth(self.username, self.password),
            AuthChallenge(scheme="Digest", params={"realm": self.realm, "nonce": p["nonce"], "qop": "auth",
                                                    "algorithm": "MD5"}),
            method, p["uri"], nonce_count=count, cnonce=p.get("cnonce", ""))
        if expected is None:  # (a challenge of our own making is always answerable)
            return "wrong"
        ok = hmac.compare_digest(p.get("username", ""), self.username) & hmac.compare_digest(
            p.get("response", "").lower(), expected.params["response"])
        if not ok:
            return "wrong"
        return "stale" if now - int(issued) > self.nonce_seconds else "ok"


class Endpoint:
    """The SIP listener (UDP): each new INVITE becomes a Call handed to `on_call` in its own task."""

    def __init__(self, host: str, port: int, rtp_ports: tuple[int, int], on_call: Callable[[Call], Awaitable[None]],
                 advertised_ip: str = "") -> None:
        self.host, self.port, self.advertised_ip = host, port, advertised_ip
        self.ports = PortAllocator(rtp_ports)
        self._on_call = on_call
        self._transport = _UdpTransport(local_addr=(host, port))
        self._uas = SipUAS(self._transport, user_agent=USER_AGENT)
        self._uas.on_invite = self._invite
        self._uas.on_bye = lambda incoming, _request: self._ended(incoming.call_id)
        self._uas.on_cancel = lambda request, _addr: self._ended(request.call_id or "")
        self._uas.on_ack_timeout = lambda incoming: self._ended(incoming.call_id)
        self._uas._handlers["INFO"] = self._info  # private: the INFO fallback (see the module docstring)
        self._calls: dict[str, Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._uas.start()

    def _invite(self, incoming: IncomingCall) -> None:
        call = Call(self, incoming)
        self._calls[call.call_id] = call
        task = asyncio.ensure_future(self._on_call(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ended(self, call_id: str) -> None:
        call = self._calls.pop(call_id, None)
        if call is not None:
            call.ended.set()

    def _info(self, request: SipRequest, addr: tuple[str, int]) -> None:
        """SIP INFO with application/dtmf-relay (or dtmf): a key, for trunks without RFC 4733."""
        call = self._calls.get(request.call_id or "")
        if call is None:
            self._uas._send_error(request, 481, "Call/Transaction Does Not Exist")
            return
        response = call._incoming.dialog.create_response(request, 200, "OK")
        self._transport.send_reply(response)
        body = request.text or ""
        match = INFO_SIGNAL.search(body)
        key = match.group(1) if match else body.strip()[:1]
        call.key(key)

    def forget(self, call: Call) -> None:
        self._calls.pop(call.call_id, None)
        self._uas._calls.pop(call.call_id, None)

    @property
    def active(self) -> int:
        return len(self._calls)

    async def stop(self) -> None:
        for call in list(self._calls.values()):
            await call.hangup()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._uas.stop()
