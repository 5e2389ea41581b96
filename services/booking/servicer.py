"""BookingService: thin gRPC layer (decode, call the domain, encode).

ACCESS says who may call each RPC; the domain then checks what only it can (the
booking's own coordinator, staff of its booking unit).
"""

from __future__ import annotations

from svpl.booking.v1 import booking_pb2 as pb
from svpl.booking.v1 import booking_pb2_grpc
from svpl.common.v1 import common_pb2

from services.booking import domain
from services.booking.domain import Bookings, NewBooking, PartyInput
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
    "RequestRebook": services("support"),
    "ListBookingOptions": LOGGED_IN,
}

STATUS = {
    domain.PROPOSED: pb.BOOKING_STATUS_PROPOSED,
    domain.BOOKED: pb.BOOKING_STATUS_BOOKED,
    domain.CANCELLED: pb.BOOKING_STATUS_CANCELLED,
    domain.FULFILLED: pb.BOOKING_STATUS_FULFILLED,
    domain.NOSHOW: pb.BOOKING_STATUS_NOSHOW,
    domain.ENTERED_IN_ERROR: pb.BOOKING_STATUS_ENTERED_IN_ERROR,
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
}
KIND_NAME = {v: k for k, v in KIND.items()}
INVITATION_STATE = {
    domain.INVITED: pb.INVITATION_STATE_INVITED,
    domain.INV_DELIVERED: pb.INVITATION_STATE_DELIVERED,
    domain.CONFIRMED: pb.INVITATION_STATE_CONFIRMED,
    domain.PHONE_TASK: pb.INVITATION_STATE_PHONE_TASK,
}


def _parties(parties) -> tuple[PartyInput, ...]:
    return tuple(PartyInput(KIND_NAME.get(p.kind, ""), p.name, CHANNEL_NAME.get(p.channel, ""), p.address)
                 for p in parties)


def _party(party: dict) -> pb.Party:
    return pb.Party(party_id=party["party_id"], kind=KIND[party["kind"]], name=party["name"],
                    channel=CHANNEL[party["channel"]], address=party["address"])


def _invitation(inv: dict) -> pb.Invitation:
    return pb.Invitation(
        invitation_id=inv["_id"], party=_party(inv["party"]), state=INVITATION_STATE[inv["state"]],
        attendee_names=inv.get("attendee_names", []), delivered_at=to_timestamp(inv.get("delivered_at")),
        confirmed_at=to_timestamp(inv.get("confirmed_at")), delivery_attempts=inv.get("delivery_attempts", 0),
        last_error=inv.get("last_error", ""),
    )


def _rebook(r: dict) -> pb.RebookRequest:
    return pb.RebookRequest(request_id=r["request_id"], reason=r["reason"], ticket_id=r.get("ticket_id", ""),
                            requested_at=to_timestamp(r["requested_at"]))


def _booking(doc: dict, invitations: list[dict] = ()) -> pb.Booking:
    return pb.Booking(
        booking_id=doc["_id"],
        status=STATUS[doc["status"]],
        patient=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=doc["patient"]),
        start=to_timestamp(doc["start"]),
        duration_minutes=doc["duration_minutes"],
        booking_unit_hsa_id=doc["booking_unit"],
        coordinator_hsa_id=doc["coordinator"],
        care_service=doc["care_service"],
        contact_type=doc["contact_type"],
        meeting_id=doc["meeting_id"],
        dial_in_code=doc["dial_in_code"],
        portal_url=doc["portal_url"],
        meeting_pending=doc["meeting_pending"],
        invitations=[_invitation(i) for i in invitations],
        rebook_requests=[_rebook(r) for r in doc.get("rebook_requests", [])],
        created_at=to_timestamp(doc["created_at"]),
        updated_at=to_timestamp(doc["updated_at"]),
        cancel_reason=doc.get("cancel_reason", ""),
    )


def _view(view: domain.BookingView) -> pb.Booking:
    return _booking(view.doc, view.invitations)


def _task(task: dict) -> pb.PhoneTask:
    return pb.PhoneTask(task_id=task["_id"], booking_id=task["booking_id"], party=_party(task["party"]),
                        instructions=task["instructions"], done=task["done"],
                        created_at=to_timestamp(task["created_at"]))


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
            parties=_parties(request.parties),
        )
        return pb.CreateBookingResponse(booking=_view(await self.bookings.create(auth.caller(), new)))

    async def GetBooking(self, request, context):
        return pb.GetBookingResponse(booking=_view(await self.bookings.get(auth.caller(), request.booking_id)))

    async def ListBookings(self, request, context):
        docs, token = await self.bookings.list(
            auth.caller(), unit=request.booking_unit_hsa_id, coordinator=request.coordinator_hsa_id,
            start=to_datetime(request.period.start, "period.start"),
            end=to_datetime(request.period.end, "period.end"),
            page_size=request.page.page_size, page_token=request.page.page_token)
        return pb.ListBookingsResponse(bookings=[_booking(d) for d in docs],
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

    async def CompletePhoneTask(self, request, context):
        return pb.CompletePhoneTaskResponse(task=_task(await self.bookings.complete_phone_task(auth.caller(),
                                                                                               request.task_id)))

    async def RequestRebook(self, request, context):
        r = await self.bookings.request_rebook(auth.caller(), request.booking_id, request.meeting_id, request.reason,
                                               request.ticket_id, request.on_behalf_of.id)
        return pb.RequestRebookResponse(request=_rebook(r))

    async def ListBookingOptions(self, request, context):
        o = self.options
        return pb.ListBookingOptionsResponse(care_services=o.care_services, contact_types=o.contact_types,
                                             video_care_service=o.video_meeting.care_service,
                                             video_contact_type=o.video_meeting.contact_type)
