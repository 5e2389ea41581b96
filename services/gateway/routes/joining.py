"""REST /api/v1 "joining": admission (a join token from roster), the WebRTC signalling relayed to
the meeting's media instance, the caller's own connection quality and video tiles, the ICE servers
and the echo test room. The media calls carry the gateway's own token, each behind the gate its
route declares (@as_gateway)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import time
from typing import Annotated, cast

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2

from services.gateway import access
from services.gateway.access import as_gateway, relays, session_only
from services.gateway.dependencies import BackendsDep, Me, SettingsDep, TestRoomLimiterDep, get_admissions
from services.gateway.problems import Problem, problem_responses
from services.gateway.routes.common import Body, Id, answers, as_service, call, reply

router = APIRouter(prefix="/api/v1", tags=["joining"])


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


AdmissionsDep = Annotated[Admissions, Depends(get_admissions)]


@router.post("/meetings/{meeting_id}/admission",
             responses={200: {"model": Admission}, **problem_responses(400, 401, 403, 404, 409, 413, 429, 503)},
             summary="Ask to join: a short-lived join token for this meeting's media instance")
@relays("roster", "Admit")
async def admit(request: Request, me: Me, meeting_id: Id, admissions: AdmissionsDep) -> Admission:
    answer = cast(roster_pb2.AdmitResponse, await call(request, me, roster_pb2.AdmitRequest(meeting_id=meeting_id)))
    expires = answer.expires_at.ToDatetime(dt.timezone.utc) if answer.HasField("expires_at") else None
    ttl = (expires - dt.datetime.now(dt.timezone.utc)).total_seconds() if expires else 300.0
    admissions.remember(answer.join_token, meeting_id, answer.media_address, ttl, me.caller.id, answer.participant_id)
    return Admission(participant_id=answer.participant_id, join_token=answer.join_token,
                     expires_at=expires.isoformat() if expires else "", media_instance=answer.media_instance)


class NegotiationBody(Body):
    join_token: str = Field(min_length=1, max_length=4096)
    sdp_offer: str = Field(min_length=1, max_length=60_000)


@router.post("/meetings/{meeting_id}/negotiation", responses=answers(media_pb2.NegotiateResponse, 404, 409),
             summary="WebRTC signalling: relay the SDP offer with the join token to the meeting's media instance")
@as_gateway("media", "Negotiate", gate="a join token this gateway issued to this person for this meeting")
async def negotiate(request: Request, me: Me, meeting_id: Id, body: NegotiationBody, admissions: AdmissionsDep,
                    backends: BackendsDep, settings: SettingsDep):
    address = admissions.address(body.join_token, meeting_id, me.caller.id)
    if address is None:
        raise Problem(409, "anslutningsbiljetten är inte utfärdad här för det här mötet, eller har gått ut: anslut igen",
                      reason="ADMISSION_UNKNOWN")
    return reply(await access.stub_method(request, backends.media(address))(
        media_pb2.NegotiateRequest(join_token=body.join_token, sdp_offer=body.sdp_offer),
        **as_service(backends, settings)))


@router.get("/meetings/{meeting_id}/quality", responses=answers(media_pb2.GetQualitySnapshotResponse, 409),
            summary="The caller's own connection quality in the meeting, as the media service measures it")
@as_gateway("media", "GetQualitySnapshot", gate="the person's own admission to this meeting, by this gateway")
async def my_quality(request: Request, me: Me, meeting_id: Id, admissions: AdmissionsDep, backends: BackendsDep,
                     settings: SettingsDep):
    admitted = admissions.participant(me.caller.id, meeting_id)
    if admitted is None:
        raise Problem(409, "anslut till mötet först: kvaliteten mäts på mötesanslutningen", reason="NOT_JOINED")
    participant_id, address = admitted
    return reply(await access.stub_method(request, backends.media(address))(
        media_pb2.GetQualitySnapshotRequest(meeting_id=meeting_id, participant_id=participant_id),
        **as_service(backends, settings)))


class Tile(BaseModel):
    mid: str = Field(description="The MID of one of the caller's own receive slots (its offer's recvonly transceiver)")
    participant_id: str = Field(description="Whom that slot shows")
    full_name: str = Field(description="Their name as registered; empty while roster does not list them as connected")


class Tiles(BaseModel):
    tiles: list[Tile]


@router.get("/meetings/{meeting_id}/tiles",
            responses={200: {"model": Tiles}, **problem_responses(400, 401, 403, 404, 409, 429, 503)},
            summary="Whom each of the caller's own receive slots (MIDs) shows, with their names")
@as_gateway("media", "GetRoomState", gate="the person's own admission to this meeting, by this gateway",
            relaying=("roster", "GetConnectedList"))
async def my_tiles(request: Request, me: Me, meeting_id: Id, admissions: AdmissionsDep, backends: BackendsDep,
                   settings: SettingsDep) -> Tiles:
    """Media knows which slot shows whom (by participant id), roster knows the names the person may
    see (GetConnectedList, as the person). Only the caller's own connection's slots are answered:
    no address, no other connection's slots, no person identifier beyond a participant id."""
    admitted = admissions.participant(me.caller.id, meeting_id)
    if admitted is None:
        raise Problem(409, "anslut till mötet först: rutorna hör till mötesanslutningen", reason="NOT_JOINED")
    participant_id, address = admitted
    # Roster first: it refuses a person who is removed or not in the meeting (any more).
    connected = cast(roster_pb2.GetConnectedListResponse,
                     await call(request, me, roster_pb2.GetConnectedListRequest(meeting_id=meeting_id)))
    state = await access.stub_method(request, backends.media(address))(
        media_pb2.GetRoomStateRequest(meeting_id=meeting_id), **as_service(backends, settings))
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


@router.get("/ice-servers", responses={200: {"model": IceServers}, **problem_responses(401, 429, 503)},
            summary="ICE servers for the browser's peer connection (short-lived TURN credentials)")
@session_only
async def ice_servers(me: Me, settings: SettingsDep) -> IceServers:
    urls = [u.strip() for u in settings.turn_urls.split(",") if u.strip()]
    if not settings.turn_secret or not urls:
        return IceServers(ice_servers=[])
    # The TURN user names a session, not a person: coturn's logs carry no personal identifier.
    user = hashlib.sha256(me.caller.token_id.encode()).hexdigest()[:16]
    username, credential = turn_credentials(settings.turn_secret, user, settings.turn_ttl_seconds, time.time())
    return IceServers(ice_servers=[IceServer(urls=urls, username=username, credential=credential)])


class TestRoomBody(Body):
    sdp_offer: str = Field(min_length=1, max_length=60_000)


@router.post("/test-room/negotiation", responses=answers(media_pb2.NegotiateTestRoomResponse),
             summary="The echo test room: see and hear yourself before a meeting")
@as_gateway("media", "NegotiateTestRoom", gate="any logged-in person (the echo room holds no one else)")
async def negotiate_test_room(request: Request, me: Me, body: TestRoomBody, limiter: TestRoomLimiterDep,
                              backends: BackendsDep, settings: SettingsDep):
    # Media holds one test room per person and a capped share of its capacity for all of them;
    # this limits how often one person can ask (each negotiation costs media a peer connection).
    wait = limiter.hit(me.caller.id)
    if wait:
        raise Problem(429, "för många försök med testrummet: vänta en stund och försök igen",
                      reason="TEST_ROOM_RATE", headers={"Retry-After": str(int(wait) + 1)})
    return reply(await access.stub_method(request, backends.media())(
        media_pb2.NegotiateTestRoomRequest(session_token=me.token, sdp_offer=body.sdp_offer),
        **as_service(backends, settings)))
