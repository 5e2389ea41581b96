"""Rooms on this media instance: who is connected, what is forwarded to whom, load and draining.

A participant's offer carries its own audio/video as sendrecv (or sendonly) m-lines and one
recvonly audio + video pair per other participant it can see ("slots"); each other
participant's publications are bound to a free slot pair, and unbound when they leave.
Everything here is memory: nothing about media is written anywhere.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass, field

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from services.media import ports
from services.media.bandwidth import SubscriberLink, watch_slot
from services.media.forwarding import ForwardTrack, Publication, enlarge_socket_buffers, restrict_codecs
from services.media.quality import Quality, QualitySampler, Thresholds
from services.media.receive import receive_directly
from services.media.reporter import ConnectionReporter, Report
from services.media.rtc_internals import offered_direction, parse_sdp, srtp_per_source, watch_round_trips
from services.media.storage import ClosedRooms, UsedJoinTokens
from services.media.tokens import TokenVerifier
from services.runtime.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)

log = logging.getLogger("svpl.media.rooms")


class PeerCounter:
    """Every RTCPeerConnection this process creates goes through `new`; tests read the counts."""

    created = 0
    live: set = set()

    @classmethod
    def new(cls) -> RTCPeerConnection:
        # max-bundle: with the default policy a second audio track never reaches subscribers (aiortc #1414).
        # No ICE servers: media instances have reachable addresses; never a public STUN server.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        cls.created += 1
        cls.live.add(pc)
        return pc

    @classmethod
    async def close(cls, pc: RTCPeerConnection) -> None:
        cls.live.discard(pc)
        try:
            await pc.close()
        except Exception:  # noqa: BLE001 - a half-negotiated connection: aiortc's close stops at the first
            # transceiver without a transport (a mangled offer); stop every transport that exists, so no
            # ICE socket outlives the refusal.
            log.warning("peer connection did not close cleanly; stopping its transports one by one")
            for t in pc.getTransceivers():
                for dtls in {x for x in (t.receiver.transport, t.sender.transport) if x is not None}:
                    for stop in (dtls.stop, dtls.transport.stop):
                        try:
                            await stop()
                        except Exception:  # noqa: BLE001, S110 - already stopped or never started
                            pass


# Bounds of an offer any client sends (the portal: 2 send + 16 receive sections, a few kB): more would
# cost a transceiver each, so a bigger offer is refused before it is parsed. The gateway's bound is the same.
MAX_OFFER_CHARS = 60_000
MAX_MEDIA_SECTIONS = 64


def parse_offer(sdp: str) -> None:
    """Reject what is not an SDP offer with audio/video before any peer connection exists."""
    if not sdp.strip():
        raise InvalidArgument("sdp_offer", "is empty")
    if len(sdp) > MAX_OFFER_CHARS:
        raise InvalidArgument("sdp_offer", f"longer than {MAX_OFFER_CHARS} characters")
    if sdp.count("\nm=") + sdp.startswith("m=") > MAX_MEDIA_SECTIONS:
        raise InvalidArgument("sdp_offer", f"more than {MAX_MEDIA_SECTIONS} media sections")
    try:
        desc = parse_sdp(sdp)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the client's input
        raise InvalidArgument("sdp_offer", f"is not a valid SDP offer ({exc.__class__.__name__})") from None
    media = [m for m in desc.media if m.kind in ("audio", "video")]
    if not media:
        raise InvalidArgument("sdp_offer", "offers no audio or video")
    for m in media:
        if m.ice is None or not m.ice.usernameFragment or m.dtls is None or not m.dtls.fingerprints:
            raise InvalidArgument("sdp_offer", "lacks ICE credentials or a DTLS fingerprint")


@dataclass
class Participant:
    meeting_id: str
    participant_id: str
    connection_id: str
    pc: RTCPeerConnection
    sampler: QualitySampler
    publications: list[Publication] = field(default_factory=list)
    slots: dict[str, list[ForwardTrack]] = field(default_factory=lambda: {"audio": [], "video": []})
    # publisher participant id -> the slot tracks showing them to this participant
    assigned: dict[str, list[ForwardTrack]] = field(default_factory=dict)
    state: str = "new"
    connected_at: dt.datetime | None = None
    gone: bool = False
    link: SubscriberLink = field(default_factory=SubscriberLink)  # its browser's receive estimate (bandwidth.py)

    def free_slot(self, kind: str) -> ForwardTrack | None:
        used = {id(t) for tracks in self.assigned.values() for t in tracks}
        return next((t for t in self.slots[kind] if id(t) not in used), None)


@dataclass
class Room:
    meeting_id: str
    participants: dict[str, Participant] = field(default_factory=dict)
    opened_at: float = field(default_factory=time.monotonic)


@dataclass
class Load:
    rooms: int
    participants: int  # meeting participants (what capacity and `accepting` are about)
    forwarded_streams: int
    cpu: float
    accepting: bool
    test_room_peers: int = 0  # echo test rooms' peer connections, on top of the participants
    test_room_limit: int = 0


TEST_ROOMS_FULL = ("Testrummen på den här mediaservern är fulla just nu: försök igen om en stund. "
                   "/ The echo test rooms on this media instance are full right now: try again in a while.")
TEST_ROOM_REPLACED = ("Ett nyare testrum för dig ersatte det här. "
                      "/ A newer test room of yours replaced this one.")


def allowed_test_rooms(share: float, capacity: int, rtc_ports: ports.PortRange | None) -> int:
    """How many echo test rooms (peer connections) this instance takes at once: `share` of the
    participant capacity (at least one unless the share is 0), reserved on top of that capacity.
    With a port range (no TURN) only the ports beyond capacity are theirs, so meetings can always
    bind a port: when the range holds fewer spare ports than the share, the limit is what it holds."""
    limit = max(1, math.floor(share * capacity + 1e-9)) if share > 0 else 0
    if rtc_ports is not None:
        limit = min(limit, max(0, len(rtc_ports) - capacity))
    return limit


@dataclass
class EchoRoom:
    """One person's echo test room: a person has at most one; a new one replaces (closes) the previous
    one. `held` while it counts against the instance's limit: from the moment its request is let in
    (before its peer connection exists) until its peer connection is closed (its port is free again)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    latest: int = 0  # the number of this person's newest request: older waiting ones give way to it
    waiting: int = 0  # requests of this person inside negotiate_test_room
    held: bool = False
    pc: RTCPeerConnection | None = None
    timer: asyncio.TimerHandle | None = None


class MediaRooms:
    def __init__(self, *, instance_id: str, capacity: int, closed: ClosedRooms, used_tokens: UsedJoinTokens,
                 verifier: TokenVerifier,
                 reporter: ConnectionReporter, thresholds: Thresholds, keyframe_interval: float = 0.3,
                 test_room_seconds: float = 300.0, socket_buffer_bytes: int = 4 << 20,
                 rtc_ports: ports.PortRange | None = None, test_room_share: float = 0.1,
                 node_ip: str = "", fastpath: bool = False) -> None:
        self._socket_buffer = socket_buffer_bytes
        self._fastpath = fastpath  # subscribers' packets re-headed, protected and sent by fastpath.c
        # No ICE servers of its own (PeerCounter.new): behind TURN coturn relays to the pod's address;
        # without TURN the node publishes the pod's ports and answers name the node's address too.
        self._node_ip = node_ip
        self._rtc_ports = rtc_ports
        # Echo test rooms: a per-instance limit on their peer connections (with TURN and without), and
        # without TURN their own ports at the top of the range, which meetings use only after their own.
        self.test_room_limit = allowed_test_rooms(test_room_share, capacity, rtc_ports)
        wanted = allowed_test_rooms(test_room_share, capacity, None)
        if self.test_room_limit < wanted:
            log.warning("the media port range holds %d ports beyond SVPL_CAPACITY_PARTICIPANTS: echo test rooms"
                        " limited to %d at once (SVPL_TEST_ROOM_SHARE asks %d); widen SVPL_RTC_PORT_MIN/MAX",
                        self.test_room_limit, self.test_room_limit, wanted)
        self._meeting_ports: ports.PortRange | None
        self._test_ports: ports.PortRange | None
        if rtc_ports is not None:
            self._meeting_ports, self._test_ports = rtc_ports.split(self.test_room_limit)
        else:
            self._meeting_ports = self._test_ports = None
        self.instance_id = instance_id
        self.capacity = capacity
        self._closed = closed
        self._used_tokens = used_tokens
        self._verifier = verifier
        self._reporter = reporter
        self._thresholds = thresholds
        self._keyframe_interval = keyframe_interval
        self._test_room_seconds = test_room_seconds
        self.rooms: dict[str, Room] = {}
        self.test_peers: set[RTCPeerConnection] = set()  # live echo peer connections
        self._test_rooms: dict[str, EchoRoom] = {}  # by person (a hash of the session token's subject)
        self._test_refusals, self._test_refusals_logged_at = 0, -math.inf
        self.draining = False
        self._cpu_last = (time.monotonic(), self._cpu_seconds())
        self._cpu_share = 0.0
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ rooms

    async def open_room(self, meeting_id: str) -> None:
        if not meeting_id:
            raise InvalidArgument("meeting_id", "is required")
        if meeting_id in self.rooms:
            return
        if await self._closed.is_closed(meeting_id):
            raise FailedPrecondition("this room has been closed and cannot be opened again", reason="ROOM_CLOSED")
        if self.draining:
            raise FailedPrecondition("this media instance is draining: open the room elsewhere", reason="DRAINING")
        if not self.accepting:
            raise FailedPrecondition("this media instance is at capacity", reason="AT_CAPACITY")
        self.rooms.setdefault(meeting_id, Room(meeting_id))

    async def close_room(self, meeting_id: str) -> int:
        if not meeting_id:
            raise InvalidArgument("meeting_id", "is required")
        await self._closed.mark_closed(meeting_id)
        return await self.release_room(meeting_id)

    async def release_room(self, meeting_id: str) -> int:
        """Drop the room here and disconnect its participants, without recording it closed: the
        meeting goes on in a room on another instance (roster moved it while this one did not
        answer), and the participants' clients re-admit into that one."""
        if not meeting_id:
            raise InvalidArgument("meeting_id", "is required")
        room = self.rooms.pop(meeting_id, None)
        if room is None:
            return 0
        people = list(room.participants.values())
        room.participants.clear()
        await asyncio.gather(*(self._leave(p, room=None) for p in people))
        return len(people)

    async def disconnect(self, meeting_id: str, participant_id: str) -> int:
        if not meeting_id:
            raise InvalidArgument("meeting_id", "is required")
        if not participant_id:
            raise InvalidArgument("participant_id", "is required")
        room = self.rooms.get(meeting_id)
        p = room.participants.get(participant_id) if room else None
        if p is None:
            return 0
        await self._leave(p, room)
        return 1

    async def status(self, meeting_id: str) -> tuple[str, list[Participant]]:
        if not meeting_id:
            raise InvalidArgument("meeting_id", "is required")
        room = self.rooms.get(meeting_id)
        if room is not None:
            return "open", list(room.participants.values())
        if await self._closed.is_closed(meeting_id):
            return "closed", []
        return "unknown", []

    # ------------------------------------------------------------------ load

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def cpu_share(self) -> float:
        """Share of one core used by this process since the previous reading (at least 0.5 s apart)."""
        now, cpu = time.monotonic(), self._cpu_seconds()
        last_at, last_cpu = self._cpu_last
        if now - last_at >= 0.5:
            self._cpu_share = (cpu - last_cpu) / (now - last_at)
            self._cpu_last = (now, cpu)
        return self._cpu_share

    @property
    def participant_count(self) -> int:
        return sum(len(r.participants) for r in self.rooms.values())

    @property
    def accepting(self) -> bool:
        return not self.draining and self.participant_count < self.capacity

    @property
    def forwarded_streams(self) -> int:
        return sum(len(p.assigned) for r in self.rooms.values() for p in r.participants.values())

    @property
    def test_room_peers(self) -> int:
        """Echo test rooms counted against the limit (live, or being negotiated)."""
        return sum(1 for t in self._test_rooms.values() if t.held)

    @property
    def peer_count(self) -> int:
        """Every person's peer connection here: meeting participants and echo test rooms (HPA metric)."""
        return self.participant_count + self.test_room_peers

    def load(self) -> Load:
        return Load(len(self.rooms), self.participant_count, self.forwarded_streams, self.cpu_share(), self.accepting,
                    self.test_room_peers, self.test_room_limit)

    # ------------------------------------------------------------------ signalling

    async def negotiate(self, join_token: str, sdp_offer: str, meeting_id: str = "") -> tuple[str, str]:
        """Verify the join token, then (only then) create the peer connection and answer.
        A join token admits once: a replay is refused (a reconnect asks roster to admit again)."""
        grant = await self._verifier.join(join_token)
        if meeting_id and meeting_id != grant.meeting_id:
            raise PermissionDenied("the join token is for another meeting", reason="WRONG_MEETING")
        if grant.media_instance != self.instance_id:
            raise PermissionDenied("the join token is for another media instance", reason="WRONG_INSTANCE")
        room = self.rooms.get(grant.meeting_id)
        if room is None:
            if await self._closed.is_closed(grant.meeting_id):
                raise FailedPrecondition("the meeting's room is closed", reason="ROOM_CLOSED")
            raise FailedPrecondition("the meeting's room is not open on this instance", reason="ROOM_NOT_OPEN")
        parse_offer(sdp_offer)
        if not await self._used_tokens.claim(grant.token_id, grant.meeting_id, grant.participant_id, grant.expires_at):
            raise Unauthenticated("join token already used: ask to join again for a new one")

        pc = PeerCounter.new()
        p = Participant(grant.meeting_id, grant.participant_id, uuid.uuid4().hex, pc, QualitySampler(self._thresholds))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp_offer, type="offer"))
            for t in pc.getTransceivers():
                restrict_codecs(t)
                if offered_direction(t) in ("recvonly", "sendrecv") and t.receiver.track is not None:
                    p.publications.append(Publication(p.participant_id, t.kind, t.receiver, self._keyframe_interval))
                    t.direction = "recvonly"
                elif offered_direction(t) == "sendonly":
                    track = ForwardTrack(t.kind, t.mid or "")
                    t.sender.replaceTrack(track)
                    track.attach_sender(t.sender, self._fastpath)
                    watch_round_trips(t.sender, p.sampler.round_trip)
                    if t.kind == "video":
                        track.bandwidth_slot = watch_slot(t.sender, p.link, track)
                    t.direction = "sendonly"
                    p.slots[t.kind].append(track)
            await self._answer(pc, self._meeting_ports, self._test_ports)
        except Exception as exc:
            await PeerCounter.close(pc)
            await self._used_tokens.release(grant.token_id)
            if isinstance(exc, (InvalidArgument, ResourceExhausted, asyncio.CancelledError)):
                raise
            raise InvalidArgument("sdp_offer", f"cannot be answered ({exc})") from None
        if self.rooms.get(grant.meeting_id) is not room:  # closed while we negotiated
            await PeerCounter.close(pc)
            raise FailedPrecondition("the meeting's room is closed", reason="ROOM_CLOSED")

        previous = room.participants.get(p.participant_id)
        if previous is not None:  # a reconnect replaces the old connection
            await self._leave(previous, room)
        room.participants[p.participant_id] = p
        self._wire(p, room)
        for other in room.participants.values():
            if other is not p:
                self._show(publisher=other, subscriber=p)
                self._show(publisher=p, subscriber=other)
        return self._answer_sdp(pc), p.connection_id

    async def _answer(self, pc: RTCPeerConnection, port_range: ports.PortRange | None,
                      *then: ports.PortRange | None) -> None:
        """Set the local answer; its ICE host sockets are bound inside the port range (then `then`, in
        order) when one is set, then get larger buffers, protect what they send in one SRTP session per source
        and take incoming SRTP in their callbacks (receive.py)."""
        with ports.scope(port_range, *then) as usage:
            await pc.setLocalDescription(await pc.createAnswer())
        if usage is not None and usage.exhausted:  # the caller closes the peer connection and its sockets
            raise ResourceExhausted("no free media port on this instance: join again to be placed elsewhere")
        enlarge_socket_buffers(pc, self._socket_buffer)
        srtp_per_source(pc)  # one libsrtp session per outgoing SSRC (rtc_internals.SrtpPerSource)
        receive_directly(pc, lean=self._fastpath)  # a publication's RTP: rtc_internals.LeanReceive

    def _answer_sdp(self, pc: RTCPeerConnection) -> str:
        return ports.advertise_node_address(pc.localDescription.sdp, self._node_ip)

    def _show(self, publisher: Participant, subscriber: Participant) -> None:
        if publisher.participant_id in subscriber.assigned:
            return
        tracks = []
        for pub in publisher.publications:
            slot = subscriber.free_slot(pub.kind)
            if slot is not None:
                slot.bind(pub)
                tracks.append(slot)
                subscriber.assigned[publisher.participant_id] = tracks
        if not tracks:
            log.warning("participant has no free slot to see another; offer more recvonly transceivers")

    def _wire(self, p: Participant, room: Room) -> None:
        @p.pc.on("connectionstatechange")
        async def changed() -> None:
            state = p.pc.connectionState
            p.state = state
            if state == "connected" and p.connected_at is None:
                p.connected_at = dt.datetime.now(dt.timezone.utc)
                self._reporter.report(Report(p.meeting_id, p.connection_id, p.participant_id, True,
                                             on_denied=lambda: self._leave(p, room)))
            elif state in ("failed", "closed"):
                await self._leave(p, room)

    async def _leave(self, p: Participant, room: Room | None) -> None:
        if p.gone:
            return
        p.gone = True
        if room is not None and room.participants.get(p.participant_id) is p:
            del room.participants[p.participant_id]
        for other in (room.participants.values() if room else ()):
            other.assigned.pop(p.participant_id, None)
        for pub in p.publications:
            pub.close()
        for tracks in p.assigned.values():
            for t in tracks:
                t.unbind()
        p.assigned.clear()
        if p.connected_at is not None:
            self._reporter.report(Report(p.meeting_id, p.connection_id, p.participant_id, False))
        await PeerCounter.close(p.pc)

    # ------------------------------------------------------------------ test room

    async def negotiate_test_room(self, session_token: str, sdp_offer: str) -> str:
        """The echo room: the person's own audio and video come straight back.

        One at a time per person (keyed by the session token's subject, so more sessions do not make
        more rooms): a new offer replaces (closes) the person's previous test room, as after reloading
        the page; of several offers at once only the newest is answered, the others are ABORTED. At most
        `test_room_limit` test rooms per instance (their reserved share, RESOURCE_EXHAUSTED beyond it):
        meeting participants never wait for them, nor lose a port to them."""
        person = await self._verifier.session(session_token)
        if self.draining:
            raise FailedPrecondition("this media instance is draining: try again", reason="DRAINING")
        parse_offer(sdp_offer)
        mine = self._test_rooms.get(person)
        if mine is None:
            mine = self._test_rooms[person] = EchoRoom()
        mine.latest += 1
        number = mine.latest
        mine.waiting += 1
        try:
            async with mine.lock:
                if mine.latest != number:
                    raise Aborted(TEST_ROOM_REPLACED)
                if self.draining:
                    raise FailedPrecondition("this media instance is draining: try again", reason="DRAINING")
                if not mine.held:
                    if self.test_room_peers >= self.test_room_limit:
                        self._log_refusal()
                        raise ResourceExhausted(TEST_ROOMS_FULL)
                    mine.held = True
                try:
                    if mine.pc is not None:  # the person's previous test room ends (and frees its port) first
                        previous, mine.pc = mine.pc, None
                        if mine.timer is not None:
                            mine.timer.cancel()
                        await self._close_test_peer(previous)
                    pc = await self._echo(sdp_offer)
                except BaseException:
                    mine.held = False
                    raise
                mine.pc = pc
                self.test_peers.add(pc)
                mine.timer = asyncio.get_running_loop().call_later(
                    self._test_room_seconds, lambda: asyncio.ensure_future(self._end_test_room(person, mine, pc)))

                @pc.on("connectionstatechange")
                async def changed() -> None:
                    if pc.connectionState in ("failed", "closed"):
                        await self._end_test_room(person, mine, pc)

                return self._answer_sdp(pc)
        finally:
            mine.waiting -= 1
            self._forget_test_room(person, mine)

    def _log_refusal(self) -> None:
        """One line a minute at most, with the count (a flood must not flood the log as well); no person in it."""
        self._test_refusals += 1
        now = time.monotonic()
        if now - self._test_refusals_logged_at >= 60:
            log.warning("echo test rooms refused: %d since the last report; this instance takes %d at once",
                        self._test_refusals, self.test_room_limit)
            self._test_refusals, self._test_refusals_logged_at = 0, now

    async def _echo(self, sdp_offer: str) -> RTCPeerConnection:
        if self._rtc_ports is not None and self._test_ports is None:  # no port of the range is theirs
            raise ResourceExhausted(TEST_ROOMS_FULL)
        pc = PeerCounter.new()
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp_offer, type="offer"))
            for t in pc.getTransceivers():
                restrict_codecs(t)
                if offered_direction(t) == "sendrecv" and t.receiver.track is not None:
                    pub = Publication("echo", t.kind, t.receiver, self._keyframe_interval)
                    track = ForwardTrack(t.kind)
                    t.sender.replaceTrack(track)
                    track.attach_sender(t.sender, self._fastpath)
                    track.bind(pub)
                    t.direction = "sendrecv"
            await self._answer(pc, self._test_ports)  # only the test rooms' own ports
        except BaseException as exc:
            await PeerCounter.close(pc)
            if isinstance(exc, (InvalidArgument, ResourceExhausted)) or not isinstance(exc, Exception):
                raise
            raise InvalidArgument("sdp_offer", f"cannot be answered ({exc})") from None
        return pc

    async def _close_test_peer(self, pc: RTCPeerConnection) -> None:
        self.test_peers.discard(pc)
        await PeerCounter.close(pc)

    async def _end_test_room(self, person: str, room: EchoRoom, pc: RTCPeerConnection) -> None:
        """The test room's time is up or its connection failed or closed; its place is free once it is closed."""
        async with room.lock:
            if room.pc is pc:
                room.pc = None
                if room.timer is not None:
                    room.timer.cancel()
                await self._close_test_peer(pc)
                room.held = False
            else:  # replaced (and closed) already
                await self._close_test_peer(pc)
        self._forget_test_room(person, room)

    def _forget_test_room(self, person: str, room: EchoRoom) -> None:
        if not room.waiting and not room.held and room.pc is None and self._test_rooms.get(person) is room:
            del self._test_rooms[person]

    # ------------------------------------------------------------------ quality

    async def quality(self, meeting_id: str, participant_id: str = "") -> list[tuple[str, Quality]]:
        if not meeting_id:
            raise InvalidArgument("meeting_id", "is required")
        room = self.rooms.get(meeting_id)
        if room is None:
            raise NotFound("no open room for this meeting on this instance")
        people = list(room.participants.values())
        if participant_id:
            people = [p for p in people if p.participant_id == participant_id]
            if not people:
                raise NotFound("the participant is not connected to this room")
        return [(p.participant_id, await p.sampler.sample(p.pc)) for p in people]

    # ------------------------------------------------------------------ lifecycle

    async def drain(self, grace: float) -> None:
        """Take no new rooms; keep live rooms until they end or the grace passes, then close them."""
        self.draining = True
        deadline = time.monotonic() + grace
        # Rooms end from their own tasks (the coordinator ends them, or the last one leaves): a light
        # poll until they are gone or the grace has passed is all this needs.
        while self.rooms and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await self.shutdown()

    async def shutdown(self) -> None:
        """Disconnect everyone (rooms stay open-able elsewhere: they were not closed by roster)."""
        for room in list(self.rooms.values()):
            people = list(room.participants.values())
            await asyncio.gather(*(self._leave(p, room) for p in people))
        self.rooms.clear()
        for person, echo in list(self._test_rooms.items()):
            if echo.timer is not None:
                echo.timer.cancel()
            echo.pc = None
            echo.held = False
            self._forget_test_room(person, echo)
        for pc in list(self.test_peers):
            await self._close_test_peer(pc)
