"""Media service assembly: settings → storage → domain → servicer → Component."""

from __future__ import annotations

from svpl.media.v1 import media_pb2, media_pb2_grpc

from services.media.config import MediaSettings
from services.media.servicer import ACCESS, MediaServicer
from services.runtime import auth, clients, mongo
from services.runtime.server import Binding, Component


async def build(settings: MediaSettings) -> tuple[Component, auth.KeySet]:
    identity = clients.channel(settings.identity_address)
    db = mongo.connect(settings.mongodb_uri, settings.service_name)
    binding = Binding(
        media_pb2.DESCRIPTOR.services_by_name["MediaService"],
        MediaServicer(),
        media_pb2_grpc.add_MediaServiceServicer_to_server,
        ACCESS,
    )
    return Component([binding], close=identity.close, mongo=db), clients.identity_keyset(identity)
