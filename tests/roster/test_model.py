"""The meeting's rules as plain Python (services.roster.model), directly and fast."""

from __future__ import annotations

import datetime as dt

import pytest

from services.roster import model as M
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied

COORD = "SE2321000057-1001"


def meeting(state: str = M.SCHEDULED) -> M.Meeting:
    now = M.now()
    m = M.Meeting(id="m1", booking_id="b1", start=now, end=now + dt.timedelta(hours=1), coordinator_hsa_id=COORD,
                  dial_in_code="1", portal_url="u", state=state)
    m.participants.append(M.Participant("p-coord", "Vera", M.COORDINATOR, M.HSA_ID, COORD, [M.SITHS]))
    m.participants.append(M.Participant("p-pat", "Tolvan", M.PATIENT, M.PERSONNUMMER, "191212121212",
                                        [M.BANKID, M.E_SERVICES_1177]))
    return m


@pytest.mark.parametrize("role, kind, methods, expected", [
    (M.NEXT_OF_KIN, M.PERSONNUMMER, [], [M.E_SERVICES_1177]),
    (M.PATIENT, M.PERSONNUMMER, [], [M.BANKID, M.E_SERVICES_1177]),
    (M.EXTERNAL, M.PERSONNUMMER, [M.BANKID], [M.BANKID]),
    (M.REGION_STAFF, M.HSA_ID, [], [M.SITHS]),
])
def test_allowed_login_methods_per_role(role, kind, methods, expected):
    assert M.check_methods(role, kind, methods) == expected


@pytest.mark.parametrize("role, kind, methods, field", [
    (M.NEXT_OF_KIN, M.PERSONNUMMER, [M.BANKID], "allowed_methods"),
    (M.NEXT_OF_KIN, M.HSA_ID, [], "person.id_kind"),
    (M.MUNICIPALITY_STAFF, M.PERSONNUMMER, [], "person.id_kind"),
    (M.PATIENT, M.PERSONNUMMER, [M.SITHS], "allowed_methods"),
])
def test_wrong_id_kind_or_method_for_a_role_is_bad_input(role, kind, methods, field):
    with pytest.raises(InvalidArgument) as err:
        M.check_methods(role, kind, methods)
    assert err.value.field == field


def test_refusals_name_the_first_thing_wrong():
    m = meeting(M.OPEN)
    with pytest.raises(PermissionDenied) as err:
        M.admit(m, "199001011234", M.PERSONNUMMER, M.BANKID)
    assert err.value.reason == M.NOT_REGISTERED
    with pytest.raises(PermissionDenied) as err:
        M.admit(m, "191212121212", M.PERSONNUMMER, M.SITHS)
    assert err.value.reason == M.WRONG_LOGIN_METHOD and "BankID eller 1177 e-tjänster" in err.value.message
    with pytest.raises(FailedPrecondition) as err:
        M.admit(m, "191212121212", M.PERSONNUMMER, M.BANKID)
    assert err.value.reason == M.NOT_STARTED_REFUSAL
    assert M.admit(m, COORD, M.HSA_ID, M.SITHS).id == "p-coord"  # the coordinator, while open
    M.start(m)
    M.remove(m, "p-pat")
    with pytest.raises(PermissionDenied) as err:
        M.admit(m, "191212121212", M.PERSONNUMMER, M.BANKID)
    assert err.value.reason == M.REMOVED
    M.finish(m, M.ENDED, "done")
    with pytest.raises(FailedPrecondition) as err:
        M.admit(m, COORD, M.HSA_ID, M.SITHS)
    assert err.value.reason == M.FINISHED


def test_a_cancelled_meeting_refuses_joining_saying_it_was_cancelled():
    m = meeting(M.SCHEDULED)
    M.cancel(m, "Avbokat av samordnaren")
    for person, kind, method in ((COORD, M.HSA_ID, M.SITHS), ("191212121212", M.PERSONNUMMER, M.BANKID)):
        with pytest.raises(FailedPrecondition) as err:
            M.admit(m, person, kind, method)
        assert err.value.reason == M.CANCELLED_REFUSAL and "inställt" in err.value.message


def test_connections_of_removed_people_or_finished_meetings_are_not_allowed():
    m = meeting(M.LIVE)
    assert M.report_connection(m, "c1", M.WEBRTC, "p-pat", True, "", "media-1")
    assert M.report_connection(m, "c2", M.PHONE, "", True, "070-***", "media-1")
    assert m.connected_participant_ids() == {"p-pat"} and len(m.unidentified()) == 1
    M.remove(m, "p-pat")
    assert not m.connections or all(c.participant_id != "p-pat" for c in m.connections)
    assert not M.report_connection(m, "c3", M.WEBRTC, "p-pat", True, "", "media-1")
    M.remove_connection(m, "c2")
    assert not M.report_connection(m, "c2", M.PHONE, "", True, "", "media-1")
    M.finish(m, M.ABORTED, "stranger")
    assert not M.report_connection(m, "c4", M.PHONE, "", True, "", "media-1")
    assert m.cleanup_pending and not m.connections


def test_final_states_accept_no_transition():
    for final in (M.ENDED, M.ABORTED, M.CANCELLED):
        for change in (lambda m: M.place(m, "i", "c", "a"), M.start,
                       lambda m: M.finish(m, M.ENDED if m.state != M.ENDED else M.ABORTED, ""),
                       lambda m: M.reschedule(m, m.start, m.end), lambda m: M.advance_agenda(m, ""),
                       M.auto_close):
            m = meeting(final)
            with pytest.raises(FailedPrecondition):
                change(m)
            assert m.state == final
    # Ending twice, or cancelling twice, is not an error and changes nothing.
    m = meeting(M.LIVE)
    assert M.finish(m, M.ENDED, "") and not M.finish(m, M.ENDED, "")
    m = meeting()
    assert M.cancel(m, "") and not M.cancel(m, "")


def test_speaking_order_is_patient_next_of_kin_then_the_rest_in_registration_order():
    m = meeting(M.LIVE)
    m.participants.insert(0, M.Participant("p-ext", "Fia", M.EXTERNAL, M.PERSONNUMMER, "200001012384", [M.BANKID]))
    m.participants.append(M.Participant("p-nok", "Nils", M.NEXT_OF_KIN, M.PERSONNUMMER, "198112289874",
                                        [M.E_SERVICES_1177]))
    m.participants.append(M.Participant("p-mun", "Mona", M.MUNICIPALITY_STAFF, M.HSA_ID, "SE2120000829-3001",
                                        [M.SITHS], removed=True))
    assert [p.id for p in m.speaking_order()] == ["p-pat", "p-nok", "p-ext", "p-coord"]


def test_a_phone_connection_is_admitted_only_as_the_person_the_coordinator_identified():
    m = meeting(M.LIVE)
    assert M.report_connection(m, "phone-1", M.PHONE, "", True, "Telefon, slutar på …12", "")
    with pytest.raises(FailedPrecondition) as err:
        M.admit_connection(m, "phone-1")  # still in the lobby
    assert err.value.reason == "NOT_IDENTIFIED"
    assert M.report_connection(m, "c1", M.WEBRTC, "p-coord", True, "", "media-1")
    with pytest.raises(InvalidArgument):
        M.admit_connection(m, "c1")  # a browser's connection is not the dial-in service's to admit
    M.identify(m, "phone-1", "p-pat")
    assert M.admit_connection(m, "phone-1").id == "p-pat"
    # Removing the person bans their phone connection: the same number calling back is refused.
    M.remove(m, "p-pat")
    assert "phone-1" in m.banned_connections
    assert not M.report_connection(m, "phone-1", M.PHONE, "", True, "Telefon, slutar på …12", "")
    with pytest.raises(PermissionDenied) as err:
        M.admit_connection(m, "phone-1")
    assert err.value.reason == M.REMOVED


def test_a_phone_connection_is_not_admitted_before_the_start_or_after_the_end():
    m = meeting(M.OPEN)
    assert M.report_connection(m, "phone-1", M.PHONE, "", True, "", "")  # waits in the lobby
    M.identify(m, "phone-1", "p-pat")
    with pytest.raises(FailedPrecondition) as err:
        M.admit_connection(m, "phone-1")
    assert err.value.reason == M.NOT_STARTED_REFUSAL
    M.finish(m, M.ENDED, "")
    with pytest.raises(FailedPrecondition) as err:
        M.admit_connection(m, "phone-1")
    assert err.value.reason == M.FINISHED
