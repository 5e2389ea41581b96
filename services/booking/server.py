"""Booking service assembly: settings → storage → domain → servicer → Component."""

from __future__ import annotations

from svpl.booking.v1 import booking_pb2, booking_pb2_grpc

from services.booking.config import BookingSettings
from services.booking.servicer import ACCESS, BookingServicer
from services.runtime import auth, clients, mongo
from services.runtime.server import Binding, Component


async def build(settings: BookingSettings) -> tuple[Component, auth.KeySet]:
    identity = clients.channel(settings.identity_address)
    db = mongo.connect(settings.mongodb_uri, settings.service_name)
    binding = Binding(
        booking_pb2.DESCRIPTOR.services_by_name["BookingService"],
        BookingServicer(),
        booking_pb2_grpc.add_BookingServiceServicer_to_server,
        ACCESS,
    )
    return Component([binding], close=identity.close, mongo=db), clients.identity_keyset(identity)
