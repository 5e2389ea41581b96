"""Steps of a meeting through the gateway's REST API, shared by the HTTP tests."""

from __future__ import annotations

import datetime as dt
import uuid

from tests.gateway.conftest import Browser

UNIT = "SE2321000057-0001"


async def book_video_meeting(coordinator: Browser, patient: str = "191212121212") -> dict:
    start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).replace(microsecond=0)
    options = (await coordinator.get("/api/v1/booking-options")).json()
    response = await coordinator.post("/api/v1/bookings", json={
        "idempotency_key": uuid.uuid4().hex, "patient_personnummer": patient, "start": start.isoformat(),
        "duration_minutes": 60, "booking_unit_hsa_id": UNIT,
        "care_service": options["video_care_service"], "contact_type": options["video_contact_type"],
        "parties": [{"kind": "PARTY_KIND_MUNICIPALITY_UNIT", "name": "Hemtjänsten Väster",
                     "channel": "CHANNEL_PHONE", "address": "036-10 10 10"}],
    })
    assert response.status_code == 200, response.text
    booking = response.json()["booking"]
    assert booking["meeting_id"], booking
    return booking


async def register(coordinator: Browser, meeting_id: str, name: str, role: str, person_id: str) -> dict:
    kind = "ID_KIND_HSA_ID" if person_id.startswith("SE") else "ID_KIND_PERSONNUMMER"
    response = await coordinator.post(f"/api/v1/meetings/{meeting_id}/participants", json={
        "full_name": name, "role": role, "person": {"id_kind": kind, "id": person_id}})
    assert response.status_code == 200, response.text
    return response.json()["participant"]


async def start(coordinator: Browser, meeting_id: str) -> dict:
    for step in ("open", "start"):
        response = await coordinator.post(f"/api/v1/meetings/{meeting_id}/{step}")
        assert response.status_code == 200, response.text
    return response.json()["meeting"]


async def live_meeting_with_staff(coordinator: Browser, staff: Browser) -> str:
    """The coordinator and Rita Region (region staff) logged in, a video meeting booked with Rita
    registered, started: its id."""
    from tests.gateway.conftest import COORDINATOR, REGION_STAFF

    await coordinator.login(COORDINATOR)
    await staff.login(REGION_STAFF)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    await register(coordinator, meeting_id, "Rita Region", "PARTICIPANT_ROLE_REGION_STAFF", REGION_STAFF)
    await start(coordinator, meeting_id)
    return meeting_id
