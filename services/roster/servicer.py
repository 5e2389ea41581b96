"""RosterService: thin gRPC layer (decode, call the domain, encode).

Methods not yet implemented answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from svpl.roster.v1 import roster_pb2_grpc

from services.runtime import auth
from services.runtime.auth import ANYONE, LOGGED_IN, persons_with, services

COORDINATOR = persons_with(auth.ROLE_COORDINATOR)

ACCESS = {
    "CreateMeeting": services("booking"),
    "RescheduleMeeting": services("booking"),
    "CancelMeeting": services("booking"),
    "GetMeeting": LOGGED_IN | services("booking", "support", "media", "gateway"),
    "ListMyMeetings": LOGGED_IN,
    "ResolveDialInCode": services("gateway", "media", "booking"),
    "OpenMeeting": COORDINATOR,
    "StartMeeting": COORDINATOR,
    "DelegateCoordinator": COORDINATOR,
    "AbortMeeting": COORDINATOR,
    "EndMeeting": COORDINATOR,
    "RegisterParticipant": COORDINATOR,
    "ListParticipants": COORDINATOR,
    "SetPhysicalPresence": COORDINATOR,
    "RecordConfidentialityAssessment": COORDINATOR,
    "RemoveParticipant": COORDINATOR,
    "Admit": LOGGED_IN,
    "ReportConnection": services("media"),
    "IdentifyConnection": COORDINATOR,
    "GetConnectedList": LOGGED_IN | services("support"),
    "GetReconciliation": COORDINATOR,
    "GetAgenda": LOGGED_IN,
    "AdvanceAgenda": COORDINATOR,
    "SetCurrentSpeaker": COORDINATOR,
    "RecordSummary": COORDINATOR,
    "WatchMeeting": LOGGED_IN,
}


class RosterServicer(roster_pb2_grpc.RosterServiceServicer):
    pass
