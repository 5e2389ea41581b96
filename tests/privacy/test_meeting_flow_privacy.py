"""A whole meeting through the gateway with every log record captured raw (before the masking
filter): no personnummer reaches a log line in any form, the access log holds a record for every
read of patient data in the flow, and the patient's access-log extract lists them."""

from __future__ import annotations

import logging

from svpl.identity.v1 import identity_pb2

from devstack.harness import as_token
from tests.gateway.conftest import COORDINATOR, MUNICIPALITY_STAFF, NEXT_OF_KIN, PATIENT, REGION_STAFF, gateway  # noqa: F401
from tests.gateway.flow import book_video_meeting, register, start
from tests.privacy.detector import personnummer_in


class RawCapture(logging.Handler):
    """Keeps each record's message and extras as the code produced them, before any masking."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k.startswith("svpl_"))
        self.lines.append(f"{record.name} {record.getMessage()} {extras}")


async def test_a_whole_meeting_logs_no_personnummer_and_every_patient_read_is_access_logged(gateway, person_token):  # noqa: F811
    app, system, new_browser = gateway
    capture = RawCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        coordinator, staff, kin, stranger = new_browser(), new_browser(), new_browser(), new_browser()
        await coordinator.login(COORDINATOR)
        booking = await book_video_meeting(coordinator, PATIENT)
        meeting_id = booking["meeting_id"]
        assert (await coordinator.get(f"/api/v1/bookings/{booking['booking_id']}")).status_code == 200
        await register(coordinator, meeting_id, "Rita Region", "PARTICIPANT_ROLE_REGION_STAFF", REGION_STAFF)
        await register(coordinator, meeting_id, "Nils Närstående", "PARTICIPANT_ROLE_NEXT_OF_KIN", NEXT_OF_KIN)
        assert (await coordinator.get(f"/api/v1/meetings/{meeting_id}/participants")).status_code == 200
        await start(coordinator, meeting_id)
        await staff.login(REGION_STAFF)
        assert (await staff.post(f"/api/v1/meetings/{meeting_id}/admission")).status_code == 200
        await kin.login(NEXT_OF_KIN, "LOGIN_METHOD_E_SERVICES_1177")
        assert (await kin.post(f"/api/v1/meetings/{meeting_id}/admission")).status_code == 200
        assert (await kin.get(f"/api/v1/meetings/{meeting_id}/connected")).status_code == 200
        assert (await kin.get(f"/api/v1/meetings/{meeting_id}")).status_code == 200
        assert (await kin.get(f"/api/v1/meetings/{meeting_id}/agenda")).status_code == 200
        assert (await coordinator.get(f"/api/v1/meetings/{meeting_id}/reconciliation")).status_code == 200
        report = await kin.post("/api/v1/support/reports", json={
            "problem": "PROBLEM_KIND_CONNECTION",
            "description": "Bilden fryser", "meeting_id": meeting_id})
        assert report.status_code == 200, report.text
        assert report.json()["ticket"]["evidence"]["meeting_state"] == "MEETING_STATE_LIVE"
        # Someone logged in but not in the meeting learns nothing about it and asks no rebooking.
        await stranger.login(MUNICIPALITY_STAFF)
        probe = await stranger.post("/api/v1/support/reports", json={
            "problem": "PROBLEM_KIND_CONNECTION", "description": "Bilden fryser", "meeting_id": meeting_id,
            "request_rebook": True})
        assert probe.status_code == 200, probe.text
        evidence = probe.json()["ticket"].get("evidence", {})
        assert not any(evidence.get(k) for k in ("meeting_state", "registered_count", "connected_count",
                                                 "quality")), evidence
        assert not probe.json()["ticket"].get("rebook_requested"), probe.text
        assert (await coordinator.post(f"/api/v1/meetings/{meeting_id}/end")).status_code == 200
    finally:
        root.removeHandler(capture)
        root.setLevel(level)

    assert len(capture.lines) > 10, "the flow logged (almost) nothing: the capture is not working"
    leaks = [(line, personnummer_in(line)) for line in capture.lines if personnummer_in(line)]
    assert not leaks, leaks[:5]

    officer = as_token(person_token(person_id="SE2321000057-5001", id_kind="hsa_id", name="Lena Logg",
                                    method="siths", roles=["staff", "region_staff", "access_log"]))
    extract = await system.stub("identity").ListAccessRecords(
        identity_pb2.ListAccessRecordsRequest(patient_personnummer=PATIENT, page={"page_size": 500}),
        metadata=officer)
    actions = [(r.service, r.action, r.actor) for r in extract.records]
    assert all(r.patient == PATIENT for r in extract.records)
    for expected in [("booking", "booking.create", COORDINATOR), ("booking", "booking.read", COORDINATOR),
                     ("roster", "register_participant", COORDINATOR), ("roster", "list_participants", COORDINATOR),
                     ("roster", "read_connected_list", NEXT_OF_KIN),
                     ("roster", "read_meeting", NEXT_OF_KIN), ("roster", "read_agenda", NEXT_OF_KIN),
                     # the fault report's evidence: read by support for the reporter, named in the log
                     ("roster", "read_report_evidence", NEXT_OF_KIN),
                     ("roster", "read_reconciliation", COORDINATOR)]:
        assert expected in actions, (expected, actions)
    assert not [a for a in actions if a[2] in ("service:support", MUNICIPALITY_STAFF)], actions
    assert sum(1 for a in actions if a[1] == "register_participant") >= 2
