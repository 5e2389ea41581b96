"""DialinService: thin gRPC layer over the call flow's counters."""

from __future__ import annotations

from svpl.dialin.v1 import dialin_pb2, dialin_pb2_grpc

from services.dialin.calls import Dialin
from services.runtime.auth import services

ACCESS = {
    "GetLoad": services("roster", "gateway"),
}


class DialinServicer(dialin_pb2_grpc.DialinServiceServicer):
    def __init__(self, dialin: Dialin, instance: str) -> None:
        self._d = dialin
        self._instance = instance

    async def GetLoad(self, request, context):
        return dialin_pb2.GetLoadResponse(instance=self._instance, active_calls=self._d.active,
                                          bridged_calls=self._d.bridged, accepting=self._d.accepting)
