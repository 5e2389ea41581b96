"""BookingService: thin gRPC layer (decode, call the domain, encode).

ACCESS says who may call each RPC; the domain then checks what only it can (the
booking's own coordinator, staff of its booking unit).
"""

from __future__ import annotations

from collections.abc import Sequence

from svpl.booking.v1 import booking_pb2 as pb
from svpl.booking.v1 import booking_pb2_grpc
from svpl.common.v1 import common_pb2

from services.booking.bookings import Bookings, BookingView
from services.booking.model import (
    Booking,
    InvitationState,
    InvitationView,
    NewBooking,
    Party,
    PartyInput,
    PhoneTask,
    RebookRequest,
    Status,
)
from services.booking.options import BookingOptions
from services.runtime import auth
from services.runtime.auth import LOGGED_IN, persons_with, services
from services.runtime.timestamps import to_datetime, to_timestamp

COORDINATOR = persons_with(auth.ROLE_COORDINATOR)
STAFF = persons_with(auth.ROLE_STAFF)

ACCESS = {
    "CreateBooking": COORDINATOR,
    "GetBooking": STAFF | services("roster", "support", "gateway"),
    "ListBookings": STAFF,
    "FindBookingByDialInCode": STAFF | services("roster", "support"),
    "RescheduleBooking": COORDINATOR,
    "CancelBooking": COORDINATOR,
    "UpdateBookingStatus": COORDINATOR,
    "InviteParties": COORDINATOR,
    "ListInvitations": STAFF,
    "ConfirmInvitation": STAFF,
    "ListPhoneTasks": COORDINATOR,
    "CompletePhoneTask": COORDINATOR,
    "AddPhoneTask": services("roster"),
    "RequestRebook": services("support"),
    "ResolveRebookRequest": COORDINATOR,
    "ListBookingOptions": LOGGED_IN,
}

STATUS = {
    Status.PROPOSED: pb.BOOKING_STATUS_PROPOSED,
    Status.BOOKED: pb.BOOKING_STATUS_BOOKED,
    Status.CANCELLED: pb.BOOKING_STATUS_CANCELLED,
    Status.FULFILLED: pb.BOOKING_STATUS_FULFILLED,
    Status.NOSHOW: pb.BOOKING_STATUS_NOSHOW,
    Status.ENTERED_IN_ERROR: pb.BOOKING_STATUS_ENTERED_IN_ERROR,
}
STATUS_NAME = {v: k for k, v in STATUS.items()}
CHANNEL = {"secure_messaging": pb.CHANNEL_SECURE_MESSAGING, "phone": pb.CHANNEL_PHONE, "email": pb.CHANNEL_EMAIL}
CHANNEL_NAME = {v: k for k, v in CHANNEL.items()}
KIND = {
    "municipality_unit": pb.PARTY_KIND_MUNICIPALITY_UNIT,
    "inpatient_ward": pb.PARTY_KIND_INPATIENT_WARD,
    "external_body": pb.PARTY_KIND_EXTERNAL_BODY,
    "patient": pb.PARTY_KIND_PATIENT,
    "primary_care": pb.PARTY_KIND_PRIMARY_CARE,
    "next_of_kin": pb.PARTY_KIND_NEXT_OF_KIN,
}
KIND_NAME = {v: k for k, v in KIND.items()}
INVITATION_STATE = {
    InvitationState.INVITED: pb.INVITATION_STATE_INVITED,
    InvitationState.DELIVERED: pb.INVITATION_STATE_DELIVERED,
    InvitationState.CONFIRMED: pb.INVITATION_STATE_CONFIRMED,
    InvitationState.PHONE_TASK: pb.INVITATION_STATE_PHONE_TASK,
}


def _parties(parties) -> tuple[PartyInput, ...]:
    return tuple(PartyInput(KIND_NAME.get(p.kind, ""), p.name, CHANNEL_NAME.get(p.channel, ""), p.address)
                 for p in parties)


def _party(party: Party) -> pb.Party:
    return pb.Party(party_id=party.party_id, kind=KIND[party.kind], name=party.name,
                    channel=CHANNEL[party.channel], address=party.address)


def _invitation(view: InvitationView) -> pb.Invitation:
    inv = view.invitation
    return pb.Invitation(
        invitation_id=inv.id, party=_party(inv.party), state=INVITATION_STATE[view.state],
        attendee_names=inv.attendee_names, delivered_at=to_timestamp(view.delivered_at),
        confirmed_at=to_timestamp(inv.confirmed_at), delivery_attempts=view.delivery_attempts,
        last_error=view.last_error,
    )


def _rebook(r: RebookRequest) -> pb.RebookRequest:
    return pb.RebookRequest(request_id=r.request_id, reason=r.reason, ticket_id=r.ticket_id,
                            requested_at=to_timestamp(r.requested_at), requested_by_name=r.requested_by_name,
                            resolved_at=to_timestamp(r.resolved_at), resolution=r.resolution,
                            resolved_by_hsa_id=r.resolved_by)


def _booking(b: Booking, invitations: Sequence[InvitationView] = ()) -> pb.Booking:
    return pb.Booking(
        booking_id=b.id,
        status=STATUS[b.status],
        patient=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=b.patient,
                                     display_name=b.patient_name),
        start=to_timestamp(b.start),
        duration_minutes=b.duration_minutes,
        booking_unit_hsa_id=b.booking_unit,
        coordinator_hsa_id=b.coordinator,
        care_service=b.care_service,
        contact_type=b.contact_type,
        meeting_id=b.meeting_id,
        dial_in_code=b.dial_in_code,
        portal_url=b.portal_url,
        meeting_pending=b.meeting_pending,
        invitations=[_invitation(i) for i in invitations],
        rebook_requests=[_rebook(r) for r in b.rebook_requests],
        created_at=to_timestamp(b.created_at),
        updated_at=to_timestamp(b.updated_at),
        cancel_reason=b.cancel_reason,
    )


def _view(view: BookingView) -> pb.Booking:
    return _booking(view.booking, view.invitations)


def _task(task: PhoneTask) -> pb.PhoneTask:
    return pb.PhoneTask(task_id=task.id, booking_id=task.booking_id, party=_party(task.party),
                        instructions=task.instructions, done=task.done, created_at=to_timestamp(task.created_at))


class BookingServicer(booking_pb2_grpc.BookingServiceServicer):
    def __init__(self, bookings: Bookings, options: BookingOptions) -> None:
        self.bookings = bookings
        self.options = options

    async def CreateBooking(self, request: pb.CreateBookingRequest, context) -> pb.CreateBookingResponse:
        new = NewBooking(
            idempotency_key=request.idempotency_key,
            patient_personnummer=request.patient_personnummer,
            start=to_datetime(request.start, "start"),
            duration_minutes=request.duration_minutes,
            booking_unit_hsa_id=request.booking_unit_hsa_id,
            coordinator_hsa_id=request.coordinator_hsa_id,
            care_service=request.care_service,
            contact_type=request.contact_type,
            patient_name=request.patient_name,
            parties=_parties(request.parties),
        )
        return pb.CreateBookingResponse(booking=_view(await self.bookings.create(auth.caller(), new)))

    async def GetBooking(self, request, context):
        return pb.GetBookingResponse(booking=_view(await self.bookings.get(auth.caller(), request.booking_id)))

    async def ListBookings(self, request, context):
        bookings, token = await self.bookings.list(
            auth.caller(), unit=request.booking_unit_hsa_id, coordinator=request.coordinator_hsa_id,
            start=to_datetime(request.period.start, "period.start"),
            end=to_datetime(request.period.end, "period.end"),
            page_size=request.page.page_size, page_token=request.page.page_token)
        return pb.ListBookingsResponse(bookings=[_booking(b) for b in bookings],
                                       page=common_pb2.PageResponse(next_page_token=token))

    async def FindBookingByDialInCode(self, request, context):
        view = await self.bookings.find_by_dial_in_code(auth.caller(), request.dial_in_code)
        return pb.FindBookingByDialInCodeResponse(booking=_view(view))

    async def RescheduleBooking(self, request, context):
        view = await self.bookings.reschedule(auth.caller(), request.booking_id,
                                              to_datetime(request.start, "start"),
                                              request.duration_minutes)
        return pb.RescheduleBookingResponse(booking=_view(view))

    async def CancelBooking(self, request, context):
        view = await self.bookings.cancel(auth.caller(), request.booking_id, request.reason)
        return pb.CancelBookingResponse(booking=_view(view))

    async def UpdateBookingStatus(self, request, context):
        view = await self.bookings.update_status(auth.caller(), request.booking_id,
                                                 STATUS_NAME.get(request.status, ""))
        return pb.UpdateBookingStatusResponse(booking=_view(view))

    async def InviteParties(self, request, context):
        invitations = await self.bookings.invite(auth.caller(), request.booking_id, list(_parties(request.parties)))
        return pb.InvitePartiesResponse(invitations=[_invitation(i) for i in invitations])

    async def ListInvitations(self, request, context):
        invitations = await self.bookings.list_invitations(auth.caller(), request.booking_id)
        return pb.ListInvitationsResponse(invitations=[_invitation(i) for i in invitations])

    async def ConfirmInvitation(self, request, context):
        inv = await self.bookings.confirm(auth.caller(), request.invitation_id, list(request.attendee_names))
        return pb.ConfirmInvitationResponse(invitation=_invitation(inv))

    async def ListPhoneTasks(self, request, context):
        tasks, token = await self.bookings.list_phone_tasks(
            auth.caller(), request.coordinator_hsa_id, request.include_done, request.page.page_size,
            request.page.page_token)
        return pb.ListPhoneTasksResponse(tasks=[_task(t) for t in tasks],
                                         page=common_pb2.PageResponse(next_page_token=token))

    async def AddPhoneTask(self, request, context):
        task = await self.bookings.add_undelivered_task(request.booking_id, request.task_key, request.person_name,
                                                        request.instructions)
        return pb.AddPhoneTaskResponse(task=_task(task))

    async def CompletePhoneTask(self, request, context):
        return pb.CompletePhoneTaskResponse(task=_task(await self.bookings.complete_phone_task(auth.caller(),
                                                                                               request.task_id)))

    async def RequestRebook(self, request, context):
        r = await self.bookings.request_rebook(auth.caller(), request.booking_id, request.meeting_id, request.reason,
                                               request.ticket_id, request.on_behalf_of.id,
                                               request.on_behalf_of.display_name)
        return pb.RequestRebookResponse(request=_rebook(r))

    async def ResolveRebookRequest(self, request, context):
        r = await self.bookings.resolve_rebook(auth.caller(), request.booking_id, request.request_id, request.resolution)
        return pb.ResolveRebookRequestResponse(request=_rebook(r))

    async def ListBookingOptions(self, request, context):
        o = self.options
        return pb.ListBookingOptionsResponse(care_services=o.care_services, contact_types=o.contact_types,
                                             video_care_service=o.video_meeting.care_service,
                                             video_contact_type=o.video_meeting.contact_type)
