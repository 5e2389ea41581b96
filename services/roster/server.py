"""Roster service assembly: settings → storage → domain → servicer → Component."""

from __future__ import annotations

from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from services.roster.config import RosterSettings
from services.roster.servicer import ACCESS, RosterServicer
from services.runtime import auth, clients, mongo
from services.runtime.server import Binding, Component


async def build(settings: RosterSettings) -> tuple[Component, auth.KeySet]:
    identity = clients.channel(settings.identity_address)
    db = mongo.connect(settings.mongodb_uri, settings.service_name)
    binding = Binding(
        roster_pb2.DESCRIPTOR.services_by_name["RosterService"],
        RosterServicer(),
        roster_pb2_grpc.add_RosterServiceServicer_to_server,
        ACCESS,
    )
    return Component([binding], close=identity.close, mongo=db), clients.identity_keyset(identity)
