"""Roster test set-up: identity + media + roster in-process on the real database, and a
World that calls them the way booking, the gateway (for a person) and media do."""

from __future__ import annotations

import grpc
import pytest
from svpl.common.v1 import common_pb2
from svpl.media.v1 import media_pb2, media_pb2_grpc
from svpl.roster.v1 import roster_pb2

from devstack.harness import as_token
from devstack.samples import create_request

MEDIA_INSTANCE = "media-roster-test"


class World:
    def __init__(self, system, person_token, service_token) -> None:
        self.system = system
        self.roster = system.stub("roster")
        self.media: media_pb2_grpc.MediaServiceStub | None = (
            system.stub("media") if "media" in system.running else None)
        self.person_token = person_token
        self.booking = as_token(service_token("booking"))
        self.media_md = as_token(service_token("media"))
        self.gateway = as_token(service_token("gateway"))
        self.roster_md = as_token(service_token("roster"))
        self._count = 0

    @property
    def media_stub(self) -> media_pb2_grpc.MediaServiceStub:
        """The media service, which must have been running when this World was made."""
        if self.media is None:
            raise RuntimeError("media is not running in this system")
        return self.media

    def who(self, name: str, **fields):
        return as_token(self.person_token(name, **fields))

    async def meeting(self, **kw) -> roster_pb2.Meeting:
        self._count += 1
        booking_id = kw.pop("booking_id", f"booking-{id(self)}-{self._count}")
        return (await self.roster.CreateMeeting(create_request(booking_id, **kw), metadata=self.booking)).meeting

    async def register(self, meeting_id: str, name: str, role: roster_pb2.ParticipantRole, id_kind: common_pb2.IdKind,
                       person_id: str, methods=(), by: str = "coordinator", **kw) -> roster_pb2.Participant:
        request = roster_pb2.RegisterParticipantRequest(
            meeting_id=meeting_id, full_name=name, role=role,
            person=common_pb2.PersonRef(id_kind=id_kind, id=person_id), allowed_methods=list(methods), **kw)
        return (await self.roster.RegisterParticipant(request, metadata=self.who(by))).participant

    async def register_next_of_kin(self, meeting_id: str, person_id: str = "198112289874", **kw):
        return await self.register(meeting_id, "Nils Närstående", roster_pb2.PARTICIPANT_ROLE_NEXT_OF_KIN,
                                   common_pb2.ID_KIND_PERSONNUMMER, person_id, **kw)

    async def live(self, **kw) -> roster_pb2.Meeting:
        m = await self.meeting(**kw)
        await self.roster.OpenMeeting(roster_pb2.OpenMeetingRequest(meeting_id=m.meeting_id),
                                      metadata=self.who("coordinator"))
        r = await self.roster.StartMeeting(roster_pb2.StartMeetingRequest(meeting_id=m.meeting_id),
                                           metadata=self.who("coordinator"))
        return r.meeting

    async def admit(self, meeting_id: str, who: str, **fields) -> roster_pb2.AdmitResponse:
        return await self.roster.Admit(roster_pb2.AdmitRequest(meeting_id=meeting_id), metadata=self.who(who, **fields))

    async def refused(self, call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == code, err.value.details()
        return err.value

    async def negotiate(self, peer, admitted: roster_pb2.AdmitResponse, meeting_id: str):
        sdp = await peer.offer()
        reply = await self.media_stub.Negotiate(
            media_pb2.NegotiateRequest(join_token=admitted.join_token, sdp_offer=sdp, meeting_id=meeting_id),
            metadata=self.gateway)
        await peer.answer(reply.sdp_answer)
        return reply

    async def state(self, meeting_id: str) -> roster_pb2.Meeting:
        return (await self.roster.GetMeeting(roster_pb2.GetMeetingRequest(meeting_id=meeting_id),
                                             metadata=self.booking)).meeting


@pytest.fixture
async def world(system_factory, person_token, service_token):
    system = await system_factory(["identity", "media", "roster"],
                                  overrides={"media": {"instance_id": MEDIA_INSTANCE}})
    return World(system, person_token, service_token)
