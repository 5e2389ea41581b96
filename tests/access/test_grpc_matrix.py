"""The access-control matrix of every gRPC method × every kind of caller, generated from the
ACCESS declarations the services themselves enforce (services/<name>/servicer.py).

Part 1 (coarse, every method): a caller the rule does not admit is refused by the shared
interceptor before the servicer runs (UNAUTHENTICATED for no token, PERMISSION_DENIED
"may not call" otherwise); an admitted caller reaches the servicer.
Part 2 (meeting-scoped, roster): the coordinator of *another* meeting, and people not
registered in this meeting, are refused by the domain on every meeting-scoped method."""

from __future__ import annotations

import asyncio
import importlib

import grpc
import pytest
from svpl.roster.v1 import roster_pb2

from devstack.harness import OPTIONAL, ORDER, as_token
from devstack.samples import create_request
from services.runtime import auth
from tests.conftest import PEOPLE

SERVICES = {name: importlib.import_module(f"services.{name}.servicer").ACCESS for name in ORDER + OPTIONAL}
DESCRIPTORS = {
    name: importlib.import_module(f"svpl.{name}.v1.{name}_pb2").DESCRIPTOR.services_by_name[
        f"{name.capitalize()}Service"]
    for name in ORDER + OPTIONAL
}
ROLES = ["anonymous", *PEOPLE] + [f"service:{s}" for s in ORDER + OPTIONAL + ["gateway"]]


def caller_for(role: str) -> auth.Caller:
    if role == "anonymous":
        return auth.ANONYMOUS
    if role.startswith("service:"):
        return auth.Caller(kind="service", id=role.split(":", 1)[1])
    return auth.Caller(kind="person", id=PEOPLE[role]["person_id"], roles=frozenset(PEOPLE[role]["roles"]))


def test_every_contract_method_has_exactly_one_rule():
    for name, descriptor in DESCRIPTORS.items():
        assert set(SERVICES[name]) == {m.name for m in descriptor.methods}, name


def test_sensitive_methods_are_closed_to_citizens_and_anonymous():
    """A few rows checked by hand, so the declaration itself is reviewed, not only its enforcement."""
    closed = [("roster", "ListParticipants"), ("roster", "RemoveParticipant"), ("roster", "EndMeeting"),
              ("roster", "ReportConnection"), ("booking", "CreateBooking"), ("booking", "GetBooking"),
              ("identity", "IssueJoinToken"), ("identity", "RevokeTokens"), ("identity", "ListAccessRecords"),
              ("identity", "SearchDirectory"), ("media", "Negotiate"), ("media", "CloseRoom"), ("media", "ReleaseRoom"),
              ("support", "ListTickets"), ("support", "EscalateTicket")]
    for service, method in closed:
        for role in ("anonymous", "patient", "next_of_kin"):
            assert not SERVICES[service][method].admits(caller_for(role)), (service, method, role)
    assert not SERVICES["support"]["ListTickets"].admits(caller_for("coordinator"))
    assert SERVICES["roster"]["Admit"].admits(caller_for("next_of_kin"))
    assert not SERVICES["roster"]["Admit"].admits(caller_for("service:gateway"))  # only people join
    # Support reads a meeting only for a fault report, on the reporter's behalf (the domain checks they are in it).
    assert [r for r in ROLES if SERVICES["roster"]["GetReportEvidence"].admits(caller_for(r))] == ["service:support"]
    for method in ("GetMeeting", "GetConnectedList"):
        assert not SERVICES["roster"][method].admits(caller_for("service:support")), method


def test_the_dial_in_service_reaches_only_what_a_phone_call_needs():
    """It resolves meeting IDs, reports and admits its own phone connections, watches the meeting and
    negotiates with media; identifying or removing a caller stays the coordinator's, and only the
    dial-in service may turn a phone connection into a join token."""
    dialin = caller_for("service:dialin")
    allowed = sorted(m for m, rule in SERVICES["roster"].items() if rule.admits(dialin))
    assert allowed == ["AdmitConnection", "EnterPersonalCode", "ReportConnection", "ResolveDialInCode", "WatchMeeting"]
    assert [r for r in ROLES if SERVICES["roster"]["EnterPersonalCode"].admits(caller_for(r))] == ["service:dialin"]
    assert [r for r in ROLES if SERVICES["roster"]["AdmitConnection"].admits(caller_for(r))] == ["service:dialin"]
    assert sorted(m for m, rule in SERVICES["media"].items() if rule.admits(dialin)) == ["Negotiate"]
    assert sorted(m for m, rule in SERVICES["identity"].items() if rule.admits(dialin)) == ["GetSigningKeys"]  # anyone
    for service in ("booking", "support"):
        assert not any(rule.admits(dialin) for rule in SERVICES[service].values()), service


@pytest.fixture(scope="module")
def tokens(keyring):
    out = {"anonymous": ()}
    for role in ROLES[1:]:
        if role.startswith("service:"):
            out[role] = as_token(keyring.issue_service_token(role.split(":", 1)[1]))
        else:
            spec = dict(PEOPLE[role])
            out[role] = as_token(keyring.issue_session_token(assurance="high", **spec)[0])
    return out


async def _call(channel, descriptor, method, metadata):
    request_cls = importlib.import_module(
        f"svpl.{descriptor.full_name.split('.')[1]}.v1.{descriptor.full_name.split('.')[1]}_pb2")
    request = getattr(request_cls, method.input_type.name)()
    path = f"/{descriptor.full_name}/{method.name}"
    if method.server_streaming:
        call = channel.unary_stream(path, request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=lambda b: b)(request, metadata=metadata, timeout=5)
        try:
            async for _ in call:
                break
            call.cancel()
            return grpc.StatusCode.OK, ""
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    try:
        await channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=lambda b: b)(request, metadata=metadata, timeout=5)
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""


def refused_by_interceptor(code, details) -> bool:
    return code == grpc.StatusCode.UNAUTHENTICATED and "log in first" in details or (
        code == grpc.StatusCode.PERMISSION_DENIED and "may not call" in details)


async def test_every_method_for_every_caller_matches_the_declaration(system_factory, tokens):
    system = await system_factory()
    rows = [(name, method, role) for name in ORDER for method in DESCRIPTORS[name].methods for role in ROLES]
    semaphore = asyncio.Semaphore(16)

    async def check(name, method, role):
        async with semaphore:
            code, details = await _call(system.channel(name), DESCRIPTORS[name], method, tokens[role])
        allowed = SERVICES[name][method.name].admits(caller_for(role))
        if allowed == refused_by_interceptor(code, details):
            return f"{name}.{method.name} as {role}: declared {'allowed' if allowed else 'refused'}, got {code.name}"
        if not allowed and role == "anonymous" and code != grpc.StatusCode.UNAUTHENTICATED:
            return f"{name}.{method.name} as anonymous: {code.name}, wanted UNAUTHENTICATED"
        if code == grpc.StatusCode.INTERNAL:
            return f"{name}.{method.name} as {role}: INTERNAL for an empty request ({details})"
        return None

    problems = [p for p in await asyncio.gather(*(check(*row) for row in rows)) if p]
    assert len(rows) > 500
    assert not problems, "\n".join(problems)


COORDINATOR_ONLY = {
    "OpenMeeting": roster_pb2.OpenMeetingRequest,
    "StartMeeting": roster_pb2.StartMeetingRequest,
    "AbortMeeting": roster_pb2.AbortMeetingRequest,
    "EndMeeting": roster_pb2.EndMeetingRequest,
    "DelegateCoordinator": lambda meeting_id: roster_pb2.DelegateCoordinatorRequest(
        meeting_id=meeting_id, hsa_id=PEOPLE["other_coordinator"]["person_id"]),
    "ListParticipants": roster_pb2.ListParticipantsRequest,
    "RecordConfidentialityAssessment": lambda meeting_id: roster_pb2.RecordConfidentialityAssessmentRequest(
        meeting_id=meeting_id, care_provider="Region Jönköpings län", note="prövad"),
    "GetReconciliation": roster_pb2.GetReconciliationRequest,
    "AdvanceAgenda": roster_pb2.AdvanceAgendaRequest,
    "RecordSummary": lambda meeting_id: roster_pb2.RecordSummaryRequest(meeting_id=meeting_id, summary="x"),
    "RegisterParticipant": lambda meeting_id: roster_pb2.RegisterParticipantRequest(
        meeting_id=meeting_id, full_name="Rita Region", role=roster_pb2.PARTICIPANT_ROLE_REGION_STAFF,
        person={"id_kind": 1, "id": PEOPLE["region_staff"]["person_id"]}),
}
PARTICIPANT_VISIBLE = {
    "GetConnectedList": roster_pb2.GetConnectedListRequest,
    "GetAgenda": roster_pb2.GetAgendaRequest,
    "Admit": roster_pb2.AdmitRequest,
    "GetMyAdmission": roster_pb2.GetMyAdmissionRequest,
}


async def test_meeting_scoped_methods_refuse_other_coordinators_and_unregistered_people(system_factory, tokens):
    system = await system_factory(["identity", "media", "roster"])
    roster = system.stub("roster")
    meeting = (await roster.CreateMeeting(create_request("booking-matrix"), metadata=tokens["service:booking"])).meeting

    def build(factory):
        return factory(meeting_id=meeting.meeting_id) if isinstance(factory, type) else factory(meeting.meeting_id)

    problems = []
    for method, factory in COORDINATOR_ONLY.items():
        for role in ("other_coordinator", "region_staff"):
            try:
                await getattr(roster, method)(build(factory), metadata=tokens[role])
                problems.append(f"{method} as {role}: allowed")
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                    problems.append(f"{method} as {role}: {exc.code().name} {exc.details()}")
    for method, factory in PARTICIPANT_VISIBLE.items():
        # (the patient is registered with the meeting by booking: not among these)
        for role in ("next_of_kin", "municipality_staff", "other_coordinator"):
            try:
                await getattr(roster, method)(build(factory), metadata=tokens[role])
                problems.append(f"{method} as unregistered {role}: allowed")
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION):
                    problems.append(f"{method} as unregistered {role}: {exc.code().name} {exc.details()}")
    # The meeting's own coordinator is allowed on every coordinator-only method (done last: End is final).
    for method in ["RecordConfidentialityAssessment", "ListParticipants", "GetReconciliation", "GetAgenda"]:
        factory = COORDINATOR_ONLY.get(method) or PARTICIPANT_VISIBLE[method]
        await getattr(roster, method)(build(factory), metadata=tokens["coordinator"])
    assert not problems, "\n".join(problems)
