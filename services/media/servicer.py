"""MediaService: thin gRPC layer (decode, call the domain, encode).

Methods not yet implemented answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from svpl.media.v1 import media_pb2_grpc

from services.runtime import auth
from services.runtime.auth import ANYONE, LOGGED_IN, persons_with, services

ACCESS = {
    "OpenRoom": services("roster"),
    "CloseRoom": services("roster"),
    "Disconnect": services("roster"),
    "GetRoomState": services("roster", "support"),
    "GetLoad": services("roster"),
    "Negotiate": services("gateway"),
    "NegotiateTestRoom": services("gateway"),
    "GetQualitySnapshot": services("gateway", "roster", "support"),
}


class MediaServicer(media_pb2_grpc.MediaServiceServicer):
    pass
