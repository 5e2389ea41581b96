"""Support's calls to other services, through their contracts only, with its own service token.

Evidence for a report about a meeting: the meeting's facts and connected list from
roster, the participant's connection-quality snapshot from media. Whatever cannot
be had (a service unreachable, the meeting unknown) becomes a note saying what is
missing; gathering evidence never fails a report. Rebook requests go to booking.
Results are plain dicts (the domain sees no gRPC types).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import grpc
from svpl.booking.v1 import booking_pb2, booking_pb2_grpc
from svpl.media.v1 import media_pb2, media_pb2_grpc
from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from services.runtime import clients
from services.runtime.timestamps import to_datetime

log = logging.getLogger("svpl.support.peers")

# Outcomes of a rebook request.
REBOOK_DONE = "done"
REBOOK_PENDING = "pending"  # booking could not be reached: retried by the sweep
REBOOK_REFUSED = "refused"  # booking answered no (unknown meeting, meeting over, ...)

_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED,
              grpc.StatusCode.UNIMPLEMENTED}  # UNIMPLEMENTED: booking not yet rolled out to this version


def _why(exc: grpc.aio.AioRpcError) -> str:
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return "svarade inte"
    if code == grpc.StatusCode.NOT_FOUND:
        return "hittade inte deltagaren i mötets rum"
    return f"svarade {code.name}"


class Peers:
    def __init__(self, roster_address: str, booking_address: str, media_address: str, token: str,
                 timeout: float) -> None:
        self._token = token
        self._timeout = timeout
        self._default_media = media_address
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._roster = roster_pb2_grpc.RosterServiceStub(self._channel(roster_address))
        self._booking = booking_pb2_grpc.BookingServiceStub(self._channel(booking_address))

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = clients.channel(address)
        return self._channels[address]

    def _media(self, address: str) -> media_pb2_grpc.MediaServiceStub:
        return media_pb2_grpc.MediaServiceStub(self._channel(address))

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()

    async def meeting_evidence(self, meeting_id: str, participant_id: str) -> dict:
        """Meeting state and counts (roster) and the quality snapshot (media), as of now."""
        md = clients.metadata(self._token)
        notes: list[str] = []
        evidence: dict = {"meeting_id": meeting_id, "meeting_state": "", "registered_count": 0,
                          "connected_count": 0, "quality": [], "captured_at": dt.datetime.now(dt.timezone.utc)}
        media_address = ""
        roster_answered = False
        try:
            meeting = (await self._roster.GetMeeting(roster_pb2.GetMeetingRequest(meeting_id=meeting_id),
                                                     metadata=md, timeout=self._timeout)).meeting
            roster_answered = True
            evidence["meeting_state"] = roster_pb2.MeetingState.Name(meeting.state)
            evidence["registered_count"] = meeting.registered_count
            evidence["connected_count"] = meeting.connected_count
            # The room's own media instance (several media pods: the configured address may not host it).
            media_address = meeting.media_address
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                evidence["note"] = f"Mötet {meeting_id} finns inte hos roster"
                return evidence
            notes.append(f"Mötets läge saknas: roster {_why(exc)}")

        async def connected() -> None:
            try:
                reply = await self._roster.GetConnectedList(
                    roster_pb2.GetConnectedListRequest(meeting_id=meeting_id), metadata=md, timeout=self._timeout)
                evidence["connected_count"] = reply.count
            except grpc.aio.AioRpcError as exc:
                notes.append(f"Listan över anslutna saknas: roster {_why(exc)}")

        async def quality() -> None:
            try:
                snapshot = await self._media(media_address or self._default_media).GetQualitySnapshot(
                    media_pb2.GetQualitySnapshotRequest(meeting_id=meeting_id, participant_id=participant_id),
                    metadata=md, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                notes.append(f"Anslutningskvalitet saknas: media {_why(exc)}")
                return
            evidence["quality"] = [
                {"participant_id": s.participant_id, "round_trip_ms": s.round_trip_ms,
                 "packet_loss": s.packet_loss, "jitter_ms": s.jitter_ms,
                 "inbound_bitrate_kbps": s.inbound_bitrate_kbps, "outbound_bitrate_kbps": s.outbound_bitrate_kbps,
                 "warnings": list(s.warnings), "measured_at": to_datetime(s.measured_at)}
                for s in snapshot.stats
            ]
            if not evidence["quality"]:
                who = f"deltagare {participant_id}" if participant_id else "mötet"
                notes.append(f"Ingen anslutningskvalitet uppmätt för {who}")

        # Both at once; the connected list only when roster answered at all.
        await asyncio.gather(*([connected()] if roster_answered else []), quality())
        evidence["note"] = "; ".join(notes)
        if notes:
            log.info("evidence for meeting %s incomplete: %s", meeting_id, evidence["note"])
        return evidence

    async def request_rebook(self, meeting_id: str, reason: str, ticket_id: str) -> tuple[str, str]:
        """Ask the coordinator (on the booking) to consider rebooking. Returns (outcome, note)."""
        try:
            await self._booking.RequestRebook(
                booking_pb2.RequestRebookRequest(meeting_id=meeting_id, reason=reason, ticket_id=ticket_id),
                metadata=clients.metadata(self._token), timeout=self._timeout)
            return REBOOK_DONE, ""
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _TRANSIENT:
                return REBOOK_PENDING, f"Begäran om ombokning väntar: bokningen {_why(exc)}, försöker igen"
            return REBOOK_REFUSED, f"Begäran om ombokning togs inte emot: {exc.details() or exc.code().name}"
