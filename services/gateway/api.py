"""REST under /api/v1: decode and validate (pydantic), relay the person's own token to the
service that owns the rule, shape the contract's answer as JSON. No business rules here."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import time
import typing
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from svpl.booking.v1 import booking_pb2
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2
from svpl.support.v1 import support_pb2

from services.gateway import access, protojson
from services.gateway.access import as_gateway, relays, session_only
from services.gateway.problems import Problem, problem_responses
from services.gateway.security import Session, current_session
from services.runtime import auth, clients

Id = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,128}$", description="An id as a service issued it")]
Me = Annotated[Session, Depends(current_session)]

# Every message an endpoint answers with; their schemas are added to the OpenAPI document.
RESPONSE_MESSAGES: list = []


def answers(message_cls: type[Message], *problems: int) -> dict:
    """The `responses` of a route that answers with a contract message."""
    RESPONSE_MESSAGES.append(message_cls.DESCRIPTOR)
    ok = {200: {"description": message_cls.DESCRIPTOR.name,
                "content": {"application/json": {"schema": protojson.ref(message_cls.DESCRIPTOR)}}}}
    return {**ok, **problem_responses(400, 401, 403, 413, 429, 503, *problems)}


def enum_names(enum_type) -> tuple[str, ...]:
    return tuple(v.name for v in enum_type.DESCRIPTOR.values if v.number)


def literal(enum_type):
    return typing.Literal[enum_names(enum_type)]  # type: ignore[valid-type]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(dt.timezone.utc))
    return out


def time_range(start: dt.datetime | None, end: dt.datetime | None) -> common_pb2.TimeRange:
    period = common_pb2.TimeRange()
    if start:
        period.start.CopyFrom(ts(start))
    if end:
        period.end.CopyFrom(ts(end))
    return period


def relay(session: Session) -> dict:
    """Call options that relay the person's own token (and the request id)."""
    return {"metadata": clients.metadata(session.token)}


def backends(request: Request):
    return request.app.state.backends


def timeout(request: Request) -> float:
    return request.app.state.settings.rpc_timeout_seconds


def reply(message: Message) -> dict:
    return protojson.to_json(message)


async def call(request: Request, me: Session, message: Message) -> Message:
    """Call the method this route declares (`@relays`, or `relaying=` of `@as_gateway`) as the
    person, their own token relayed."""
    declared = access.declared(request)
    service, rpc = (declared.service, declared.rpc) if declared.kind == "relay" else (declared.relaying or ("", ""))
    if message.DESCRIPTOR.name != f"{rpc}Request":
        raise RuntimeError(f"{request.url.path}: a {message.DESCRIPTOR.name} is not what "
                           f"{service}.{rpc} ({declared.kind}) takes")
    method = getattr(getattr(backends(request), service), rpc)
    return await method(message, timeout=timeout(request), **relay(me))


async def relayed(request: Request, me: Session, message: Message) -> dict:
    """`call()`, answered with the JSON of the reply."""
    return reply(await call(request, me, message))


router = APIRouter(prefix="/api/v1")

# ------------------------------------------------------------------ bookings


class PartyBody(Body):
    kind: literal(booking_pb2.PartyKind)
    name: str = Field(min_length=1, max_length=200)
    channel: literal(booking_pb2.Channel)
    address: str = Field("", max_length=200)


class CreateBookingBody(Body):
    idempotency_key: str = Field(min_length=8, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")
    patient_personnummer: str = Field(min_length=10, max_length=13)
    start: AwareDatetime
    duration_minutes: int = Field(ge=1, le=24 * 60)
    booking_unit_hsa_id: str = Field(min_length=1, max_length=31)
    care_service: str = Field(min_length=1, max_length=200)
    contact_type: str = Field(min_length=1, max_length=200)
    parties: list[PartyBody] = Field(default_factory=list, max_length=50)


class CancelBody(Body):
    reason: str = Field("", max_length=1000)


@router.get("/booking-options", tags=["bookings"], responses=answers(booking_pb2.ListBookingOptionsResponse))
@relays("booking", "ListBookingOptions")
async def booking_options(request: Request, me: Me):
    return await relayed(request, me, booking_pb2.ListBookingOptionsRequest())


@router.post("/bookings", tags=["bookings"], responses=answers(booking_pb2.CreateBookingResponse, 409))
@relays("booking", "CreateBooking")
async def create_booking(request: Request, me: Me, body: CreateBookingBody):
    msg = booking_pb2.CreateBookingRequest(
        idempotency_key=body.idempotency_key, patient_personnummer=body.patient_personnummer,
        start=ts(body.start), duration_minutes=body.duration_minutes,
        booking_unit_hsa_id=body.booking_unit_hsa_id, coordinator_hsa_id=me.caller.id,
        care_service=body.care_service, contact_type=body.contact_type,
        parties=[booking_pb2.Party(kind=p.kind, name=p.name, channel=p.channel, address=p.address)
                 for p in body.parties],
    )
    return await relayed(request, me, msg)


@router.get("/bookings", tags=["bookings"], responses=answers(booking_pb2.ListBookingsResponse))
@relays("booking", "ListBookings")
async def list_bookings(request: Request, me: Me,
                        start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
                        end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
                        page_token: Annotated[str, Query(max_length=500)] = ""):
    msg = booking_pb2.ListBookingsRequest(coordinator_hsa_id=me.caller.id, period=time_range(start, end),
                                          page=common_pb2.PageRequest(page_token=page_token))
    return await relayed(request, me, msg)


@router.get("/bookings/{booking_id}", tags=["bookings"], responses=answers(booking_pb2.GetBookingResponse, 404))
@relays("booking", "GetBooking")
async def get_booking(request: Request, me: Me, booking_id: Id):
    return await relayed(request, me, booking_pb2.GetBookingRequest(booking_id=booking_id))


@router.get("/bookings/{booking_id}/invitations", tags=["bookings"],
            responses=answers(booking_pb2.ListInvitationsResponse, 404))
@relays("booking", "ListInvitations")
async def list_invitations(request: Request, me: Me, booking_id: Id):
    return await relayed(request, me, booking_pb2.ListInvitationsRequest(booking_id=booking_id))


@router.post("/bookings/{booking_id}/cancel", tags=["bookings"],
             responses=answers(booking_pb2.CancelBookingResponse, 404, 409))
@relays("booking", "CancelBooking")
async def cancel_booking(request: Request, me: Me, booking_id: Id, body: CancelBody):
    return await relayed(request, me, booking_pb2.CancelBookingRequest(booking_id=booking_id, reason=body.reason))


# ------------------------------------------------------------------ meetings


@router.get("/meetings", tags=["meetings"], responses=answers(roster_pb2.ListMyMeetingsResponse))
@relays("roster", "ListMyMeetings")
async def list_meetings(request: Request, me: Me,
                        start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
                        end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
                        page_token: Annotated[str, Query(max_length=500)] = ""):
    msg = roster_pb2.ListMyMeetingsRequest(period=time_range(start, end),
                                           page=common_pb2.PageRequest(page_token=page_token))
    return await relayed(request, me, msg)


@router.get("/meetings/{meeting_id}", tags=["meetings"], responses=answers(roster_pb2.GetMeetingResponse, 404))
@relays("roster", "GetMeeting")
async def get_meeting(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.GetMeetingRequest(meeting_id=meeting_id))


def _lifecycle(rpc: str, request_cls, response_cls, summary: str):
    @relays("roster", rpc)
    async def handler(request: Request, me: Me, meeting_id: Id):
        return await relayed(request, me, request_cls(meeting_id=meeting_id))

    handler.__name__ = f"{rpc[0].lower()}{rpc[1:]}"
    return handler, answers(response_cls, 404, 409), summary


for _path, (_rpc, _req, _resp, _summary) in {
    "open": ("OpenMeeting", roster_pb2.OpenMeetingRequest, roster_pb2.OpenMeetingResponse, "Open the meeting room"),
    "start": ("StartMeeting", roster_pb2.StartMeetingRequest, roster_pb2.StartMeetingResponse, "Start the meeting"),
    "end": ("EndMeeting", roster_pb2.EndMeetingRequest, roster_pb2.EndMeetingResponse,
            "End the meeting: final, nobody can stay or rejoin"),
}.items():
    _handler, _responses, _summary = _lifecycle(_rpc, _req, _resp, _summary)
    router.add_api_route(f"/meetings/{{meeting_id}}/{_path}", _handler, methods=["POST"], tags=["meetings"],
                         responses=_responses, summary=_summary)


class AbortBody(Body):
    reason: str = Field("", max_length=1000)


@router.post("/meetings/{meeting_id}/abort", tags=["meetings"],
             responses=answers(roster_pb2.AbortMeetingResponse, 404, 409))
@relays("roster", "AbortMeeting")
async def abort_meeting(request: Request, me: Me, meeting_id: Id, body: AbortBody):
    return await relayed(request, me, roster_pb2.AbortMeetingRequest(meeting_id=meeting_id, reason=body.reason))


class PersonBody(Body):
    id_kind: literal(common_pb2.IdKind)
    id: str = Field(min_length=1, max_length=40)


class RegisterBody(Body):
    full_name: str = Field(min_length=1, max_length=200)
    role: literal(roster_pb2.ParticipantRole)
    person: PersonBody
    allowed_methods: list[literal(common_pb2.LoginMethod)] = Field(default_factory=list, max_length=4)
    physically_present: bool = False
    organization: str = Field("", max_length=200)


@router.get("/meetings/{meeting_id}/participants", tags=["meetings"],
            responses=answers(roster_pb2.ListParticipantsResponse, 404))
@relays("roster", "ListParticipants")
async def list_participants(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.ListParticipantsRequest(meeting_id=meeting_id))


@router.post("/meetings/{meeting_id}/participants", tags=["meetings"],
             responses=answers(roster_pb2.RegisterParticipantResponse, 404, 409))
@relays("roster", "RegisterParticipant")
async def register_participant(request: Request, me: Me, meeting_id: Id, body: RegisterBody):
    msg = roster_pb2.RegisterParticipantRequest(
        meeting_id=meeting_id, full_name=body.full_name, role=body.role,
        person=common_pb2.PersonRef(id_kind=body.person.id_kind, id=body.person.id, display_name=body.full_name),
        allowed_methods=body.allowed_methods, physically_present=body.physically_present,
        organization=body.organization,
    )
    return await relayed(request, me, msg)


class RemovalBody(Body):
    participant_id: str = Field("", max_length=128)
    connection_id: str = Field("", max_length=128)
    reason: str = Field("", max_length=1000)


@router.post("/meetings/{meeting_id}/removals", tags=["meetings"],
             responses=answers(roster_pb2.RemoveParticipantResponse, 404, 409),
             summary="Remove a participant or an unidentified connection (they cannot come back)")
@relays("roster", "RemoveParticipant")
async def remove_participant(request: Request, me: Me, meeting_id: Id, body: RemovalBody):
    msg = roster_pb2.RemoveParticipantRequest(meeting_id=meeting_id, participant_id=body.participant_id,
                                              connection_id=body.connection_id, reason=body.reason)
    return await relayed(request, me, msg)


@router.get("/meetings/{meeting_id}/connected", tags=["meetings"],
            responses=answers(roster_pb2.GetConnectedListResponse, 404))
@relays("roster", "GetConnectedList")
async def connected_list(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.GetConnectedListRequest(meeting_id=meeting_id))


@router.get("/meetings/{meeting_id}/reconciliation", tags=["meetings"],
            responses=answers(roster_pb2.GetReconciliationResponse, 404))
@relays("roster", "GetReconciliation")
async def reconciliation(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.GetReconciliationRequest(meeting_id=meeting_id))


@router.get("/meetings/{meeting_id}/agenda", tags=["agenda"], responses=answers(roster_pb2.GetAgendaResponse, 404))
@relays("roster", "GetAgenda")
async def get_agenda(request: Request, me: Me, meeting_id: Id):
    return await relayed(request, me, roster_pb2.GetAgendaRequest(meeting_id=meeting_id))


class AdvanceBody(Body):
    from_step: literal(roster_pb2.AgendaStep)


@router.post("/meetings/{meeting_id}/agenda/advance", tags=["agenda"],
             responses=answers(roster_pb2.AdvanceAgendaResponse, 404, 409))
@relays("roster", "AdvanceAgenda")
async def advance_agenda(request: Request, me: Me, meeting_id: Id, body: AdvanceBody):
    return await relayed(request, me, roster_pb2.AdvanceAgendaRequest(meeting_id=meeting_id, from_step=body.from_step))


class SpeakerBody(Body):
    participant_id: str = Field(min_length=1, max_length=128)


@router.post("/meetings/{meeting_id}/agenda/speaker", tags=["agenda"],
             responses=answers(roster_pb2.SetCurrentSpeakerResponse, 404, 409))
@relays("roster", "SetCurrentSpeaker")
async def set_speaker(request: Request, me: Me, meeting_id: Id, body: SpeakerBody):
    return await relayed(request, me, roster_pb2.SetCurrentSpeakerRequest(meeting_id=meeting_id,
                                                                         participant_id=body.participant_id))


class SummaryBody(Body):
    summary: str = Field(max_length=20_000)


@router.post("/meetings/{meeting_id}/agenda/summary", tags=["agenda"],
             responses=answers(roster_pb2.RecordSummaryResponse, 404, 409))
@relays("roster", "RecordSummary")
async def record_summary(request: Request, me: Me, meeting_id: Id, body: SummaryBody):
    return await relayed(request, me, roster_pb2.RecordSummaryRequest(meeting_id=meeting_id, summary=body.summary))


class AssessmentBody(Body):
    care_provider: str = Field(min_length=1, max_length=200)
    note: str = Field("", max_length=2000)


@router.post("/meetings/{meeting_id}/confidentiality-assessment", tags=["meetings"],
             responses=answers(roster_pb2.RecordConfidentialityAssessmentResponse, 404, 409))
@relays("roster", "RecordConfidentialityAssessment")
async def confidentiality_assessment(request: Request, me: Me, meeting_id: Id, body: AssessmentBody):
    msg = roster_pb2.RecordConfidentialityAssessmentRequest(meeting_id=meeting_id, care_provider=body.care_provider,
                                                            note=body.note)
    return await relayed(request, me, msg)


# ------------------------------------------------------------------ joining: admission and signalling


class Admission(BaseModel):
    participant_id: str
    join_token: str
    expires_at: str
    media_instance: str


class Admissions:
    """Where each issued join token's media instance is, as roster's Admit said, and to whom it was
    issued (in memory, for the token's short life): the browser sends back only the token and its
    offer, never an address, and only the person it was issued to may use it here."""

    def __init__(self) -> None:
        # token hash -> (meeting id, media address, expiry, person id)
        self._by_token: dict[str, tuple[str, str, float, str]] = {}
        # (person id, meeting id) -> (participant id, media address): whose quality a person may see.
        self._by_person: dict[tuple[str, str], tuple[str, str]] = {}

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def remember(self, token: str, meeting_id: str, address: str, ttl: float, person_id: str = "",
                 participant_id: str = "") -> None:
        now = time.monotonic()
        self._by_token = {k: v for k, v in self._by_token.items() if v[2] > now}
        self._by_token[self._key(token)] = (meeting_id, address, now + max(ttl, 30.0), person_id)
        if person_id:
            if len(self._by_person) > 50_000:
                self._by_person.clear()
            self._by_person[(person_id, meeting_id)] = (participant_id, address)

    def participant(self, person_id: str, meeting_id: str) -> tuple[str, str] | None:
        return self._by_person.get((person_id, meeting_id))

    def address(self, token: str, meeting_id: str, person_id: str) -> str | None:
        """The media address for `person_id` using `token` in this meeting; None when this gateway
        did not issue it for the meeting or it expired; Problem 403 when it was issued to someone else."""
        found = self._by_token.get(self._key(token))
        if not found or found[0] != meeting_id or found[2] < time.monotonic():
            return None
        if found[3] != person_id:
            raise Problem(403, "anslutningsbiljetten är utfärdad till någon annan", reason="ADMISSION_NOT_YOURS")
        return found[1]


@router.post("/meetings/{meeting_id}/admission", tags=["joining"],
             responses={200: {"model": Admission}, **problem_responses(400, 401, 403, 404, 409, 413, 429, 503)},
             summary="Ask to join: a short-lived join token for this meeting's media instance")
@relays("roster", "Admit")
async def admit(request: Request, me: Me, meeting_id: Id) -> Admission:
    answer = await call(request, me, roster_pb2.AdmitRequest(meeting_id=meeting_id))
    expires = answer.expires_at.ToDatetime(dt.timezone.utc) if answer.HasField("expires_at") else None
    ttl = (expires - dt.datetime.now(dt.timezone.utc)).total_seconds() if expires else 300.0
    request.app.state.admissions.remember(answer.join_token, meeting_id, answer.media_address, ttl,
                                          me.caller.id, answer.participant_id)
    return Admission(participant_id=answer.participant_id, join_token=answer.join_token,
                     expires_at=expires.isoformat() if expires else "", media_instance=answer.media_instance)


class NegotiationBody(Body):
    join_token: str = Field(min_length=1, max_length=4096)
    sdp_offer: str = Field(min_length=1, max_length=60_000)


@router.post("/meetings/{meeting_id}/negotiation", tags=["joining"],
             responses=answers(media_pb2.NegotiateResponse, 404, 409),
             summary="WebRTC signalling: relay the SDP offer with the join token to the meeting's media instance")
@as_gateway("media", "Negotiate", gate="a join token this gateway issued to this person for this meeting")
async def negotiate(request: Request, me: Me, meeting_id: Id, body: NegotiationBody):
    address = request.app.state.admissions.address(body.join_token, meeting_id, me.caller.id)
    if address is None:
        raise Problem(409, "anslutningsbiljetten är inte utfärdad här för det här mötet, eller har gått ut: anslut igen",
                      reason="ADMISSION_UNKNOWN")
    return reply(await access.stub_method(request, backends(request).media(address))(
        media_pb2.NegotiateRequest(join_token=body.join_token, sdp_offer=body.sdp_offer),
        timeout=timeout(request), metadata=backends(request).as_service()))


@router.get("/meetings/{meeting_id}/quality", tags=["joining"],
            responses=answers(media_pb2.GetQualitySnapshotResponse, 409),
            summary="The caller's own connection quality in the meeting, as the media service measures it")
@as_gateway("media", "GetQualitySnapshot", gate="the person's own admission to this meeting, by this gateway")
async def my_quality(request: Request, me: Me, meeting_id: Id):
    admitted = request.app.state.admissions.participant(me.caller.id, meeting_id)
    if admitted is None:
        raise Problem(409, "anslut till mötet först: kvaliteten mäts på mötesanslutningen", reason="NOT_JOINED")
    participant_id, address = admitted
    return reply(await access.stub_method(request, backends(request).media(address))(
        media_pb2.GetQualitySnapshotRequest(meeting_id=meeting_id, participant_id=participant_id),
        timeout=timeout(request), metadata=backends(request).as_service()))


class Tile(BaseModel):
    mid: str = Field(description="The MID of one of the caller's own receive slots (its offer's recvonly transceiver)")
    participant_id: str = Field(description="Whom that slot shows")
    full_name: str = Field(description="Their name as registered; empty while roster does not list them as connected")


class Tiles(BaseModel):
    tiles: list[Tile]


@router.get("/meetings/{meeting_id}/tiles", tags=["joining"],
            responses={200: {"model": Tiles}, **problem_responses(400, 401, 403, 404, 409, 429, 503)},
            summary="Whom each of the caller's own receive slots (MIDs) shows, with their names")
@as_gateway("media", "GetRoomState", gate="the person's own admission to this meeting, by this gateway",
            relaying=("roster", "GetConnectedList"))
async def my_tiles(request: Request, me: Me, meeting_id: Id) -> Tiles:
    """Media knows which slot shows whom (by participant id), roster knows the names the person may
    see (GetConnectedList, as the person). Only the caller's own connection's slots are answered:
    no address, no other connection's slots, no person identifier beyond a participant id."""
    admitted = request.app.state.admissions.participant(me.caller.id, meeting_id)
    if admitted is None:
        raise Problem(409, "anslut till mötet först: rutorna hör till mötesanslutningen", reason="NOT_JOINED")
    participant_id, address = admitted
    # Roster first: it refuses a person who is removed or not in the meeting (any more).
    connected = await call(request, me, roster_pb2.GetConnectedListRequest(meeting_id=meeting_id))
    state = await access.stub_method(request, backends(request).media(address))(
        media_pb2.GetRoomStateRequest(meeting_id=meeting_id),
        timeout=timeout(request), metadata=backends(request).as_service())
    names = {p.participant_id: p.full_name for p in connected.people}
    mine = [p for p in state.participants if p.participant_id == participant_id]
    return Tiles(tiles=[Tile(mid=mid, participant_id=slot.publisher_participant_id,
                             full_name=names.get(slot.publisher_participant_id, ""))
                        for p in mine for slot in p.showing for mid in slot.mids])


class IceServer(BaseModel):
    urls: list[str]
    username: str
    credential: str


class IceServers(BaseModel):
    ice_servers: list[IceServer]


def turn_credentials(secret: str, user: str, ttl: int, now: float) -> tuple[str, str]:
    """TURN REST API credentials (coturn use-auth-secret): username "<expiry>:<user>",
    password base64(HMAC-SHA1(secret, username)). Hand-written: it is these two lines."""
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


@router.get("/ice-servers", tags=["joining"], responses={200: {"model": IceServers}, **problem_responses(
    401, 429, 503)}, summary="ICE servers for the browser's peer connection (short-lived TURN credentials)")
@session_only
async def ice_servers(request: Request, me: Me) -> IceServers:
    settings = request.app.state.settings
    urls = [u.strip() for u in settings.turn_urls.split(",") if u.strip()]
    if not settings.turn_secret or not urls:
        return IceServers(ice_servers=[])
    # The TURN user names a session, not a person: coturn's logs carry no personal identifier.
    user = hashlib.sha256(me.caller.token_id.encode()).hexdigest()[:16]
    username, credential = turn_credentials(settings.turn_secret, user, settings.turn_ttl_seconds, time.time())
    return IceServers(ice_servers=[IceServer(urls=urls, username=username, credential=credential)])


class TestRoomBody(Body):
    sdp_offer: str = Field(min_length=1, max_length=60_000)


@router.post("/test-room/negotiation", tags=["joining"], responses=answers(media_pb2.NegotiateTestRoomResponse),
             summary="The echo test room: see and hear yourself before a meeting")
@as_gateway("media", "NegotiateTestRoom", gate="any logged-in person (the echo room holds no one else)")
async def negotiate_test_room(request: Request, me: Me, body: TestRoomBody):
    # Media holds one test room per person and a capped share of its capacity for all of them;
    # this limits how often one person can ask (each negotiation costs media a peer connection).
    wait = request.app.state.test_room_limiter.hit(me.caller.id)
    if wait:
        raise Problem(429, "för många försök med testrummet: vänta en stund och försök igen",
                      reason="TEST_ROOM_RATE", headers={"Retry-After": str(int(wait) + 1)})
    return reply(await access.stub_method(request, backends(request).media())(
        media_pb2.NegotiateTestRoomRequest(session_token=me.token, sdp_offer=body.sdp_offer),
        timeout=timeout(request), metadata=backends(request).as_service()))


# ------------------------------------------------------------------ directory and support


@router.get("/directory/people", tags=["directory"], responses=answers(identity_pb2.SearchDirectoryResponse),
            summary="Search the HSA directory by name (staff)")
@relays("identity", "SearchDirectory")
async def search_directory(request: Request, me: Me,
                           name: Annotated[str, Query(min_length=2, max_length=100)],
                           organization: Annotated[str, Query(max_length=100)] = "",
                           page_token: Annotated[str, Query(max_length=500)] = ""):
    msg = identity_pb2.SearchDirectoryRequest(name=name, organization=organization,
                                              page=common_pb2.PageRequest(page_token=page_token),
                                              purpose="registering meeting participants")
    return await relayed(request, me, msg)


@router.get("/support/routing", tags=["support"], responses=answers(support_pb2.GetRoutingTableResponse))
@relays("support", "GetRoutingTable")
async def routing_table(request: Request, me: Me):
    return await relayed(request, me, support_pb2.GetRoutingTableRequest())


class ReportBody(Body):
    problem: literal(support_pb2.ProblemKind)
    description: str = Field(min_length=1, max_length=5000)
    meeting_id: str = Field("", max_length=128)
    participant_id: str = Field("", max_length=128)
    request_rebook: bool = False
    contact: str = Field("", max_length=200)
    idempotency_key: str = Field("", max_length=100, pattern=r"^[A-Za-z0-9_-]*$")


def reporter_kind(caller: auth.Caller) -> int:
    if caller.has_role(auth.ROLE_MUNICIPALITY_STAFF):
        return support_pb2.REPORTER_KIND_MUNICIPALITY_STAFF
    if caller.has_role(auth.ROLE_REGION_STAFF):
        return support_pb2.REPORTER_KIND_REGION_STAFF
    if caller.has_role(auth.ROLE_CITIZEN):
        return support_pb2.REPORTER_KIND_CITIZEN
    return support_pb2.REPORTER_KIND_EXTERNAL_ACTOR


@router.post("/support/reports", tags=["support"], responses=answers(support_pb2.FileReportResponse, 404, 409),
             summary="Report a problem: the answer names where the report went")
@relays("support", "FileReport")
async def file_report(request: Request, me: Me, body: ReportBody):
    who = me.caller
    id_kind = common_pb2.ID_KIND_HSA_ID if who.id_kind == "hsa_id" else common_pb2.ID_KIND_PERSONNUMMER
    msg = support_pb2.FileReportRequest(
        reporter=support_pb2.Reporter(name=who.name, person=common_pb2.PersonRef(id_kind=id_kind, id=who.id,
                                                                                display_name=who.name),
                                      kind=reporter_kind(who), organization=who.organization, contact=body.contact),
        problem=body.problem, description=body.description, meeting_id=body.meeting_id,
        participant_id=body.participant_id, request_rebook=body.request_rebook,
        idempotency_key=body.idempotency_key,
    )
    return await relayed(request, me, msg)
