"""Roster's calls to identity, media and booking, through their contracts only.

Each call carries roster's own service token. gRPC failures become domain errors:
identity's INVALID_ARGUMENT on an ID is the caller's bad input (passed on with the
field); anything else from a peer is UNAVAILABLE for our caller.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from dataclasses import dataclass

import grpc
from svpl.booking.v1 import booking_pb2, booking_pb2_grpc
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2, identity_pb2_grpc
from svpl.media.v1 import media_pb2, media_pb2_grpc

from services.roster import model
from services.runtime import clients
from services.runtime.errors import DomainError, FailedPrecondition, InvalidArgument, Unavailable
from services.runtime.outbox import OutboxMessage, PermanentDeliveryError, RetryableDeliveryError
from services.runtime.tls import ClientTls

TIMEOUT = 5.0


class Refused(FailedPrecondition):
    """Identity refused to issue a join token: its scope (meeting or participant) is revoked."""


def _unavailable(peer: str, exc: grpc.aio.AioRpcError) -> DomainError:
    return Unavailable(f"{peer} is unavailable right now ({exc.code().name}); try again")


class BookingPhoneTasks:
    """ChannelAdapter (outbox): the coordinator's phone task for a person a message did not reach,
    added by booking (AddPhoneTask, idempotent on the key). Booking being away is retried."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str) -> None:
        self._stub = booking_pb2_grpc.BookingServiceStub(channel)
        self._token = service_token

    async def deliver(self, message: OutboxMessage) -> None:
        p = message.payload
        try:
            await self._stub.AddPhoneTask(booking_pb2.AddPhoneTaskRequest(
                booking_id=p["booking_id"], task_key=p["task_key"], person_name=p["person_name"],
                instructions=p["instructions"]), metadata=clients.metadata(self._token), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                              grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              grpc.StatusCode.INTERNAL):  # booking away, or a fault a deployment mends
                raise RetryableDeliveryError(f"booking: {exc.code().name}") from None
            raise PermanentDeliveryError(f"booking refused the phone task: {exc.code().name}") from None


class Identity:
    def __init__(self, channel: grpc.aio.Channel, service_token: str) -> None:
        self._stub = identity_pb2_grpc.IdentityServiceStub(channel)
        self._token = service_token

    async def _call(self, method, request):
        return await method(request, metadata=clients.metadata(self._token), timeout=TIMEOUT)

    async def normalize(self, id_kind: str, value: str, field: str) -> str:
        """The normalised HSA-id or 12-digit personnummer; INVALID_ARGUMENT naming `field` if invalid."""
        try:
            if id_kind == model.HSA_ID:
                reply = await self._call(self._stub.ValidateHsaId, identity_pb2.ValidateHsaIdRequest(hsa_id=value))
            else:
                reply = await self._call(self._stub.ValidatePersonnummer,
                                         identity_pb2.ValidatePersonnummerRequest(personnummer=value))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                detail = (exc.details() or "").split(": ", 1)[-1]
                raise InvalidArgument(field, detail or "is not valid") from None
            raise _unavailable("identity", exc) from None
        return reply.normalized

    async def issue_join_token(self, meeting: model.Meeting, p: model.Participant,
                               ttl_seconds: int) -> tuple[str, dt.datetime]:
        kind = common_pb2.ID_KIND_HSA_ID if p.id_kind == model.HSA_ID else common_pb2.ID_KIND_PERSONNUMMER
        request = identity_pb2.IssueJoinTokenRequest(
            meeting_id=meeting.id, participant_id=p.id, media_instance=meeting.media_instance,
            person=common_pb2.PersonRef(id_kind=kind, id=p.person_id, display_name=p.full_name),
            ttl_seconds=ttl_seconds,
        )
        try:
            reply = await self._call(self._stub.IssueJoinToken, request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise Refused(exc.details() or "join tokens revoked", reason="REVOKED") from None
            raise _unavailable("identity", exc) from None
        return reply.token, reply.expires_at.ToDatetime(tzinfo=dt.timezone.utc)

    async def revoke(self, meeting_id: str, participant_id: str = "", reason: str = "") -> None:
        """Every join token of the meeting (or of one participant in it) stops working."""
        request = identity_pb2.RevokeTokensRequest(meeting_id=meeting_id, participant_id=participant_id, reason=reason)
        try:
            await self._call(self._stub.RevokeTokens, request)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable("identity", exc) from None


@dataclass(frozen=True)
class Load:
    control: str  # the gRPC address roster called
    instance: str
    rooms: int
    participants: int
    cpu: float
    accepting: bool
    capacity: int

    @property
    def has_room(self) -> bool:
        return self.accepting and (self.capacity <= 0 or self.participants < self.capacity)


class Media:
    """The media instances (one channel each, by control address)."""

    def __init__(self, addresses: list[str], service_token: str, pods_dns: str = "",
                 tls: ClientTls | None = None, server_name: str = "") -> None:
        self.addresses = list(addresses)
        # Instances are called at their pod address: TLS verifies media's name (server_name) instead.
        self._tls, self._server_name = tls, server_name
        self._pods_dns = pods_dns
        self._token = service_token
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def instances(self) -> list[str]:
        """The configured addresses, plus one per address the pods' DNS name resolves to now."""
        found = list(self.addresses)
        if self._pods_dns:
            host, _, port = self._pods_dns.rpartition(":")
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except (OSError, ValueError):
                infos = []
            for family, *_, sockaddr in infos:
                address = f"[{sockaddr[0]}]:{port}" if family == socket.AF_INET6 else f"{sockaddr[0]}:{port}"
                if address not in found:
                    found.append(address)
        return found

    def _stub(self, address: str) -> media_pb2_grpc.MediaServiceStub:
        if address not in self._channels:
            self._channels[address] = clients.channel(address, self._tls, server_name=self._server_name)
        return media_pb2_grpc.MediaServiceStub(self._channels[address])

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def _load(self, address: str) -> Load | None:
        try:
            r = await self._stub(address).GetLoad(media_pb2.GetLoadRequest(), metadata=clients.metadata(self._token),
                                                  timeout=2.0)
        except grpc.aio.AioRpcError:
            return None  # an instance that does not answer takes no new room
        # Echo test rooms load an instance like participants do: ranked as such. Their limit is reserved on
        # top of the participant capacity (media's `accepting` is about participants alone), so it is added
        # to the capacity too. Fields 9/10 are 0 from a media without them: the same as before.
        return Load(address, r.media_instance, r.rooms, r.participants + r.test_room_peers, r.cpu, r.accepting,
                    r.capacity_participants + r.capacity_test_room_peers)

    async def least_loaded(self, exclude: str = "") -> Load:
        """The instance to open a new room on; `exclude`: a control address known not to answer (not
        asked, so a move does not wait for its load call to time out as well)."""
        addresses = [a for a in await self.instances() if a != exclude]
        loads = [x for x in await asyncio.gather(*(self._load(a) for a in addresses)) if x is not None]
        candidates = [x for x in loads if x.has_room]
        if not candidates:
            raise Unavailable("no media instance can take a new room right now; try again shortly")
        return min(candidates, key=lambda x: (x.participants, x.rooms, x.cpu))

    async def open_room(self, control: str, meeting_id: str) -> tuple[str, str]:
        try:
            r = await self._stub(control).OpenRoom(media_pb2.OpenRoomRequest(meeting_id=meeting_id),
                                                   metadata=clients.metadata(self._token), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise FailedPrecondition(f"media refused the room: {exc.details()}", reason="MEDIA_REFUSED") from None
            raise _unavailable("media", exc) from None
        return r.media_instance, r.address

    async def hosts_room(self, control: str, meeting_id: str, timeout: float) -> bool:  # noqa: ASYNC109 - the call's gRPC deadline
        """Whether the instance at `control` answers and still holds the room. False when it does
        not answer in time (UNAVAILABLE, DEADLINE_EXCEEDED: killed, its node gone) or answers that
        it does not know the room (it restarted and lost it). A room it reports closed counts as
        held: only roster closes rooms, for final meetings, which admit no one anyway."""
        try:
            r = await self._stub(control).GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=meeting_id),
                                                       metadata=clients.metadata(self._token), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return False
            raise _unavailable("media", exc) from None
        return r.status != media_pb2.ROOM_STATUS_UNKNOWN

    async def close_room(self, control: str, meeting_id: str) -> None:
        """Close the room on its instance. If that instance is gone (killed, node lost), its room went
        with it: any other instance then records the closed id in media's shared database, so the
        room can never open again anywhere, and the clean-up does not retry a dead address forever."""
        request = media_pb2.CloseRoomRequest(meeting_id=meeting_id)
        try:
            await self._stub(control).CloseRoom(request, metadata=clients.metadata(self._token), timeout=TIMEOUT)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise _unavailable("media", exc) from None
            first = exc
        for other in await self.instances():
            if other == control:
                continue
            try:
                await self._stub(other).CloseRoom(request, metadata=clients.metadata(self._token), timeout=TIMEOUT)
                return
            except grpc.aio.AioRpcError:
                continue
        raise _unavailable("media", first) from None

    async def release_room(self, control: str, meeting_id: str) -> int:
        """Ask the instance at `control` to let go of its copy of a room that moved away from it."""
        try:
            r = await self._stub(control).ReleaseRoom(media_pb2.ReleaseRoomRequest(meeting_id=meeting_id),
                                                      metadata=clients.metadata(self._token), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable("media", exc) from None
        return r.disconnected

    async def disconnect(self, control: str, meeting_id: str, participant_id: str) -> None:
        try:
            await self._stub(control).Disconnect(
                media_pb2.DisconnectRequest(meeting_id=meeting_id, participant_id=participant_id),
                metadata=clients.metadata(self._token), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable("media", exc) from None
