"""SupportService: thin gRPC layer (decode, call the domain, encode).

Methods not yet implemented answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from svpl.support.v1 import support_pb2_grpc

from services.runtime import auth
from services.runtime.auth import ANYONE, LOGGED_IN, persons_with, services

DESK = persons_with(auth.ROLE_SUPPORT_DESK)

ACCESS = {
    "FileReport": LOGGED_IN,
    "GetTicket": LOGGED_IN,
    "ListTickets": DESK,
    "AssignTicket": DESK,
    "CommentTicket": LOGGED_IN,
    "EscalateTicket": DESK,
    "ChangeTicketState": DESK,
    "GetRoutingTable": LOGGED_IN,
}


class SupportServicer(support_pb2_grpc.SupportServiceServicer):
    pass
