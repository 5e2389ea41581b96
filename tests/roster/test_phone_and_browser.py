"""One person, one way in: media keeps one connection per participant (a second replaces the
first), so roster refuses the second way in clearly instead: a person on the phone is not let in
by browser too, and a phone caller is not identified or admitted as someone in by browser."""

from __future__ import annotations

import grpc
import pytest
from svpl.roster.v1 import roster_pb2

from services.roster import model as M
from services.runtime.errors import FailedPrecondition
from tests.roster.helpers import reason
from tests.roster.test_model import meeting


def on_the_phone(m: M.Meeting, pid: str = "p-pat") -> None:
    assert M.report_connection(m, "phone-1", M.PHONE, "", True, "Telefon, slutar på …12", "")
    M.identify(m, "phone-1", pid)


def test_a_person_on_the_phone_is_not_let_in_by_browser_too():
    m = meeting(M.LIVE)
    on_the_phone(m)
    with pytest.raises(FailedPrecondition) as err:
        M.admit(m, "191212121212", M.PERSONNUMMER, M.BANKID)
    assert err.value.reason == M.CONNECTED_BY_PHONE and "per telefon" in err.value.message
    # The phone bridge's own WebRTC connection (media's report) does not make them a browser user.
    assert M.report_connection(m, "webrtc-bridge", M.WEBRTC, "p-pat", True, "", "")
    assert M.admit_connection(m, "phone-1").id == "p-pat"
    # Hung up: the browser is welcome.
    M.report_connection(m, "phone-1", M.PHONE, "", False, "", "")
    M.report_connection(m, "webrtc-bridge", M.WEBRTC, "", False, "", "")
    assert M.admit(m, "191212121212", M.PERSONNUMMER, M.BANKID).id == "p-pat"


def test_a_phone_caller_is_not_identified_or_admitted_as_someone_in_by_browser():
    m = meeting(M.LIVE)
    assert M.report_connection(m, "webrtc-1", M.WEBRTC, "p-pat", True, "", "")
    assert M.report_connection(m, "phone-1", M.PHONE, "", True, "Telefon, slutar på …12", "")
    with pytest.raises(FailedPrecondition) as err:
        M.identify(m, "phone-1", "p-pat")
    assert err.value.reason == M.CONNECTED_BY_BROWSER and "Tolvan är redan ansluten" in err.value.message
    assert m.connection("phone-1").participant_id == ""  # nothing changed
    assert M.identify(m, "phone-1", "p-coord").participant_id == "p-coord"  # someone else: fine
    # The browser leaves: the caller can be the patient after all (once the other identification is undone).
    m = meeting(M.LIVE)
    assert M.report_connection(m, "webrtc-1", M.WEBRTC, "p-pat", True, "", "")
    assert M.report_connection(m, "phone-1", M.PHONE, "", True, "", "")
    M.report_connection(m, "webrtc-1", M.WEBRTC, "", False, "", "")
    M.identify(m, "phone-1", "p-pat")
    assert M.admit_connection(m, "phone-1").id == "p-pat"


async def test_over_grpc_the_coordinator_is_told_the_person_is_in_by_browser(world):
    m = await world.live()
    admitted = await world.admit(m.meeting_id, "patient")
    # Media reports the patient's browser connection.
    await world.roster.ReportConnection(roster_pb2.ReportConnectionRequest(
        meeting_id=m.meeting_id, connection_id="webrtc-patient", participant_id=admitted.participant_id,
        connected=True, kind=roster_pb2.CONNECTION_KIND_WEBRTC), metadata=world.media_md)
    # A phone caller in the lobby (as the dial-in service reports one).
    await world.roster.ReportConnection(roster_pb2.ReportConnectionRequest(
        meeting_id=m.meeting_id, connection_id="phone-abc", connected=True, kind=roster_pb2.CONNECTION_KIND_PHONE,
        label="Telefon, slutar på …12"), metadata=world.media_md)
    err = await world.refused(world.roster.IdentifyConnection(roster_pb2.IdentifyConnectionRequest(
        meeting_id=m.meeting_id, connection_id="phone-abc", participant_id=admitted.participant_id),
        metadata=world.who("coordinator")), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(err) == M.CONNECTED_BY_BROWSER and "webbläsaren" in err.details()
