"""The services booking calls, through their contracts: identity (validation) and roster
(meeting rooms). gRPC status codes are turned into domain errors here, so the domain
stays free of gRPC."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import grpc
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2, identity_pb2_grpc
from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from services.runtime import clients
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.runtime.timestamps import to_timestamp

_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
                grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
                grpc.StatusCode.UNKNOWN}


def _unreachable(service: str, exc: grpc.aio.AioRpcError) -> Unavailable:
    return Unavailable(f"{service} is unavailable ({exc.code().name}); try again")


class IdentityValidator:
    """identity.ValidatePersonnummer / ValidateHsaId; an invalid value names the booking field."""

    def __init__(self, channel: grpc.aio.Channel, token: str, timeout: float) -> None:
        self._stub = identity_pb2_grpc.IdentityServiceStub(channel)
        self._token = token
        self._timeout = timeout

    async def _call(self, method, request, field: str):
        try:
            return await method(request, metadata=clients.metadata(self._token), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                detail = (exc.details() or "invalid").split(": ", 1)[-1]
                raise InvalidArgument(field, detail) from None
            raise _unreachable("identity", exc) from None

    async def personnummer(self, field: str, value: str) -> str:
        response = await self._call(self._stub.ValidatePersonnummer,
                                    identity_pb2.ValidatePersonnummerRequest(personnummer=value), field)
        return response.normalized

    async def hsa_id(self, field: str, value: str) -> str:
        response = await self._call(self._stub.ValidateHsaId, identity_pb2.ValidateHsaIdRequest(hsa_id=value), field)
        return response.normalized


@dataclass(frozen=True)
class MeetingRef:
    meeting_id: str
    dial_in_code: str
    portal_url: str


class RosterMeetings:
    """roster.CreateMeeting (idempotent on booking_id) / RescheduleMeeting / CancelMeeting."""

    def __init__(self, channel: grpc.aio.Channel, token: str, timeout: float) -> None:
        self._stub = roster_pb2_grpc.RosterServiceStub(channel)
        self._token = token
        self._timeout = timeout

    async def _call(self, method, request):
        try:
            return await method(request, metadata=clients.metadata(self._token), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _UNREACHABLE:
                raise _unreachable("roster", exc) from None
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"roster: {exc.details()}") from None
            raise FailedPrecondition(f"roster refused: {exc.details()}", reason="ROSTER_REFUSED") from None

    async def create(self, *, booking_id: str, start: dt.datetime, end: dt.datetime, coordinator_hsa_id: str,
                     coordinator_name: str, patient_personnummer: str, care_unit_hsa_id: str,
                     patient_name: str = "") -> MeetingRef:
        request = roster_pb2.CreateMeetingRequest(
            booking_id=booking_id,
            scheduled=common_pb2.TimeRange(start=to_timestamp(start), end=to_timestamp(end)),
            coordinator_hsa_id=coordinator_hsa_id,
            coordinator_name=coordinator_name,
            patient=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=patient_personnummer,
                                         display_name=patient_name),
            care_unit_hsa_id=care_unit_hsa_id,
        )
        meeting = (await self._call(self._stub.CreateMeeting, request)).meeting
        return MeetingRef(meeting.meeting_id, meeting.dial_in_code, meeting.portal_url)

    async def reschedule(self, meeting_id: str, start: dt.datetime, end: dt.datetime) -> None:
        await self._call(self._stub.RescheduleMeeting, roster_pb2.RescheduleMeetingRequest(
            meeting_id=meeting_id, scheduled=common_pb2.TimeRange(start=to_timestamp(start), end=to_timestamp(end))))

    async def cancel(self, meeting_id: str, reason: str) -> None:
        await self._call(self._stub.CancelMeeting, roster_pb2.CancelMeetingRequest(meeting_id=meeting_id,
                                                                                   reason=reason))
