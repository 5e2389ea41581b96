"""RegisterParticipant retried after its first attempt was applied (the answer was lost when
the gateway or roster died, see tests/faults/test_services_killed.py): the same registration
returns the same participant and changes nothing (no second row, no second 1177 message);
a different registration of the same person is still refused."""

from __future__ import annotations

import grpc
from pymongo import AsyncMongoClient
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2

from tests.roster.conftest import World

NEXT_OF_KIN = "198112289874"


async def test_the_same_registration_again_returns_the_same_participant(system_factory, person_token,
                                                                        service_token, mongo):
    system = await system_factory(["identity", "roster"])
    world = World(system, person_token, service_token)
    m = await world.meeting()
    first = await world.register_next_of_kin(m.meeting_id)
    again = await world.register_next_of_kin(m.meeting_id)
    assert again.participant_id == first.participant_id
    listed = (await world.roster.ListParticipants(roster_pb2.ListParticipantsRequest(meeting_id=m.meeting_id),
                                                  metadata=world.who("coordinator"))).participants
    assert [p.participant_id for p in listed if p.person.id == NEXT_OF_KIN] == [first.participant_id]
    client = AsyncMongoClient(mongo.uri)
    try:
        messages = await client[f"{system.prefix}_roster"]["outbox"].count_documents(
            {"_id": {"$regex": f"^nok-{m.meeting_id}-"}})
    finally:
        await client.close()
    assert messages == 1  # one 1177 invitation, not one per attempt

    # The same person under another name or role is a different registration: refused.
    err = await world.refused(world.roster.RegisterParticipant(roster_pb2.RegisterParticipantRequest(
        meeting_id=m.meeting_id, full_name="Någon Annan", role=roster_pb2.PARTICIPANT_ROLE_NEXT_OF_KIN,
        person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=NEXT_OF_KIN)),
        metadata=world.who("coordinator")), grpc.StatusCode.FAILED_PRECONDITION)
    assert "already registered" in err.details()
