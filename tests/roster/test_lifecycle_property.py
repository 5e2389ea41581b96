"""Property: no sequence of RPCs, by anyone, reopens a finished meeting (ended, aborted,
cancelled), and a meeting's state only ever moves forward. Run through the real services."""

from __future__ import annotations

import grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2 as R

from devstack.samples import scheduled
from tests.roster.conftest import MEDIA_INSTANCE

ORDER = {R.MEETING_STATE_SCHEDULED: 0, R.MEETING_STATE_OPEN: 1, R.MEETING_STATE_LIVE: 2,
         R.MEETING_STATE_ENDED: 3, R.MEETING_STATE_ABORTED: 3, R.MEETING_STATE_CANCELLED: 3}
FINAL = {R.MEETING_STATE_ENDED, R.MEETING_STATE_ABORTED, R.MEETING_STATE_CANCELLED}
PEOPLE = ["coordinator", "other_coordinator", "region_staff", "patient", "next_of_kin"]
ACTIONS = ["open", "start", "end", "abort", "cancel", "reschedule", "create_again", "register_staff",
           "register_next_of_kin", "delegate", "admit", "connect", "connect_phone", "remove", "advance",
           "speaker", "summary", "identify"]


async def act(world, m, action: str, who: str, state: dict) -> None:
    """One RPC; a refusal is an allowed outcome (it must just never reopen anything)."""
    me = world.who(who)
    mid = m.meeting_id
    calls = {
        "open": lambda: world.roster.OpenMeeting(R.OpenMeetingRequest(meeting_id=mid), metadata=me),
        "start": lambda: world.roster.StartMeeting(R.StartMeetingRequest(meeting_id=mid), metadata=me),
        "end": lambda: world.roster.EndMeeting(R.EndMeetingRequest(meeting_id=mid), metadata=me),
        "abort": lambda: world.roster.AbortMeeting(R.AbortMeetingRequest(meeting_id=mid), metadata=me),
        "cancel": lambda: world.roster.CancelMeeting(R.CancelMeetingRequest(meeting_id=mid), metadata=world.booking),
        "reschedule": lambda: world.roster.RescheduleMeeting(
            R.RescheduleMeetingRequest(meeting_id=mid, scheduled=scheduled()), metadata=world.booking),
        "create_again": lambda: world.roster.CreateMeeting(
            R.CreateMeetingRequest(booking_id=m.booking_id, scheduled=scheduled(),
                                   coordinator_hsa_id="SE2321000057-1001"), metadata=world.booking),
        "register_staff": lambda: world.roster.RegisterParticipant(R.RegisterParticipantRequest(
            meeting_id=mid, full_name="Olle Annan", role=R.PARTICIPANT_ROLE_REGION_STAFF,
            person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID, id="SE2321000057-1002")), metadata=me),
        "register_next_of_kin": lambda: world.roster.RegisterParticipant(R.RegisterParticipantRequest(
            meeting_id=mid, full_name="Nils", role=R.PARTICIPANT_ROLE_NEXT_OF_KIN,
            person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id="198112289874")), metadata=me),
        "delegate": lambda: world.roster.DelegateCoordinator(
            R.DelegateCoordinatorRequest(meeting_id=mid, hsa_id="SE2321000057-1002"), metadata=me),
        "admit": lambda: world.roster.Admit(R.AdmitRequest(meeting_id=mid), metadata=me),
        "connect": lambda: world.roster.ReportConnection(R.ReportConnectionRequest(
            meeting_id=mid, connection_id=f"c-{who}", kind=R.CONNECTION_KIND_WEBRTC,
            participant_id=state.get(who, ""), connected=True, media_instance=MEDIA_INSTANCE), metadata=world.media_md),
        "connect_phone": lambda: world.roster.ReportConnection(R.ReportConnectionRequest(
            meeting_id=mid, connection_id="c-phone", kind=R.CONNECTION_KIND_PHONE, connected=True,
            media_instance=MEDIA_INSTANCE), metadata=world.media_md),
        "remove": lambda: world.roster.RemoveParticipant(R.RemoveParticipantRequest(
            meeting_id=mid, participant_id=state.get("patient", "x")), metadata=me),
        "advance": lambda: world.roster.AdvanceAgenda(R.AdvanceAgendaRequest(meeting_id=mid), metadata=me),
        "speaker": lambda: world.roster.SetCurrentSpeaker(R.SetCurrentSpeakerRequest(
            meeting_id=mid, participant_id=state.get("patient", "")), metadata=me),
        "summary": lambda: world.roster.RecordSummary(R.RecordSummaryRequest(meeting_id=mid, summary="s"),
                                                      metadata=me),
        "identify": lambda: world.roster.IdentifyConnection(R.IdentifyConnectionRequest(
            meeting_id=mid, connection_id="c-phone", participant_id=state.get("patient", "")), metadata=me),
    }
    try:
        reply = await calls[action]()
    except grpc.aio.AioRpcError as exc:
        assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), exc.details()
        return
    if action == "admit":
        state[who] = reply.participant_id


STEP = st.tuples(st.sampled_from(ACTIONS), st.sampled_from(["coordinator"] * 3 + PEOPLE))
# Random steps around a path that often gets the meeting live and finished, so that many
# examples exercise "after the end"; hypothesis still mixes in anything, by anyone.
PATH = st.sampled_from([[], ["open"], ["open", "start"]]).map(lambda xs: [(x, "coordinator") for x in xs])
FINISH = st.sampled_from([[], [("end", "coordinator")], [("abort", "coordinator")], [("cancel", "coordinator")]])
SEQUENCES = st.tuples(st.lists(STEP, max_size=3), PATH, st.lists(STEP, max_size=3), FINISH,
                      st.lists(STEP, max_size=8)).map(lambda parts: [step for part in parts for step in part])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=SEQUENCES)
async def test_no_sequence_of_rpcs_reopens_a_finished_meeting(world, steps):
    m = await world.meeting()
    ids: dict[str, str] = {}  # who was admitted, as which participant
    state = m.state
    reached, finished = ORDER[state], None
    for action, who in steps:
        await act(world, m, action, who, ids)
        state = (await world.state(m.meeting_id)).state
        assert ORDER[state] >= reached, f"{action} by {who} moved the meeting back"
        reached = ORDER[state]
        if finished is not None:
            event(f"tried {action} after finishing")
            assert state == finished, f"{action} by {who} changed a finished meeting"
        elif state in FINAL:
            finished = state
    event(f"last state {R.MeetingState.Name(state)}")
    if finished is not None:
        for who in PEOPLE:
            try:
                await world.roster.Admit(R.AdmitRequest(meeting_id=m.meeting_id), metadata=world.who(who))
                raise AssertionError(f"{who} was admitted to a finished meeting")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED)
        report = R.ReportConnectionRequest(meeting_id=m.meeting_id, connection_id="late", connected=True,
                                           kind=R.CONNECTION_KIND_PHONE, media_instance=MEDIA_INSTANCE)
        assert not (await world.roster.ReportConnection(report, metadata=world.media_md)).allowed
