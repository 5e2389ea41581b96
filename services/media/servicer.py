"""MediaService: thin gRPC layer (decode, call the domain, encode).

There is no recording RPC, and no setting or code path that writes media."""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from svpl.media.v1 import media_pb2, media_pb2_grpc

from services.media.rooms import MediaRooms
from services.runtime.auth import services

ACCESS = {
    "OpenRoom": services("roster"),
    "CloseRoom": services("roster"),
    "ReleaseRoom": services("roster"),
    "Disconnect": services("roster"),
    "GetRoomState": services("gateway", "roster", "support"),
    "GetLoad": services("roster"),
    "Negotiate": services("gateway", "dialin"),  # dialin: a phone caller joins as a participant
    "NegotiateTestRoom": services("gateway"),
    "GetQualitySnapshot": services("gateway", "roster", "support"),
}

_STATUS = {
    "open": media_pb2.ROOM_STATUS_OPEN,
    "closed": media_pb2.ROOM_STATUS_CLOSED,
    "unknown": media_pb2.ROOM_STATUS_UNKNOWN,
}


def _ts(value) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


class MediaServicer(media_pb2_grpc.MediaServiceServicer):
    def __init__(self, rooms: MediaRooms, address: str) -> None:
        self._rooms = rooms
        self._address = address

    async def OpenRoom(self, request, context):
        await self._rooms.open_room(request.meeting_id)
        return media_pb2.OpenRoomResponse(media_instance=self._rooms.instance_id, address=self._address)

    async def CloseRoom(self, request, context):
        return media_pb2.CloseRoomResponse(disconnected=await self._rooms.close_room(request.meeting_id))

    async def ReleaseRoom(self, request, context):
        return media_pb2.ReleaseRoomResponse(disconnected=await self._rooms.release_room(request.meeting_id))

    async def Disconnect(self, request, context):
        n = await self._rooms.disconnect(request.meeting_id, request.participant_id)
        return media_pb2.DisconnectResponse(disconnected=n)

    async def GetRoomState(self, request, context):
        status, people = await self._rooms.status(request.meeting_id)
        return media_pb2.GetRoomStateResponse(
            status=_STATUS[status],
            participants=[
                media_pb2.RoomParticipant(
                    participant_id=p.participant_id,
                    connection_id=p.connection_id,
                    connection_state=p.state,
                    published_tracks=len(p.publications),
                    connected_at=_ts(p.connected_at),
                    showing=[
                        media_pb2.SlotAssignment(publisher_participant_id=pid, mids=[t.mid for t in tracks])
                        for pid, tracks in p.assigned.items()
                    ],
                )
                for p in people
            ],
        )

    async def GetLoad(self, request, context):
        load = self._rooms.load()
        return media_pb2.GetLoadResponse(
            media_instance=self._rooms.instance_id,
            address=self._address,
            rooms=load.rooms,
            participants=load.participants,
            forwarded_streams=load.forwarded_streams,
            cpu=load.cpu,
            accepting=load.accepting,
            capacity_participants=self._rooms.capacity,
            test_room_peers=load.test_room_peers,
            capacity_test_room_peers=load.test_room_limit,
        )

    async def Negotiate(self, request, context):
        answer, connection_id = await self._rooms.negotiate(request.join_token, request.sdp_offer, request.meeting_id)
        return media_pb2.NegotiateResponse(sdp_answer=answer, connection_id=connection_id)

    async def NegotiateTestRoom(self, request, context):
        answer = await self._rooms.negotiate_test_room(request.session_token, request.sdp_offer)
        return media_pb2.NegotiateTestRoomResponse(sdp_answer=answer)

    async def GetQualitySnapshot(self, request, context):
        samples = await self._rooms.quality(request.meeting_id, request.participant_id)
        return media_pb2.GetQualitySnapshotResponse(
            stats=[
                media_pb2.QualityStats(
                    participant_id=pid,
                    round_trip_ms=q.round_trip_ms,
                    packet_loss=q.packet_loss,
                    jitter_ms=q.jitter_ms,
                    inbound_bitrate_kbps=q.inbound_kbps,
                    outbound_bitrate_kbps=q.outbound_kbps,
                    measured_at=_ts(q.measured_at),
                    warnings=q.warnings,
                    poor=q.poor,
                )
                for pid, q in samples
            ]
        )
