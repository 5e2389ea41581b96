"""The dial-in service's calls to roster and media, through their contracts only, each with the
service's own token. A peer that fails is Unavailable to the call flow (which tells the caller
"try again later" and hangs up); roster's refusals come back as plain answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from svpl.media.v1 import media_pb2, media_pb2_grpc
from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from services.runtime import clients
from services.runtime.errors import Unavailable

TIMEOUT = 5.0
STATES = {
    roster_pb2.MEETING_STATE_SCHEDULED: "scheduled", roster_pb2.MEETING_STATE_OPEN: "open",
    roster_pb2.MEETING_STATE_LIVE: "live", roster_pb2.MEETING_STATE_ENDED: "ended",
    roster_pb2.MEETING_STATE_ABORTED: "aborted", roster_pb2.MEETING_STATE_CANCELLED: "cancelled",
}
FINAL = frozenset({"ended", "aborted", "cancelled"})


@dataclass(frozen=True)
class Meeting:
    id: str
    state: str


@dataclass(frozen=True)
class Standing:
    """What roster answers about a phone connection: may it stay, who is it, how is the meeting."""

    allowed: bool
    participant_id: str
    state: str


@dataclass(frozen=True)
class Admission:
    participant_id: str
    join_token: str
    media_address: str


class Refused(Exception):
    """Roster refused to admit (removed, not identified, not started, finished): `reason` names it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WrongCode(Exception):
    """The personal code is nobody's in this meeting (or not a code at all): one wrong entry."""


def _unavailable(peer: str, exc: grpc.aio.AioRpcError) -> Unavailable:
    return Unavailable(f"{peer} is unavailable right now ({exc.code().name})")


class Roster:
    def __init__(self, channel: grpc.aio.Channel, service_token: str) -> None:
        self._stub = roster_pb2_grpc.RosterServiceStub(channel)
        self._token = service_token

    def _md(self) -> tuple[tuple[str, str], ...]:
        return clients.metadata(self._token)

    async def resolve(self, code: str) -> Meeting | None:
        """The meeting with this dial-in ID, or None (no such meeting, or not a well-formed ID)."""
        try:
            reply = await self._stub.ResolveDialInCode(roster_pb2.ResolveDialInCodeRequest(dial_in_code=code),
                                                       metadata=self._md(), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise _unavailable("roster", exc) from None
        return Meeting(reply.meeting.meeting_id, STATES.get(reply.meeting.state, ""))

    async def report(self, meeting_id: str, connection_id: str, connected: bool, label: str = "") -> Standing:
        request = roster_pb2.ReportConnectionRequest(
            meeting_id=meeting_id, connection_id=connection_id, kind=roster_pb2.CONNECTION_KIND_PHONE,
            connected=connected, label=label)
        try:
            reply = await self._stub.ReportConnection(request, metadata=self._md(), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable("roster", exc) from None
        return Standing(reply.allowed, reply.participant_id, STATES.get(reply.state, ""))

    async def enter_code(self, meeting_id: str, connection_id: str, code: str, label: str) -> str:
        """The participant id a personal code identified the connection as. WrongCode for a code that
        is nobody's; Refused when roster takes no code now (too many wrong ones in the meeting, the
        person connected already, codes off, the connection removed, the meeting not open)."""
        request = roster_pb2.EnterPersonalCodeRequest(meeting_id=meeting_id, connection_id=connection_id,
                                                      personal_code=code, label=label)
        try:
            reply = await self._stub.EnterPersonalCode(request, metadata=self._md(), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise WrongCode() from None
            if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION):
                raise Refused(exc.code().name) from None
            raise _unavailable("roster", exc) from None
        return reply.participant_id

    async def admit(self, meeting_id: str, connection_id: str) -> Admission:
        request = roster_pb2.AdmitConnectionRequest(meeting_id=meeting_id, connection_id=connection_id)
        try:
            reply = await self._stub.AdmitConnection(request, metadata=self._md(), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION):
                raise Refused(exc.code().name) from None
            raise _unavailable("roster", exc) from None
        return Admission(reply.participant_id, reply.join_token, reply.media_address)

    async def changes(self, meeting_id: str, recheck_seconds: float) -> AsyncIterator[None]:
        """Yields at once, then whenever the meeting changes (roster's WatchMeeting), and at least
        every `recheck_seconds` (a watch that broke, e.g. roster restarting, is opened again)."""
        yield None
        while True:
            call = self._stub.WatchMeeting(roster_pb2.WatchMeetingRequest(meeting_id=meeting_id),
                                           metadata=self._md())
            try:
                while True:
                    try:
                        event = await asyncio.wait_for(call.read(), recheck_seconds)
                    except TimeoutError:
                        yield None
                        continue
                    if event is grpc.aio.EOF:
                        break
                    yield None
            except grpc.aio.AioRpcError:
                pass
            finally:
                call.cancel()
            yield None
            await asyncio.sleep(min(recheck_seconds, 1.0))


class Media:
    """Media instances' signalling (Negotiate), one channel per instance address."""

    def __init__(self, service_token: str) -> None:
        self._token = service_token
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def negotiate(self, address: str, join_token: str, sdp_offer: str, meeting_id: str) -> str:
        if address not in self._channels:
            self._channels[address] = clients.channel(address)
        stub = media_pb2_grpc.MediaServiceStub(self._channels[address])
        try:
            reply = await stub.Negotiate(
                media_pb2.NegotiateRequest(join_token=join_token, sdp_offer=sdp_offer, meeting_id=meeting_id),
                metadata=clients.metadata(self._token), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable("media", exc) from None
        return reply.sdp_answer

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
