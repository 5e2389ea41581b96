"""Identity service assembly: settings → storage → domain → servicer → Component."""

from __future__ import annotations

from svpl.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity.config import IdentitySettings
from services.identity.servicer import ACCESS, IdentityServicer
from services.identity.tokens import KeyRing
from services.runtime import auth, mongo
from services.runtime.server import Binding, Component


async def build(settings: IdentitySettings) -> tuple[Component, auth.KeySet]:
    keys = KeyRing.load(settings.signing_keys_dir)
    db = mongo.connect(settings.mongodb_uri, settings.service_name)
    servicer = IdentityServicer(keys)
    binding = Binding(
        identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
        servicer,
        identity_pb2_grpc.add_IdentityServiceServicer_to_server,
        ACCESS,
    )
    return Component([binding], mongo=db), keys.keyset()
