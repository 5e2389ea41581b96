"""The coordinator's tasks the portal relays since issue #18 (invite more parties, record a
confirmation, phone tasks, reschedule, who is physically present, identify a phone caller,
delegate, the confidentiality assessments listed), each done as the coordinator does it, and each
tried by a person with a valid login on a meeting that is not theirs: refused, nothing changed."""

from __future__ import annotations

import datetime as dt

from svpl.roster.v1 import roster_pb2

from devstack.harness import as_token
from tests.conftest import PEOPLE
from tests.gateway.conftest import COORDINATOR, MUNICIPALITY_STAFF, PATIENT, REGION_STAFF
from tests.gateway.flow import book_video_meeting, register, start
from tests.polling import poll

OTHER_COORDINATOR = PEOPLE["other_coordinator"]["person_id"]
PHONE_PARTY = {"kind": "PARTY_KIND_INPATIENT_WARD", "name": "Avdelning 12", "channel": "CHANNEL_PHONE",
               "address": "036-32 10 00"}


async def logged_in(new_browser, *person_ids: str) -> list:
    """A browser per person, each logged in (development login, the person's default method)."""
    browsers = []
    for person_id in person_ids:
        browsers.append(new_browser())
        await browsers[-1].login(person_id)
    return browsers


async def phone_caller(system, meeting: dict, connection_id: str = "phone-1") -> None:
    """A phone dial-in nobody has identified, as media reports it to roster."""
    answer = await system.stub("roster").ReportConnection(roster_pb2.ReportConnectionRequest(
        meeting_id=meeting["meeting_id"], connection_id=connection_id, kind=roster_pb2.CONNECTION_KIND_PHONE,
        connected=True, label="070-*** ** 12", media_instance=meeting["media_instance"]),
        metadata=as_token(system.tokens["media"]))
    assert answer.allowed


async def test_coordinator_invites_records_a_phone_confirmation_and_completes_the_phone_task(gateway):
    _, _, new_browser = gateway
    [coordinator] = await logged_in(new_browser, COORDINATOR)
    booking = await book_video_meeting(coordinator)
    invited = await coordinator.post(f"/api/v1/bookings/{booking['booking_id']}/invitations",
                                     json={"parties": [PHONE_PARTY]})
    assert invited.status_code == 200, invited.text
    invitation = invited.json()["invitations"][0]
    assert invitation["state"] == "INVITATION_STATE_PHONE_TASK"

    tasks = (await coordinator.get("/api/v1/phone-tasks")).json()["tasks"]
    mine = [t for t in tasks if t["party"]["name"] == "Avdelning 12"]
    assert len(mine) == 1 and booking["dial_in_code"] in mine[0]["instructions"]

    confirmed = await coordinator.post(f"/api/v1/invitations/{invitation['invitation_id']}/confirmation",
                                       json={"attendee_names": ["Sara Sjuksköterska", "Per Läkare"]})
    assert confirmed.status_code == 200, confirmed.text
    listed = (await coordinator.get(f"/api/v1/bookings/{booking['booking_id']}/invitations")).json()["invitations"]
    ward = next(i for i in listed if i["invitation_id"] == invitation["invitation_id"])
    assert ward["state"] == "INVITATION_STATE_CONFIRMED"
    assert ward["attendee_names"] == ["Sara Sjuksköterska", "Per Läkare"]

    done = await coordinator.post(f"/api/v1/phone-tasks/{mine[0]['task_id']}/done")
    assert done.status_code == 200 and done.json()["task"]["done"], done.text
    open_tasks = (await coordinator.get("/api/v1/phone-tasks")).json()["tasks"]
    assert mine[0]["task_id"] not in [t["task_id"] for t in open_tasks]
    all_tasks = (await coordinator.get("/api/v1/phone-tasks", params={"include_done": "true"})).json()["tasks"]
    assert mine[0]["task_id"] in [t["task_id"] for t in all_tasks]


async def test_coordinator_reschedules_and_the_meeting_follows(gateway):
    _, _, new_browser = gateway
    [coordinator] = await logged_in(new_browser, COORDINATOR)
    booking = await book_video_meeting(coordinator)
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).replace(microsecond=0, second=0)
    moved = await coordinator.post(f"/api/v1/bookings/{booking['booking_id']}/reschedule",
                                   json={"start": later.isoformat(), "duration_minutes": 90})
    assert moved.status_code == 200, moved.text
    assert dt.datetime.fromisoformat(moved.json()["booking"]["start"].replace("Z", "+00:00")) == later
    meeting = (await coordinator.get(f"/api/v1/meetings/{booking['meeting_id']}")).json()["meeting"]
    assert dt.datetime.fromisoformat(meeting["scheduled"]["start"].replace("Z", "+00:00")) == later
    assert dt.datetime.fromisoformat(meeting["scheduled"]["end"].replace("Z", "+00:00")) == later + dt.timedelta(
        minutes=90)
    past = await coordinator.post(f"/api/v1/bookings/{booking['booking_id']}/reschedule",
                                  json={"start": "2020-01-01T09:00:00Z"})
    assert past.status_code == 400 and past.headers["content-type"].startswith("application/problem+json")


async def test_coordinator_records_presence_identifies_a_caller_delegates_and_lists_assessments(gateway):
    _, system, new_browser = gateway
    coordinator, rita, patient = await logged_in(new_browser, COORDINATOR, REGION_STAFF, PATIENT)
    booking = await book_video_meeting(coordinator)
    meeting_id = booking["meeting_id"]
    staff = await register(coordinator, meeting_id, "Rita Region", "PARTICIPANT_ROLE_REGION_STAFF", REGION_STAFF)

    present = await coordinator.post(f"/api/v1/meetings/{meeting_id}/physical-presence", json={
        "participant_id": staff["participant_id"], "physically_present": True, "note": "Sal 4, avdelning 12"})
    assert present.status_code == 200 and present.json()["participant"]["physically_present"], present.text
    listed = (await coordinator.get(f"/api/v1/meetings/{meeting_id}/participants")).json()["participants"]
    assert next(p for p in listed if p["participant_id"] == staff["participant_id"])["physically_present"]

    assessed = await coordinator.post(f"/api/v1/meetings/{meeting_id}/confidentiality-assessment",
                                      json={"care_provider": "Region Jönköpings län", "note": "Samtycke finns"})
    assert assessed.status_code == 200, assessed.text
    meeting = (await coordinator.get(f"/api/v1/meetings/{meeting_id}")).json()["meeting"]
    [assessment] = meeting["confidentiality_assessments"]
    assert assessment["assessed_by_hsa_id"] == COORDINATOR and assessment["care_provider"] == "Region Jönköpings län"
    assert assessment["note"] == "Samtycke finns" and assessment["assessed_at"]
    # A participant sees the meeting, not the assessments' notes.
    seen_by_patient = (await patient.get(f"/api/v1/meetings/{meeting_id}")).json()["meeting"]
    assert seen_by_patient.get("confidentiality_assessments", []) == []

    delegated = await coordinator.post(f"/api/v1/meetings/{meeting_id}/delegates", json={"hsa_id": REGION_STAFF})
    assert delegated.status_code == 200, delegated.text
    assert REGION_STAFF in delegated.json()["meeting"]["delegated_coordinator_hsa_ids"]
    # The delegate now leads: starts the meeting and ties the phone caller to the patient.
    live = await start(rita, meeting_id)
    connected = (await coordinator.get(f"/api/v1/meetings/{meeting_id}/connected")).json()
    assert [p["full_name"] for p in connected["with_patient"]] == ["Rita Region"]
    await phone_caller(system, live)
    patient_id = next(p["participant_id"] for p in listed if p["role"] == "PARTICIPANT_ROLE_PATIENT")
    identified = await rita.post(f"/api/v1/meetings/{meeting_id}/identifications",
                                 json={"connection_id": "phone-1", "participant_id": patient_id})
    assert identified.status_code == 200, identified.text
    reconciliation = (await coordinator.get(f"/api/v1/meetings/{meeting_id}/reconciliation")).json()
    assert reconciliation.get("connected_not_identified", []) == []
    assert patient_id in [p["participant_id"] for p in reconciliation["registered_and_connected"]]


async def test_another_coordinator_and_a_participant_cannot_do_the_coordinators_tasks(gateway):
    """Olle (a coordinator of his own meetings) and the patient (registered in this one) try every
    new route on Vera's meeting: each is refused with problem details, and nothing changed."""
    _, system, new_browser = gateway
    vera, olle, patient = await logged_in(new_browser, COORDINATOR, OTHER_COORDINATOR, PATIENT)
    await book_video_meeting(olle)  # Olle has a meeting (and phone tasks) of his own
    booking = await book_video_meeting(vera)
    meeting_id, booking_id = booking["meeting_id"], booking["booking_id"]
    staff = await register(vera, meeting_id, "Mona Kommun", "PARTICIPANT_ROLE_MUNICIPALITY_STAFF", MUNICIPALITY_STAFF)
    live = await start(vera, meeting_id)
    await phone_caller(system, live)
    vera_task = next(t for t in (await vera.get("/api/v1/phone-tasks")).json()["tasks"]
                     if t["booking_id"] == booking_id)
    before = {
        "booking": (await vera.get(f"/api/v1/bookings/{booking_id}")).json()["booking"],
        "participants": (await vera.get(f"/api/v1/meetings/{meeting_id}/participants")).json(),
        "reconciliation": (await vera.get(f"/api/v1/meetings/{meeting_id}/reconciliation")).json(),
        "meeting": (await vera.get(f"/api/v1/meetings/{meeting_id}")).json()["meeting"],
    }
    attempts = [
        (f"/api/v1/bookings/{booking_id}/reschedule", {"start": "2031-01-01T09:00:00Z"}),
        (f"/api/v1/bookings/{booking_id}/invitations", {"parties": [PHONE_PARTY]}),
        (f"/api/v1/phone-tasks/{vera_task['task_id']}/done", None),
        (f"/api/v1/meetings/{meeting_id}/physical-presence",
         {"participant_id": staff["participant_id"], "physically_present": True}),
        (f"/api/v1/meetings/{meeting_id}/identifications",
         {"connection_id": "phone-1", "participant_id": staff["participant_id"]}),
        (f"/api/v1/meetings/{meeting_id}/delegates", {"hsa_id": OTHER_COORDINATOR}),
        (f"/api/v1/meetings/{meeting_id}/participants/{staff['participant_id']}",
         {"full_name": "Ändrad Av Angripare", "role": "PARTICIPANT_ROLE_MUNICIPALITY_STAFF"}),
    ]
    for who, browser in (("other coordinator", olle), ("patient", patient)):
        for path, body in attempts:
            response = await browser.post(path, json=body)
            assert response.status_code in (403, 404), (who, path, response.status_code, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        # Olle's own list holds only his own phone tasks; the patient may not list any.
        listed = await browser.get("/api/v1/phone-tasks")
        if who == "patient":
            assert listed.status_code == 403
        else:
            assert booking_id not in [t["booking_id"] for t in listed.json()["tasks"]]
    # Olle asking for Vera's tasks by naming her is not possible: the route takes the caller's own id.
    assert (await olle.get("/api/v1/phone-tasks", params={"coordinator_hsa_id": COORDINATOR})).json().get(
        "tasks", []) == [t for t in (await olle.get("/api/v1/phone-tasks")).json().get("tasks", [])]
    after = {
        "booking": (await vera.get(f"/api/v1/bookings/{booking_id}")).json()["booking"],
        "participants": (await vera.get(f"/api/v1/meetings/{meeting_id}/participants")).json(),
        "reconciliation": (await vera.get(f"/api/v1/meetings/{meeting_id}/reconciliation")).json(),
        "meeting": (await vera.get(f"/api/v1/meetings/{meeting_id}")).json()["meeting"],
    }
    assert after == before
    assert not any(t["done"] for t in (await vera.get("/api/v1/phone-tasks")).json()["tasks"]
                   if t["task_id"] == vera_task["task_id"]) and vera_task in (
        await vera.get("/api/v1/phone-tasks")).json()["tasks"]


async def test_meetings_are_told_apart_by_the_patients_name_and_each_listing_is_access_logged(gateway, mongo):
    from pymongo import AsyncMongoClient

    _, system, new_browser = gateway
    coordinator, nils = new_browser(), new_browser()
    await coordinator.login(COORDINATOR)
    await nils.login(PEOPLE["next_of_kin"]["person_id"], "LOGIN_METHOD_E_SERVICES_1177")
    options = (await coordinator.get("/api/v1/booking-options")).json()
    start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)).replace(microsecond=0)
    booked = await coordinator.post("/api/v1/bookings", json={
        "idempotency_key": "patient-name-0001", "patient_personnummer": PATIENT, "patient_name": "Tolvan Tolvansson",
        "start": start.isoformat(), "duration_minutes": 60, "booking_unit_hsa_id": "SE2321000057-0001",
        "care_service": options["video_care_service"], "contact_type": options["video_contact_type"]})
    assert booked.status_code == 200, booked.text
    booking = booked.json()["booking"]
    assert booking["patient"]["display_name"] == "Tolvan Tolvansson"
    meeting_id = booking["meeting_id"]
    await register(coordinator, meeting_id, "Nils Närstående", "PARTICIPANT_ROLE_NEXT_OF_KIN",
                   PEOPLE["next_of_kin"]["person_id"])
    for browser in (coordinator, nils):
        listed = {m["meeting_id"]: m for m in (await browser.get("/api/v1/meetings")).json()["meetings"]}
        assert listed[meeting_id]["patient_name"] == "Tolvan Tolvansson"
    # The patient's name is patient data: each listing that carried it wrote an access record.
    client = AsyncMongoClient(mongo.uri, tz_aware=True)
    try:
        records = [d async for d in client[f"{system.prefix}_audit"]["access_records"].find(
            {"service": "roster", "action": "list_my_meetings", "resource": f"meeting/{meeting_id}"})]
    finally:
        await client.close()
    assert {r["actor"] for r in records} == {COORDINATOR, PEOPLE["next_of_kin"]["person_id"]}
    assert all(r["patient"] == PATIENT for r in records)
    too_long = await coordinator.post("/api/v1/bookings", json={
        "idempotency_key": "patient-name-0002", "patient_personnummer": PATIENT, "patient_name": "x" * 201,
        "start": start.isoformat(), "duration_minutes": 60, "booking_unit_hsa_id": "SE2321000057-0001",
        "care_service": options["video_care_service"], "contact_type": options["video_contact_type"]})
    assert too_long.status_code == 400


async def test_coordinator_corrects_a_registration_within_the_rules(gateway):
    _, _, new_browser = gateway
    [coordinator] = await logged_in(new_browser, COORDINATOR)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    mona = await register(coordinator, meeting_id, "Mona Komun", "PARTICIPANT_ROLE_REGION_STAFF", MUNICIPALITY_STAFF)
    url = f"/api/v1/meetings/{meeting_id}/participants/{mona['participant_id']}"
    fixed = await coordinator.post(url, json={"full_name": "Mona Kommun", "role": "PARTICIPANT_ROLE_MUNICIPALITY_STAFF",
                                              "organization": "Jönköpings kommun, hemtjänsten"})
    assert fixed.status_code == 200, fixed.text
    listed = (await coordinator.get(f"/api/v1/meetings/{meeting_id}/participants")).json()["participants"]
    again = next(p for p in listed if p["participant_id"] == mona["participant_id"])
    assert (again["full_name"], again["role"], again["organization"], again["person"]["id"]) == (
        "Mona Kommun", "PARTICIPANT_ROLE_MUNICIPALITY_STAFF", "Jönköpings kommun, hemtjänsten", MUNICIPALITY_STAFF)
    # A second patient, a staff member made a next of kin (HSA-id, not personnummer), the
    # coordinator's own role: refused with problem details, nothing changed.
    own = next(p for p in listed if p["role"] == "PARTICIPANT_ROLE_COORDINATOR")
    for target, body, status in (
            (mona, {"full_name": "Mona Kommun", "role": "PARTICIPANT_ROLE_PATIENT"}, {400, 409}),
            (mona, {"full_name": "Mona Kommun", "role": "PARTICIPANT_ROLE_NEXT_OF_KIN"}, {400}),
            (own, {"full_name": "Vera Samordnare", "role": "PARTICIPANT_ROLE_REGION_STAFF"}, {409}),
            (mona, {"full_name": "", "role": "PARTICIPANT_ROLE_MUNICIPALITY_STAFF"}, {400})):
        refused = await coordinator.post(f"/api/v1/meetings/{meeting_id}/participants/{target['participant_id']}",
                                         json=body)
        assert refused.status_code in status, (body, refused.status_code, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await coordinator.get(f"/api/v1/meetings/{meeting_id}/participants")).json()["participants"] == listed


async def test_a_rebook_request_from_a_fault_report_is_shown_with_who_asked_and_resolved(gateway):
    _, _, new_browser = gateway
    vera, mona, olle = await logged_in(new_browser, COORDINATOR, MUNICIPALITY_STAFF, OTHER_COORDINATOR)
    booking = await book_video_meeting(vera)
    await register(vera, booking["meeting_id"], "Mona Kommun", "PARTICIPANT_ROLE_MUNICIPALITY_STAFF", MUNICIPALITY_STAFF)
    filed = await mona.post("/api/v1/support/reports", json={
        "problem": "PROBLEM_KIND_CONNECTION", "description": "Når inte mötet trots bra nät",
        "meeting_id": booking["meeting_id"], "request_rebook": True})
    assert filed.status_code == 200, filed.text

    async def requests():
        return (await vera.get(f"/api/v1/bookings/{booking['booking_id']}")).json()["booking"].get("rebook_requests")

    [asked] = await poll(requests, 20, "the rebook request on the booking")
    assert asked["requested_by_name"] == "Mona Kommun" and "Når inte mötet" in asked["reason"]
    assert "resolved_at" not in asked
    url = f"/api/v1/bookings/{booking['booking_id']}/rebook-requests/{asked['request_id']}/resolution"
    # Another coordinator may not handle it.
    refused = await olle.post(url, json={"resolution": "Inte mitt möte"})
    assert refused.status_code in (403, 404), refused.text
    resolved = await vera.post(url, json={"resolution": "Flyttat till i morgon kl. 10"})
    assert resolved.status_code == 200, resolved.text
    [handled] = await requests()
    assert handled["resolution"] == "Flyttat till i morgon kl. 10" and handled["resolved_by_hsa_id"] == COORDINATOR
    assert handled["resolved_at"]
    # Handled once: a second answer changes nothing.
    await vera.post(url, json={"resolution": "Något annat"})
    assert (await requests()) == [handled]
