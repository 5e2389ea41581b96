"""Support service assembly: settings → storage → domain → servicer → Component."""

from __future__ import annotations

from svpl.support.v1 import support_pb2, support_pb2_grpc

from services.support.config import SupportSettings
from services.support.servicer import ACCESS, SupportServicer
from services.runtime import auth, clients, mongo
from services.runtime.server import Binding, Component


async def build(settings: SupportSettings) -> tuple[Component, auth.KeySet]:
    identity = clients.channel(settings.identity_address)
    db = mongo.connect(settings.mongodb_uri, settings.service_name)
    binding = Binding(
        support_pb2.DESCRIPTOR.services_by_name["SupportService"],
        SupportServicer(),
        support_pb2_grpc.add_SupportServiceServicer_to_server,
        ACCESS,
    )
    return Component([binding], close=identity.close, mongo=db), clients.identity_keyset(identity)
