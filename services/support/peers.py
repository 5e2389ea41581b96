"""Support's calls to other services, through their contracts only, with its own service token.

Evidence for a report about a meeting: first roster's facts (state, counts, the room's media
instance), read on the reporter's behalf (GetReportEvidence: roster answers only when the reporter
is in the meeting, and its access record names the reporter); then, only for a meeting roster
confirmed, the connection-quality snapshot from media, and a rebook request to booking (naming the
reporter as who asked). A meeting that does not exist and someone else's meeting get the same note
and no meeting data. Whatever cannot be had (a service unreachable) becomes a note saying what is
missing; gathering evidence never fails a report. Results are plain Python (the domain sees no
gRPC types).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import grpc
from svpl.booking.v1 import booking_pb2, booking_pb2_grpc
from svpl.common.v1 import common_pb2
from svpl.media.v1 import media_pb2, media_pb2_grpc
from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from services.runtime import clients
from services.runtime.timestamps import to_datetime
from services.runtime.tls import ClientTls

log = logging.getLogger("svpl.support.peers")

# Outcomes of a rebook request.
REBOOK_DONE = "done"
REBOOK_PENDING = "pending"  # booking could not be reached: retried by the sweep
REBOOK_REFUSED = "refused"  # booking answered no (unknown meeting, meeting over, ...)

_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED,
              grpc.StatusCode.UNIMPLEMENTED}  # UNIMPLEMENTED: booking not yet rolled out to this version


# What roster said about a meeting named in a report, for its reporter.
CONFIRMED = "confirmed"  # the reporter is in the meeting: its facts
NOT_IN_MEETING = "not_in_meeting"  # no such meeting, or not the reporter's: never told apart
UNCONFIRMED = "unconfirmed"  # roster did not answer (or refused support): nothing is known

_ID_KINDS = {"hsa_id": common_pb2.ID_KIND_HSA_ID, "personnummer": common_pb2.ID_KIND_PERSONNUMMER}


def not_in_meeting_note(meeting_id: str) -> str:
    """The one note for a meeting id that does not exist and for someone else's meeting."""
    return f"Inget underlag: mötet {meeting_id} finns inte bland anmälarens möten"


@dataclass(frozen=True)
class MeetingFacts:
    outcome: str
    state: str = ""
    registered_count: int = 0
    connected_count: int = 0
    media_address: str = ""
    # The meeting's patient and care unit: named in the access records of the desk's work (never shown).
    patient: str = ""
    care_unit: str = ""
    note: str = ""
    transient: bool = False  # UNCONFIRMED: worth asking again later


def _why(exc: grpc.aio.AioRpcError) -> str:
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return "svarade inte"
    if code == grpc.StatusCode.NOT_FOUND:
        return "hittade inte deltagaren i mötets rum"
    return f"svarade {code.name}"


class Peers:
    def __init__(self, roster_address: str, booking_address: str, media_address: str, token: str,
                 timeout: float, tls: ClientTls | None = None, media_server_name: str = "") -> None:
        self._token = token
        self._tls, self._media_server_name = tls, media_server_name
        self._timeout = timeout
        self._default_media = media_address
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._roster = roster_pb2_grpc.RosterServiceStub(self._channel(roster_address))
        self._booking = booking_pb2_grpc.BookingServiceStub(self._channel(booking_address))

    def _channel(self, address: str, server_name: str = "") -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = clients.channel(address, self._tls, server_name=server_name)
        return self._channels[address]

    def _media(self, address: str) -> media_pb2_grpc.MediaServiceStub:
        # A media instance is called at its pod address: TLS verifies media's own name instead.
        return media_pb2_grpc.MediaServiceStub(self._channel(address, self._media_server_name))

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()

    async def meeting_facts(self, meeting_id: str, reporter_id: str, reporter_id_kind: str) -> MeetingFacts:
        """Roster's facts about the meeting, read on the reporter's behalf: roster answers only when the
        reporter is in the meeting (registered, not removed, or its coordinator / a delegate), and
        answers "no such meeting" and "not in it" alike (NOT_FOUND); its access record names the reporter."""
        request = roster_pb2.GetReportEvidenceRequest(meeting_id=meeting_id, on_behalf_of=common_pb2.PersonRef(
            id=reporter_id, id_kind=_ID_KINDS.get(reporter_id_kind, common_pb2.ID_KIND_UNSPECIFIED)))
        try:
            reply = await self._roster.GetReportEvidence(request, metadata=clients.metadata(self._token),
                                                         timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            # Not found, or not the reporter's meeting, or not a meeting id at all: one and the same.
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return MeetingFacts(NOT_IN_MEETING)
            return MeetingFacts(UNCONFIRMED, note=f"Mötets läge saknas: roster {_why(exc)}",
                                transient=exc.code() in _TRANSIENT)
        return MeetingFacts(CONFIRMED, state=roster_pb2.MeetingState.Name(reply.state),
                            registered_count=reply.registered_count, connected_count=reply.connected_count,
                            media_address=reply.media_address, patient=reply.patient.id,
                            care_unit=reply.care_unit_hsa_id)

    async def meeting_evidence(self, meeting_id: str, participant_id: str, facts: MeetingFacts) -> dict:
        """The evidence for a report: roster's facts and, only for a meeting roster confirmed is the
        reporter's, the quality snapshot (media), as of now. Anything else gets no meeting data at all,
        and the same note whether the meeting does not exist or is someone else's."""
        evidence: dict = {"meeting_id": meeting_id, "meeting_state": "", "registered_count": 0,
                          "connected_count": 0, "quality": [], "captured_at": dt.datetime.now(dt.timezone.utc)}
        if facts.outcome == NOT_IN_MEETING:
            evidence["note"] = not_in_meeting_note(meeting_id)
            return evidence
        if facts.outcome == UNCONFIRMED:
            evidence["note"] = (f"{facts.note}; "
                                "Anslutningskvalitet hämtades inte: mötet kunde inte bekräftas hos roster")
            return evidence
        evidence.update(meeting_state=facts.state, registered_count=facts.registered_count,
                        connected_count=facts.connected_count, patient=facts.patient, care_unit=facts.care_unit)
        notes: list[str] = []
        try:
            # The room's own media instance (several media pods: the configured address may not host it).
            snapshot = await self._media(facts.media_address or self._default_media).GetQualitySnapshot(
                media_pb2.GetQualitySnapshotRequest(meeting_id=meeting_id, participant_id=participant_id),
                metadata=clients.metadata(self._token), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            notes.append(f"Anslutningskvalitet saknas: media {_why(exc)}")
        else:
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
        evidence["note"] = "; ".join(notes)
        if notes:
            log.info("evidence for meeting %s incomplete: %s", meeting_id, evidence["note"])
        return evidence

    async def request_rebook(self, meeting_id: str, reason: str, ticket_id: str, facts: MeetingFacts,
                             reporter_id: str, reporter_id_kind: str, reporter_name: str = "") -> tuple[str, str]:
        """Ask the coordinator (on the booking) to consider rebooking, for the reporter, and only for a
        meeting roster confirmed is the reporter's (`facts`). Returns (outcome, note)."""
        if facts.outcome == NOT_IN_MEETING:
            return REBOOK_REFUSED, "Begäran om ombokning skickades inte: mötet finns inte bland anmälarens möten"
        if facts.outcome == UNCONFIRMED:
            if facts.transient:
                return REBOOK_PENDING, ("Begäran om ombokning väntar: mötet kunde inte bekräftas hos roster, "
                                        "försöker igen")
            return REBOOK_REFUSED, "Begäran om ombokning togs inte emot: mötet kunde inte bekräftas hos roster"
        try:
            await self._booking.RequestRebook(
                booking_pb2.RequestRebookRequest(
                    meeting_id=meeting_id, reason=reason, ticket_id=ticket_id,
                    on_behalf_of=common_pb2.PersonRef(
                        id=reporter_id, id_kind=_ID_KINDS.get(reporter_id_kind, common_pb2.ID_KIND_UNSPECIFIED),
                        display_name=reporter_name)),
                metadata=clients.metadata(self._token), timeout=self._timeout)
            return REBOOK_DONE, ""
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _TRANSIENT:
                return REBOOK_PENDING, f"Begäran om ombokning väntar: bokningen {_why(exc)}, försöker igen"
            return REBOOK_REFUSED, f"Begäran om ombokning togs inte emot: {exc.details() or exc.code().name}"
