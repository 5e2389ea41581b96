"""The only module that touches the SIP stack: aiosipua (RFC 3261 transactions and dialogs, SDP
offer/answer, over UDP and TLS) and aiortp (RTP/RTCP, its jitter buffer and loss concealment, RFC 4733
telephone events; the codecs are services/dialin/voice.py's, SRTP's keys services/dialin/sdes.py's).

Why these (evaluated for issue #17, see docs/DIALIN.md): both are asyncio-native and pure Python,
so a call lives in the same event loop as the aiortc peer connection it is bridged to, with no
thread hand-over per 20 ms frame. PJSIP's `pjsua2-python` wheels are the most complete stack (TLS,
SRTP, a tuned jitter buffer) but run their own worker threads and sound-device clock, and need
a registered-thread dance for every callback into Python; `sippy` is a threaded B2BUA without RTP.

Private names used (pinned in pyproject.toml; tests/dialin/test_sip_stack.py trips if they move):
`UdpSipTransport._udp_transport` / `_dispatch` (see _UdpTransport), the transports' `on_message` as
`SipUAS.start` sets it (the answers to our BYEs, see Endpoint.retransmit_bye), `SipUAS._handlers` (to add SIP
INFO, the DTMF fallback, which aiosipua answers 405), `SipUAS._send_error`
(INFO outside a dialog: 481), `SipUAS._calls` (to forget a call we ended ourselves, which aiosipua keeps
until a BYE arrives), `IncomingCall._send_response` (a 401 with its WWW-Authenticate challenge:
aiosipua's public `reject` takes no headers) and `Call._incoming` within this module;
`TcpSipTransport._handle_connection` / `_connections` (SIP over TLS, see _TlsTransport); aiortp's
`RTPSession._rtp_transport` / `_rtcp_transport` and `RtpTransport._on_rtp` / `_on_rtcp` (SRTP, see
_encrypt: aiortp has no SRTP, so each packet is protected on its way out of and unprotected on its
way into aiortp's UDP transports).

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
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from aiortp import PortAllocator, RTPSession
from aiortp.packet import is_rtcp
from aiosipua import (
    AuthChallenge,
    IncomingCall,
    SipDigestAuth,
    SipRequest,
    SipResponse,
    SipUAS,
    TcpSipTransport,
    UdpSipTransport,
    negotiate_sdp,
    parse_auth,
)
from aiosipua.auth import build_credentials
from aiosipua.transaction import T1, T2

from services.dialin import metrics, sdes, voice
from services.dialin.audio import FRAME_BYTES, FRAME_SAMPLES, RATE, SILENCE
from services.dialin.entry import caller_number

log = logging.getLogger("svpl.dialin.sip")

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


# A TLS client has this long to complete its handshake.
TLS_HANDSHAKE_SECONDS = 10.0
# A name-addr's or addr-spec's URI that is a SIPS URI ("<sips:…>" or "sips:…").
SIPS_URI = re.compile(r"(?:^|<)\s*sips:", re.IGNORECASE)


class _TlsTransport(TcpSipTransport):
    """SIP over TLS (RFC 3261 §26, port 5061): aiosipua's TCP transport (its Content-Length framing and
    connection table) with each accepted connection upgraded to TLS before a byte of SIP is read.

    aiosipua 0.7.1 has no TLS transport, and its TCP transport starts its server without an ssl context;
    this subclass is the smallest way to add one (one class, no parser of our own). The handshake is
    done here (`start_tls`) rather than by `start_server(ssl=…)` so a refused handshake (no client
    certificate, or one from another CA) is logged and counted instead of vanishing in asyncio. It also
    does what aiosipua leaves to the transport: the Contact of our responses says `transport=tls` and
    our requests' Via says TLS, so the trunk sends the ACK and BYE over this connection, not over UDP."""

    def __init__(self, local_addr: tuple[str, int], tls: ServerTls) -> None:
        super().__init__(local_addr=local_addr)
        self._tls = tls

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, host=self.local_addr[0], port=self.local_addr[1])
        if not self.local_addr[1]:  # port 0 (tests): the one the system chose
            self.local_addr = (self.local_addr[0], int(self._server.sockets[0].getsockname()[1]))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        try:
            # asyncio.timeout, not wait_for: start_tls in wait_for's own task resets the connection (Python 3.11).
            async with asyncio.timeout(TLS_HANDSHAKE_SECONDS):
                await writer.start_tls(self._tls.context())
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log.warning("SIP over TLS: handshake from %s refused: %r", peer[0], exc)
            metrics.TLS_HANDSHAKES.labels("refused").inc()
            writer.transport.abort()
            return
        metrics.TLS_HANDSHAKES.labels("ok").inc()
        await self._handle_connection(reader, writer)

    def send(self, message: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        if isinstance(message, SipResponse):
            contact = message.headers.get_first("contact")
            if contact and contact.startswith("<sip:") and "transport=" not in contact.lower():
                # A dialog begun with a SIPS URI needs a SIPS Contact (RFC 3261 §12.1.1); otherwise
                # sip: with transport=tls, which every TLS trunk understands.
                secure = SIPS_URI.search(message.headers.get_first("to") or "") is not None
                message.headers.set_single("Contact", contact.replace("<sip:", "<sips:", 1) if secure
                                           else contact.replace(">", ";transport=tls>", 1))
        else:
            vias = message.headers.get("via")
            if vias:
                rest = vias[1:]
                message.headers.remove("Via")
                message.headers.append("Via", re.sub(r"^SIP/2\.0/UDP", "SIP/2.0/TLS", vias[0], flags=re.IGNORECASE))
                for via in rest:
                    message.headers.append("Via", via)
        if addr not in self._connections:
            # RFC 3261 §18.2.2: a response goes back over the connection its request came in on; a Via
            # without rport names the client's listening port, not that connection's.
            addr = next((a for a in reversed(self._connections) if a[0] == addr[0]), addr)
        super().send(message, addr)


class ServerTls:
    """TLS for the SIP listener: our certificate; with `client_ca_file`, the trunk must present a
    certificate from that CA (mutual TLS, as most SBCs do). TLS 1.2 at least.

    The files are looked at again for each new connection and the context rebuilt when one changed
    (its stat: inode, mtime, size — the kubelet swaps a renewed Secret's files in one rename, as
    services/runtime/tls.py relies on for gRPC). Files found unusable mid-rotation leave the previous
    context serving, and are tried again when they change. Connections keep their handshake."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self._files = [Path(f) for f in (cert_file, key_file, client_ca_file) if f]
        self._cert, self._key, self._ca = cert_file, key_file, client_ca_file
        self._stamp = self._stat()
        self._context = self._load()  # unusable files at start: the error stops the service

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in (os.stat(f) for f in self._files))

    def _load(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._cert, self._key)
        if self._ca:
            context.load_verify_locations(self._ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def context(self) -> ssl.SSLContext:
        try:
            stamp = self._stat()
        except OSError:  # mid-swap: the next connection looks again
            return self._context
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._context = self._load()
                log.info("SIP over TLS: certificate files reloaded")
            except (OSError, ssl.SSLError) as exc:
                log.warning("SIP over TLS: certificate files not reloaded, serving the previous ones: %s", exc)
        return self._context


@dataclass(frozen=True)
class MediaPolicy:
    """What the answer may agree to: the codecs in our order of preference; plain RTP or SRTP only;
    whether SDES keys may come over signalling that is not TLS (only for a documented exception)."""

    codecs: tuple[str, ...] = voice.PREFERENCE
    require_srtp: bool = False
    sdes_over_insecure: bool = False


class MediaRefused(ValueError):
    """The offer's media cannot be agreed to (488): `outcome` names why, for the calls metric."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def _encrypt(session: RTPSession, srtp: sdes.SrtpContext) -> None:
    """Put SRTP between aiortp and its UDP sockets: what it sends is protected, what arrives is
    unprotected (and dropped, counted, when it does not authenticate) before aiortp parses it."""
    for transport in (session._rtp_transport, session._rtcp_transport):
        if transport is None:
            continue
        send, on_rtp, on_rtcp = transport.send, transport._on_rtp, transport._on_rtcp

        def sending(data: bytes, addr: tuple[str, int] | None = None, send=send) -> None:
            send(srtp.protect(data, is_rtcp(data)), addr)

        def receiving(data: bytes, addr: tuple[str, int], deliver: Callable[[bytes, tuple[str, int]], None],
                      rtcp: bool) -> None:
            plain = srtp.unprotect(data, rtcp)
            if plain is None:
                metrics.SRTP_REJECTED.labels("srtcp" if rtcp else "srtp").inc()
                if srtp.rejected & (srtp.rejected - 1) == 0:  # the 1st, 2nd, 4th, 8th, … (not a log line per packet)
                    log.warning("SRTP: %d packet(s) failed authentication (last: %s, %d bytes, PT %d)", srtp.rejected,
                                "SRTCP" if rtcp else "SRTP", len(data),
                                data[1] & (0xFF if rtcp else 0x7F) if len(data) > 1 else -1)
            else:
                deliver(plain, addr)

        transport.send = sending  # type: ignore[method-assign]
        transport._on_rtp = partial(receiving, deliver=on_rtp, rtcp=False)
        transport._on_rtcp = partial(receiving, deliver=on_rtcp, rtcp=True)


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
        self._session: RTPSession | None = None
        self._step = FRAME_SAMPLES * 8000 // RATE  # RTP timestamp units per 20 ms (the codec's clock)
        self._port = 0
        self._queue: list[bytes] = []
        self._played = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self.codec = ""
        self.encrypted = False  # SRTP

    @property
    def call_id(self) -> str:
        return self._incoming.call_id

    @property
    def secure(self) -> bool:
        """Whether the INVITE came over SIP over TLS (so SDES keys in its SDP were not sent in clear)."""
        return isinstance(self._incoming.transport, _TlsTransport)

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

    def _refuse(self, outcome: str, message: str) -> MediaRefused:
        self.reject(488, "Not Acceptable Here")
        return MediaRefused(outcome, message)

    async def answer(self) -> None:
        """200 OK with our SDP answer (our most preferred codec the offer carries; telephone-event at the
        offer's payload type; SRTP with our own key when the offer is RTP/SAVP); then RTP both ways and
        the 20 ms send clock. Raises MediaRefused (after a 488) when nothing acceptable was offered."""
        policy = self._endpoint.policy
        offer = self._incoming.sdp_offer
        audio = offer.audio if offer is not None else None
        if offer is None or audio is None or offer.rtp_address is None:
            raise self._refuse("no_audio", "INVITE without an audio offer")
        srtp: sdes.SrtpContext | None = None
        if "SAVP" in audio.proto.upper():
            if not self.secure and not policy.sdes_over_insecure:
                raise self._refuse("sdes_insecure", "SRTP keys (a=crypto) offered over signalling that is not TLS")
            try:
                srtp = sdes.SrtpContext(sdes.choose(audio.attributes.get("crypto", [])))
            except sdes.SdesError as exc:
                raise self._refuse("srtp_unusable", str(exc)) from None
        elif policy.require_srtp:
            raise self._refuse("plain_rtp_refused", f"the offer's audio is {audio.proto}: this trunk must use SRTP")
        choice = voice.choose(audio.codecs, policy.codecs)
        if choice is None:
            raise self._refuse("no_audio", "no codec in common: offered "
                               + ", ".join(c.encoding_name or str(c.payload_type) for c in audio.codecs))
        events = [c.payload_type for c in audio.codecs if c.encoding_name.lower() == "telephone-event"]
        answer, _ = negotiate_sdp(offer, self._endpoint.advertised_ip or self._endpoint.host, 0,
                                  supported_codecs=[choice.payload_type],
                                  dtmf_payload_type=events[0] if events else 101)
        self._port, _ = await self._endpoint.ports.allocate()
        try:
            self._session = await RTPSession.create(
                (self._endpoint.host, self._port), offer.rtp_address, choice.payload_type, codec=voice.codec(choice),
                clock_rate=choice.clock_rate, dtmf_payload_type=events[0] if events else 101,
                jitter_prefetch=JITTER_PREFETCH, symmetric_rtp=True)
        except OSError as exc:
            await self._endpoint.ports.release(self._port)
            self.reject(503, "Service Unavailable")
            raise MediaRefused("unavailable", f"no RTP socket: {exc}") from None
        answered = answer.audio
        assert answered is not None  # negotiate_sdp answers the offer's audio
        answered.port = self._port
        if choice.name == "opus":  # RFC 7587 §7: the rtpmap always says two channels
            answered.attributes["rtpmap"][0] = f"{choice.payload_type} opus/48000/2"
        if srtp is not None:
            answered.attributes["crypto"] = [srtp.answer]
            _encrypt(self._session, srtp)
        self.codec, self.encrypted, self._step = choice.name, srtp is not None, choice.timestamp_step
        self._session.on_audio = lambda pcm, _ts: self.on_audio(pcm) if self.on_audio else None
        self._session.on_dtmf = lambda key, _duration: self.key(key)
        self._incoming.accept(answer)
        metrics.ANSWERED.labels(choice.name, "srtp" if srtp else "rtp", "tls" if self.secure else "udp").inc()
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
                self._session.send_audio_pcm(pcm, n * self._step)
            n += 1
            delay = start + n * FRAME_SAMPLES / RATE - time.monotonic()
            if delay < -0.2:  # the loop stalled: resynchronise instead of bursting to catch up
                start, n = time.monotonic(), 0
                delay = 0
            await asyncio.sleep(max(delay, 0))

    async def hangup(self) -> None:
        """BYE (if the call was answered and the caller has not hung up), then free its RTP port. Over UDP
        the BYE is sent again until the trunk answers it (the Endpoint's `_retransmit_bye`)."""
        if not self.ended.is_set():
            bye = self._incoming.hangup()
            transport = self._incoming.transport
            if bye is not None and isinstance(transport, UdpSipTransport):
                self._endpoint.retransmit_bye(bye, transport, self.source)
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
    """The SIP listeners (UDP, and TLS when a context is given): each new INVITE becomes a Call handed
    to `on_call` in its own task."""

    def __init__(self, host: str, port: int, rtp_ports: tuple[int, int], on_call: Callable[[Call], Awaitable[None]],
                 advertised_ip: str = "", policy: MediaPolicy = MediaPolicy(),
                 tls: tuple[int, ServerTls] | None = None) -> None:
        self.host, self.port, self.advertised_ip, self.policy = host, port, advertised_ip, policy
        self.ports = PortAllocator(rtp_ports)
        self._on_call = on_call
        transports: list[UdpSipTransport | TcpSipTransport] = [_UdpTransport(local_addr=(host, port))]
        self.tls: _TlsTransport | None = None
        if tls is not None:
            self.tls = _TlsTransport((host, tls[0]), tls[1])
            transports.append(self.tls)
        self._uases = [SipUAS(transport, user_agent=USER_AGENT) for transport in transports]
        for uas in self._uases:
            uas.on_invite = self._invite
            uas.on_bye = lambda incoming, _request: self._ended(incoming.call_id)
            uas.on_cancel = lambda request, _addr: self._ended(request.call_id or "")
            uas.on_ack_timeout = lambda incoming: self._ended(incoming.call_id)
            uas._handlers["INFO"] = partial(self._info, uas)  # private: the INFO fallback (see the module docstring)
        self._calls: dict[str, Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._byes: dict[tuple[str, int], asyncio.Event] = {}  # (Call-ID, CSeq) of a BYE sent over UDP -> answered

    @property
    def tls_port(self) -> int:
        """The SIP over TLS port (0: no TLS listener)."""
        return self.tls.local_addr[1] if self.tls is not None else 0

    async def start(self) -> None:
        for uas in self._uases:
            await uas.start()
            # aiosipua's UAS drops every response (it has no client transactions without a UAC): the final
            # response to a BYE we sent stops its retransmission; everything else goes on as before.
            handle = uas.transport.on_message
            assert handle is not None  # set by start
            uas.transport.on_message = partial(self._response_or, handle)

    def _response_or(self, handle: Callable[[SipRequest | SipResponse, tuple[str, int]], None],
                     message: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        cseq = message.cseq if isinstance(message, SipResponse) else None
        if cseq is not None and cseq.method == "BYE" and message.status_code >= 200:  # type: ignore[union-attr]
            answered = self._byes.get((message.call_id or "", cseq.seq))
            if answered is not None:
                answered.set()
                return
        handle(message, addr)

    def retransmit_bye(self, bye: SipRequest, transport: UdpSipTransport, to: tuple[str, int]) -> None:
        """RFC 3261 17.1.2.2 for a BYE over UDP (aiosipua sends it once): again after T1, doubling up to T2,
        until a final response or Timer F (64*T1). A lost BYE left the caller's line open, hearing silence."""
        cseq = bye.cseq
        if cseq is None:
            return
        key = (bye.call_id or "", cseq.seq)
        answered = self._byes[key] = asyncio.Event()

        async def again() -> None:
            interval, deadline = T1, time.monotonic() + 64 * T1
            try:
                while time.monotonic() < deadline:
                    try:
                        await asyncio.wait_for(answered.wait(), min(interval, deadline - time.monotonic()))
                        return
                    except TimeoutError:
                        pass
                    if time.monotonic() < deadline:
                        transport.send(bye, to)
                        metrics.BYE_RETRANSMISSIONS.inc()
                        interval = min(interval * 2, T2)
                log.warning("a BYE over UDP got no answer in %.0f s (the trunk's end of the call may stay open)",
                            64 * T1)
            finally:
                self._byes.pop(key, None)

        task = asyncio.ensure_future(again())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

    def _info(self, uas: SipUAS, request: SipRequest, addr: tuple[str, int]) -> None:
        """SIP INFO with application/dtmf-relay (or dtmf): a key, for trunks without RFC 4733."""
        call = self._calls.get(request.call_id or "")
        if call is None:
            uas._send_error(request, 481, "Call/Transaction Does Not Exist")
            return
        response = call._incoming.dialog.create_response(request, 200, "OK")
        uas.transport.send_reply(response)
        body = request.text or ""
        match = INFO_SIGNAL.search(body)
        key = match.group(1) if match else body.strip()[:1]
        call.key(key)

    def forget(self, call: Call) -> None:
        self._calls.pop(call.call_id, None)
        for uas in self._uases:
            uas._calls.pop(call.call_id, None)

    @property
    def active(self) -> int:
        return len(self._calls)

    async def stop(self) -> None:
        for call in list(self._calls.values()):
            await call.hangup()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for uas in self._uases:
            await uas.stop()
