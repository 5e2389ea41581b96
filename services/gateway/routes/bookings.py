"""REST /api/v1 "bookings": booking options, book, list, read, reschedule, invitations (invite more
parties, a confirmation recorded on a party's behalf), rebook requests handled, the coordinator's
phone tasks and cancel, each relayed to booking with the person's own token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, Field
from svpl.booking.v1 import booking_pb2
from svpl.common.v1 import common_pb2

from services.gateway.access import relays
from services.gateway.dependencies import Me
from services.gateway.routes.common import Body, ChannelName, Id, PartyKindName, answers, relayed, time_range, ts

router = APIRouter(prefix="/api/v1", tags=["bookings"])


class PartyBody(Body):
    kind: PartyKindName
    name: str = Field(min_length=1, max_length=200)
    channel: ChannelName
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
    patient_name: str = Field("", max_length=200)


class CancelBody(Body):
    reason: str = Field("", max_length=1000)


@router.get("/booking-options", responses=answers(booking_pb2.ListBookingOptionsResponse))
@relays("booking", "ListBookingOptions")
async def booking_options(request: Request, me: Me):
    return await relayed(request, me, booking_pb2.ListBookingOptionsRequest())


@router.post("/bookings", responses=answers(booking_pb2.CreateBookingResponse, 409))
@relays("booking", "CreateBooking")
async def create_booking(request: Request, me: Me, body: CreateBookingBody):
    msg = booking_pb2.CreateBookingRequest(
        idempotency_key=body.idempotency_key, patient_personnummer=body.patient_personnummer,
        start=ts(body.start), duration_minutes=body.duration_minutes,
        booking_unit_hsa_id=body.booking_unit_hsa_id, coordinator_hsa_id=me.caller.id,
        care_service=body.care_service, contact_type=body.contact_type, patient_name=body.patient_name,
        parties=[booking_pb2.Party(kind=p.kind, name=p.name, channel=p.channel, address=p.address)
                 for p in body.parties],
    )
    return await relayed(request, me, msg)


@router.get("/bookings", responses=answers(booking_pb2.ListBookingsResponse))
@relays("booking", "ListBookings")
async def list_bookings(request: Request, me: Me,
                        start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
                        end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
                        page_token: Annotated[str, Query(max_length=500)] = ""):
    msg = booking_pb2.ListBookingsRequest(coordinator_hsa_id=me.caller.id, period=time_range(start, end),
                                          page=common_pb2.PageRequest(page_token=page_token))
    return await relayed(request, me, msg)


@router.get("/bookings/{booking_id}", responses=answers(booking_pb2.GetBookingResponse, 404))
@relays("booking", "GetBooking")
async def get_booking(request: Request, me: Me, booking_id: Id):
    return await relayed(request, me, booking_pb2.GetBookingRequest(booking_id=booking_id))


@router.get("/bookings/{booking_id}/invitations", responses=answers(booking_pb2.ListInvitationsResponse, 404))
@relays("booking", "ListInvitations")
async def list_invitations(request: Request, me: Me, booking_id: Id):
    return await relayed(request, me, booking_pb2.ListInvitationsRequest(booking_id=booking_id))


@router.post("/bookings/{booking_id}/cancel", responses=answers(booking_pb2.CancelBookingResponse, 404, 409))
@relays("booking", "CancelBooking")
async def cancel_booking(request: Request, me: Me, booking_id: Id, body: CancelBody):
    return await relayed(request, me, booking_pb2.CancelBookingRequest(booking_id=booking_id, reason=body.reason))


class RescheduleBody(Body):
    start: AwareDatetime
    duration_minutes: int = Field(0, ge=0, le=24 * 60, description="0: keep the booking's length")


@router.post("/bookings/{booking_id}/reschedule", responses=answers(booking_pb2.RescheduleBookingResponse, 404, 409),
             summary="Move the booking's time (its meeting follows; the parties are told again)")
@relays("booking", "RescheduleBooking")
async def reschedule_booking(request: Request, me: Me, booking_id: Id, body: RescheduleBody):
    return await relayed(request, me, booking_pb2.RescheduleBookingRequest(
        booking_id=booking_id, start=ts(body.start), duration_minutes=body.duration_minutes))


class InviteBody(Body):
    parties: list[PartyBody] = Field(min_length=1, max_length=50)


@router.post("/bookings/{booking_id}/invitations", responses=answers(booking_pb2.InvitePartiesResponse, 404, 409),
             summary="Invite more parties to a booked meeting")
@relays("booking", "InviteParties")
async def invite_parties(request: Request, me: Me, booking_id: Id, body: InviteBody):
    return await relayed(request, me, booking_pb2.InvitePartiesRequest(
        booking_id=booking_id,
        parties=[booking_pb2.Party(kind=p.kind, name=p.name, channel=p.channel, address=p.address)
                 for p in body.parties]))


class ConfirmationBody(Body):
    attendee_names: list[str] = Field(min_length=1, max_length=50)


@router.post("/invitations/{invitation_id}/confirmation",
             responses=answers(booking_pb2.ConfirmInvitationResponse, 404, 409),
             summary="Record a party's confirmation (e.g. received by phone) with the names of who will attend")
@relays("booking", "ConfirmInvitation")
async def confirm_invitation(request: Request, me: Me, invitation_id: Id, body: ConfirmationBody):
    return await relayed(request, me, booking_pb2.ConfirmInvitationRequest(invitation_id=invitation_id,
                                                                            attendee_names=body.attendee_names))


@router.get("/phone-tasks", responses=answers(booking_pb2.ListPhoneTasksResponse),
            summary="The caller's own phone tasks: parties to call with the meeting details")
@relays("booking", "ListPhoneTasks")
async def list_phone_tasks(request: Request, me: Me, include_done: bool = False,
                           page_token: Annotated[str, Query(max_length=500)] = ""):
    return await relayed(request, me, booking_pb2.ListPhoneTasksRequest(
        coordinator_hsa_id=me.caller.id, include_done=include_done, page=common_pb2.PageRequest(page_token=page_token)))


@router.post("/phone-tasks/{task_id}/done", responses=answers(booking_pb2.CompletePhoneTaskResponse, 404),
             summary="Mark one of the caller's phone tasks done")
@relays("booking", "CompletePhoneTask")
async def complete_phone_task(request: Request, me: Me, task_id: Id):
    return await relayed(request, me, booking_pb2.CompletePhoneTaskRequest(task_id=task_id))


class ResolutionBody(Body):
    resolution: str = Field(min_length=1, max_length=1000, description="What the coordinator did about it")


@router.post("/bookings/{booking_id}/rebook-requests/{request_id}/resolution",
             responses=answers(booking_pb2.ResolveRebookRequestResponse, 404),
             summary="Mark a rebook request (from a fault report) handled")
@relays("booking", "ResolveRebookRequest")
async def resolve_rebook_request(request: Request, me: Me, booking_id: Id, request_id: Id, body: ResolutionBody):
    return await relayed(request, me, booking_pb2.ResolveRebookRequestRequest(
        booking_id=booking_id, request_id=request_id, resolution=body.resolution))
