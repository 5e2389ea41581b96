"""BookingService: thin gRPC layer (decode, call the domain, encode).

Methods not yet implemented answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from svpl.booking.v1 import booking_pb2_grpc

from services.runtime import auth
from services.runtime.auth import ANYONE, LOGGED_IN, persons_with, services

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


class BookingServicer(booking_pb2_grpc.BookingServiceServicer):
    pass
