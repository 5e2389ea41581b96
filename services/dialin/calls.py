"""The call flow: a phone caller from the region's trunk enters a meeting ID, waits in the lobby
until the coordinator identifies them as a registered person (or removes them), then talks in the
meeting's room until they hang up, are removed, or the meeting ends. Plain asyncio over the SIP
adapter (sip.Call) and the peers (roster, media); no gRPC types here.

Security, in the order a call meets it: the source address must be one of the trunk's networks
(403 otherwise) where networks are configured; where trunk credentials are configured, the INVITE
must carry SIP digest credentials for them (none or an expired nonce: 401 with a challenge; wrong:
403); three wrong meeting IDs end the call; meeting-ID entries are rate limited per
calling number and in total; the caller hears nobody and nobody hears them until roster admits the
connection the coordinator identified; a removed number is refused when it calls back (its
connection id is derived from meeting + number, and roster bans it); calling numbers appear in
logs and to the coordinator masked (last two digits)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from dataclasses import dataclass

from services.dialin import entry, metrics
from services.dialin.audio import Prompts
from services.dialin.bridge import RoomBridge
from services.dialin.peers import FINAL, Media, Meeting, Refused, Roster, WrongCode
from services.dialin.quality import CallQuality
from services.dialin.sip import Call, DigestCheck, MediaRefused
from services.runtime.errors import Unavailable

log = logging.getLogger("svpl.dialin")
# From a removal or the meeting's end reaching this service to the BYE (the goodbye is cut to fit).
GOODBYE_SECONDS = 1.8


@dataclass(frozen=True)
class Limits:
    max_entries_per_call: int = 3
    entry_timeout_seconds: float = 20.0
    lobby_timeout_seconds: float = 1800.0
    lobby_repeat_seconds: float = 30.0
    recheck_seconds: float = 5.0
    max_calls: int = 100
    audio_slots: int = 12
    join_timeout_seconds: float = 15.0
    quality_sample_seconds: float = 5.0


class Dialin:
    def __init__(self, roster: Roster, media: Media, prompts: Prompts, limits: Limits, rate: entry.RateLimit,
                 trunks: list[ipaddress.IPv4Network | ipaddress.IPv6Network], connection_key: bytes,
                 digest: DigestCheck | None = None) -> None:
        self.roster, self.media, self.prompts, self.limits, self.rate = roster, media, prompts, limits, rate
        self.trunks, self.digest = trunks, digest
        self._key = connection_key
        self.accepting = True
        self.active = 0
        self.bridged = 0
        self._connections: set[str] = set()  # phone connections on this instance now
        self.idle = asyncio.Event()
        self.idle.set()

    def trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trunks)

    @staticmethod
    def authenticated(call: Call, digest: DigestCheck) -> bool:
        """The trunk's digest credentials: challenged (401) when missing or stale, refused (403) when wrong."""
        now = time.time()
        verdict = digest.verify(call.authorization, "INVITE", call.request_uri, now)
        metrics.AUTH.labels(verdict).inc()
        if verdict in ("missing", "stale"):
            call.challenge(digest.challenge(now, stale=verdict == "stale"))
        elif verdict == "wrong":
            log.warning("INVITE refused: wrong SIP digest credentials from %s", call.source[0])
            call.reject(403, "Forbidden")
            metrics.CALLS.labels("bad_credentials").inc()
        return verdict == "ok"

    # ------------------------------------------------------------------ one call

    async def handle(self, call: Call) -> None:
        who = entry.masked(call.number) if call.number else "dolt nummer"
        if self.trunks and not self.trusted(call.source[0]):
            log.warning("INVITE refused: %s is not a trunk address", call.source[0])
            call.reject(403, "Forbidden")
            metrics.CALLS.labels("untrusted_source").inc()
            return
        if self.digest is not None and not self.authenticated(call, self.digest):
            return
        if not self.accepting or self.active >= self.limits.max_calls:
            call.reject(503, "Service Unavailable")
            metrics.CALLS.labels("busy").inc()
            return
        try:
            await call.answer()
        except MediaRefused as exc:
            log.warning("INVITE refused: %s", exc)
            metrics.CALLS.labels(exc.outcome).inc()
            return
        self.active += 1
        self.idle.clear()
        metrics.ACTIVE.inc()
        outcome = "hung_up"
        log.info("call from %s answered (%s)", who, call.codec)
        quality = CallQuality()
        sampling = asyncio.ensure_future(self._sample(call, quality))
        try:
            outcome = await self._converse(call)
        except Unavailable as exc:
            log.warning("call from %s: %s", who, exc.message)
            outcome = "unavailable"
            await self._say(call, "busy")
        finally:
            self.active -= 1
            metrics.ACTIVE.dec()
            if not self.active:
                self.idle.set()
            metrics.CALLS.labels(outcome).inc()
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)
            quality.finish(call.rtp_stats())
            log.info("call from %s ended: %s (RTP loss %.1f %%, jitter up to %.0f ms)", who, outcome,
                     100 * quality.loss_ratio, 1000 * quality.max_jitter_seconds)
            await call.hangup()

    async def _sample(self, call: Call, quality: CallQuality) -> None:
        while not call.ended.is_set():
            await asyncio.sleep(self.limits.quality_sample_seconds)
            quality.sample(call.rtp_stats())

    async def _say(self, call: Call, prompt: str, until: float | None = None) -> None:
        """Play a prompt to its end, or (a goodbye) only as much of it as ends by loop time `until`."""
        if call.ended.is_set():
            return
        frames = self.prompts.frames(prompt)
        if until is not None:
            frames = frames[:max(0, int((until - asyncio.get_running_loop().time()) / 0.02))]
        await call.play(frames)

    async def _converse(self, call: Call) -> str:
        entered = await self._enter(call)
        if isinstance(entered, str):
            return entered
        found, tries_left = entered
        if found.state == "scheduled":
            await self._say(call, "not_started")
            return "not_started"
        if found.state in FINAL:
            await self._say(call, "ended")
            return "ended"
        conn = entry.connection_id(self._key, found.id, call.number)
        if conn in self._connections:  # the same number already in this meeting
            await self._say(call, "busy")
            return "busy"
        self._connections.add(conn)
        try:
            ended = await self._personal_code(call, found, conn, tries_left)
            if ended:
                return ended
            return await self._attend(call, found, conn)
        finally:
            self._connections.discard(conn)
            with contextlib.suppress(Unavailable):
                await asyncio.shield(self.roster.report(found.id, conn, False))

    # ------------------------------------------------------------------ the meeting ID

    def _rate_limited(self, call: Call, what: str) -> bool:
        limited = self.rate.allow(call.number)
        if limited:
            metrics.ENTRIES.labels(f"rate_limited_{limited}").inc()
            log.warning("%s entry from %s refused: rate limit (%s)", what, entry.masked(call.number), limited)
        return bool(limited)

    async def _enter(self, call: Call) -> tuple[Meeting, int] | str:
        """The meeting whose ID the caller keyed, and how many of the call's tries are left."""
        prompt = "welcome"
        for attempt in range(1, self.limits.max_entries_per_call + 1):
            code = await self._collect(call, prompt)
            if call.ended.is_set():
                return "hung_up"
            prompt = "wrong_id"
            if not code:
                continue  # nothing entered in time: the prompt again (one of the tries)
            if self._rate_limited(call, "meeting-ID"):
                await self._say(call, "busy")
                return "rate_limited"
            found = await self.roster.resolve(code)
            if found is not None:
                metrics.ENTRIES.labels("found").inc()
                return found, self.limits.max_entries_per_call - attempt + 1
            metrics.ENTRIES.labels("wrong").inc()
            log.info("wrong meeting ID from %s (%d of %d)", entry.masked(call.number), attempt,
                     self.limits.max_entries_per_call)
        await self._say(call, "too_many")
        return "too_many_entries"

    async def _personal_code(self, call: Call, meeting: Meeting, conn: str, tries_left: int) -> str:
        """After the meeting ID: a personal code identifies the caller at once (roster checks it and
        ties the connection to its owner); '#' alone, or no key in time, goes to the lobby. Wrong
        codes use up the call's tries left from the meeting ID. "" to go on (identified or to the
        lobby, where _attend applies roster's rules), else the call's outcome."""
        prompt = "personal_code"
        while True:
            code = await self._collect(call, prompt)
            if call.ended.is_set():
                return "hung_up"
            if not code:
                return ""
            if self._rate_limited(call, "personal-code"):
                await self._say(call, "busy")
                return "rate_limited"
            try:
                await self.roster.enter_code(meeting.id, conn, code, entry.label(call.number))
            except WrongCode:
                metrics.ENTRIES.labels("wrong_code").inc()
                tries_left -= 1
                log.info("wrong personal code from %s (%d tries left)", entry.masked(call.number), tries_left)
                if tries_left <= 0:
                    await self._say(call, "too_many_codes")
                    return "too_many_entries"
                prompt = "wrong_code"
                continue
            except Refused as exc:  # no code taken now: the coordinator decides, as for any caller
                log.info("personal code from %s not taken (%s): to the lobby", entry.masked(call.number), exc.reason)
                metrics.ENTRIES.labels("code_not_taken").inc()
                return ""
            metrics.ENTRIES.labels("code_found").inc()
            log.info("caller %s identified by a personal code", entry.masked(call.number))
            return ""

    async def _collect(self, call: Call, prompt: str) -> str | None:
        """Play the prompt and read keys until '#' (a key stops the prompt); None if none in time."""
        digits = entry.Digits()
        playing = asyncio.ensure_future(call.play(self.prompts.frames(prompt)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.prompts.seconds(prompt) + self.limits.entry_timeout_seconds
        try:
            while True:
                key = await _first(call.keys.get(), call.ended.wait(), within=deadline - loop.time())
                if not isinstance(key, str):
                    return None
                call.stop_playing()
                code = digits.feed(key)
                if code is not None:
                    return code
                deadline = loop.time() + self.limits.entry_timeout_seconds
        finally:
            playing.cancel()
            await asyncio.gather(playing, return_exceptions=True)

    # ------------------------------------------------------------------ lobby, then the room

    async def _attend(self, call: Call, meeting: Meeting, conn: str) -> str:
        label = entry.label(call.number)
        loop = asyncio.get_running_loop()
        lobby_until = loop.time() + self.limits.lobby_timeout_seconds
        changed = asyncio.Event()
        watching = asyncio.ensure_future(self._watch(meeting.id, changed))
        bridge: RoomBridge | None = None
        first = True
        announced = 0.0
        woke = loop.time()
        try:
            while True:
                standing = await self.roster.report(meeting.id, conn, True, label)
                if not standing.allowed:
                    # Removed, or the meeting ended: the goodbye is cut so the BYE leaves within 2 s
                    # of the change reaching this service.
                    goodbye_by = None if first else woke + GOODBYE_SECONDS
                    if standing.state in FINAL:
                        await self._say(call, "ended", goodbye_by)
                        return "ended"
                    if standing.state == "scheduled":
                        await self._say(call, "not_started")
                        return "not_started"
                    await self._say(call, "refused" if first else "removed", goodbye_by)
                    return "refused" if first else "removed"
                first = False
                if bridge is None and standing.participant_id and standing.state == "live":
                    bridge = await self._join(call, meeting, conn)
                if bridge is None:
                    if loop.time() >= lobby_until:
                        await self._say(call, "refused")
                        return "lobby_left"
                    if loop.time() - announced >= self.limits.lobby_repeat_seconds:
                        announced = loop.time()
                        call.start_playing(self.prompts.frames("lobby"))
                waits = [changed.wait(), call.ended.wait()]
                if bridge is not None:
                    waits.append(bridge.closed.wait())
                await _first(*waits, within=self.limits.lobby_repeat_seconds)
                woke = loop.time()
                changed.clear()
                if call.ended.is_set():
                    return "bridged" if bridge else "hung_up"
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            if bridge is not None:
                call.source_audio = None
                call.on_audio = None
                self.bridged -= 1
                metrics.BRIDGED.dec()
                await bridge.close()

    async def _watch(self, meeting_id: str, changed: asyncio.Event) -> None:
        async for _ in self.roster.changes(meeting_id, self.limits.recheck_seconds):
            changed.set()

    async def _join(self, call: Call, meeting: Meeting, conn: str) -> RoomBridge | None:
        """Into the room as the person the coordinator identified; None if roster refuses (yet)."""
        try:
            admission = await self.roster.admit(meeting.id, conn)
        except Refused as exc:
            log.info("phone connection not admitted yet (%s)", exc.reason)
            return None
        bridge = RoomBridge(self.limits.audio_slots)
        self.bridged += 1
        metrics.BRIDGED.inc()
        call.on_audio = bridge.caller.push
        try:
            await bridge.join(self.media, admission, meeting.id, self.limits.join_timeout_seconds)
        except (TimeoutError, Unavailable):
            self.bridged -= 1
            metrics.BRIDGED.dec()
            call.on_audio = None
            await bridge.close()
            raise Unavailable("could not join the meeting's room") from None
        call.source_audio = bridge.mix.pull
        call.start_playing(self.prompts.frames("admitted"))
        return bridge


async def _first(*aws, within: float) -> object:
    """The result of whichever awaitable finishes first (the others are cancelled); None on timeout."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, timeout=max(within, 0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if t in done and not t.cancelled() and t.exception() is None:
            return t.result()
    return None
