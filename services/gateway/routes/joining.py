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
from typing import cast

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2

from services.gateway import access
from services.gateway.access import as_gateway, relays, session_only
from services.gateway.dependencies import BackendsDep, Me, SettingsDep, TestRoomLimiterDep
from services.gateway.problems import Problem, problem_responses
from services.gateway.routes.common import Body, Id, answers, as_service, call, reply
from services.gateway.security import Session
from services.runtime import auth
from services.runtime.errors import Unauthenticated, Unavailable

router = APIRouter(prefix="/api/v1", tags=["joining"])


class Admission(BaseModel):
    participant_id: str
    join_token: str
    expires_at: str
    media_instance: str


ADMISSION = ("roster", "GetMyAdmission")  # the gate of the routes on the caller's own meeting connection


async def my_admission(request: Request, me: Session, meeting_id: str) -> roster_pb2.GetMyAdmissionResponse:
    """The caller's own admission as roster stores it (participant, the room's media instance now):
    read per request, so any gateway replica answers the same (nothing is kept here)."""
    return cast(roster_pb2.GetMyAdmissionResponse,
                await call(request, me, roster_pb2.GetMyAdmissionRequest(meeting_id=meeting_id)))


async def join_claims(keys: auth.KeySet, token: str) -> dict:
    """The claims of a join token identity signed (signature, issuer, media audience, expiry);
    409 ADMISSION_UNKNOWN otherwise (the portal then asks to join again)."""
    try:
        return await auth.decode_token(keys, token, audience=auth.MEDIA_AUDIENCE, typ=auth.JOIN)
    except Unauthenticated:
        raise Problem(409, "anslutningsbiljetten gäller inte (ogiltig eller har gått ut): anslut igen",
                      reason="ADMISSION_UNKNOWN") from None
    except Unavailable:
        raise Problem(503, "en tjänst är tillfälligt otillgänglig: försök igen om en stund") from None


@router.post("/meetings/{meeting_id}/admission",
             responses={200: {"model": Admission}, **problem_responses(400, 401, 403, 404, 409, 413, 429, 503)},
             summary="Ask to join: a short-lived join token for this meeting's media instance")
@relays("roster", "Admit")
async def admit(request: Request, me: Me, meeting_id: Id) -> Admission:
    answer = cast(roster_pb2.AdmitResponse, await call(request, me, roster_pb2.AdmitRequest(meeting_id=meeting_id)))
    expires = answer.expires_at.ToDatetime(dt.timezone.utc) if answer.HasField("expires_at") else None
    return Admission(participant_id=answer.participant_id, join_token=answer.join_token,
                     expires_at=expires.isoformat() if expires else "", media_instance=answer.media_instance)


class NegotiationBody(Body):
    join_token: str = Field(min_length=1, max_length=4096)
    sdp_offer: str = Field(min_length=1, max_length=60_000)


@router.post("/meetings/{meeting_id}/negotiation", responses=answers(media_pb2.NegotiateResponse, 404, 409),
             summary="WebRTC signalling: relay the SDP offer with the join token to the meeting's media instance")
@as_gateway("media", "Negotiate", gate="a join token identity signed for this meeting, naming the person's own "
                                        "participant and the room's media instance as roster stores them",
            relaying=(ADMISSION,))
async def negotiate(request: Request, me: Me, meeting_id: Id, body: NegotiationBody, backends: BackendsDep,
                    settings: SettingsDep):
    claims = await join_claims(backends.keys, body.join_token)
    if claims.get("mid") != meeting_id:
        raise Problem(409, "anslutningsbiljetten gäller ett annat möte: anslut igen", reason="ADMISSION_UNKNOWN")
    mine = await my_admission(request, me, meeting_id)
    if claims.get("pid") != mine.participant_id:
        raise Problem(403, "anslutningsbiljetten är utfärdad till någon annan", reason="ADMISSION_NOT_YOURS")
    if claims.get("inst") != mine.media_instance:  # the room moved to another instance since: ask again
        raise Problem(409, "mötesrummet har flyttats: anslut igen", reason="ADMISSION_MOVED")
    return reply(await access.stub_method(request, backends.media(mine.media_address))(
        media_pb2.NegotiateRequest(join_token=body.join_token, sdp_offer=body.sdp_offer),
        **as_service(backends, settings)))


@router.get("/meetings/{meeting_id}/quality", responses=answers(media_pb2.GetQualitySnapshotResponse, 409),
            summary="The caller's own connection quality in the meeting, as the media service measures it")
@as_gateway("media", "GetQualitySnapshot", gate="the person's own admission to this meeting, as roster stores it",
            relaying=(ADMISSION,))
async def my_quality(request: Request, me: Me, meeting_id: Id, backends: BackendsDep, settings: SettingsDep):
    mine = await my_admission(request, me, meeting_id)
    return reply(await access.stub_method(request, backends.media(mine.media_address))(
        media_pb2.GetQualitySnapshotRequest(meeting_id=meeting_id, participant_id=mine.participant_id),
        **as_service(backends, settings)))


class Tile(BaseModel):
    mid: str = Field(description="The MID of one of the caller's own receive slots (its offer's recvonly transceiver)")
    participant_id: str = Field(description="Whom that slot shows")
    full_name: str = Field(description="Their name as registered; empty while roster does not list them as connected")
    phone: bool = Field(default=False, description="They are in the meeting by phone (dial-in): audio only, shown "
                                                   "as a phone tile")


class Tiles(BaseModel):
    tiles: list[Tile]


@router.get("/meetings/{meeting_id}/tiles",
            responses={200: {"model": Tiles}, **problem_responses(400, 401, 403, 404, 409, 429, 503)},
            summary="Whom each of the caller's own receive slots (MIDs) shows, with their names")
@as_gateway("media", "GetRoomState", gate="the person's own admission to this meeting, as roster stores it",
            relaying=(ADMISSION, ("roster", "GetConnectedList")))
async def my_tiles(request: Request, me: Me, meeting_id: Id, backends: BackendsDep, settings: SettingsDep) -> Tiles:
    """Media knows which slot shows whom (by participant id), roster knows the names the person may
    see (GetConnectedList, as the person). Only the caller's own connection's slots are answered:
    no address, no other connection's slots, no person identifier beyond a participant id."""
    # Roster first: it refuses a person who is removed, not admitted or not in the meeting (any more).
    admitted = await my_admission(request, me, meeting_id)
    connected = cast(roster_pb2.GetConnectedListResponse,
                     await call(request, me, roster_pb2.GetConnectedListRequest(meeting_id=meeting_id)))
    state = await access.stub_method(request, backends.media(admitted.media_address))(
        media_pb2.GetRoomStateRequest(meeting_id=meeting_id), **as_service(backends, settings))
    names = {p.participant_id: p.full_name for p in connected.people}
    phones = {p.participant_id for p in connected.people if p.by_phone}
    mine = [p for p in state.participants if p.participant_id == admitted.participant_id]
    return Tiles(tiles=[Tile(mid=mid, participant_id=slot.publisher_participant_id,
                             full_name=names.get(slot.publisher_participant_id, ""),
                             phone=slot.publisher_participant_id in phones)
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
