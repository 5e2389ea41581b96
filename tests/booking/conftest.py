"""Booking tests run against the real database and real identity + roster in-process,
with secure messaging delivered to tests/booking/cosmic_receiver.py over HTTP."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from google.protobuf import timestamp_pb2
from svpl.booking.v1 import booking_pb2 as pb

from devstack.harness import as_token
from tests.booking.cosmic_receiver import CosmicReceiver

SIP = "Samordnad individuell plan besök"
VIDEO_TEAM = "Distanskontakt video team"
UNIT = "SE2321000057-U100"
COORDINATOR = "SE2321000057-1001"
PATIENT = "191212121212"

FAST_OUTBOX = {
    "outbox_poll_seconds": 0.05,
    "outbox_lease_seconds": 1.0,
    "outbox_backoff_base_seconds": 0.05,
    "outbox_backoff_cap_seconds": 0.3,
    "meeting_retry_delay_seconds": 0.3,
}


@pytest.fixture
async def receiver():
    r = await CosmicReceiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def booking_system(system_factory, receiver):
    return await system_factory(["identity", "roster", "booking"],
                                overrides={"booking": {"cosmic_link_url": receiver.url, **FAST_OUTBOX}})


@pytest.fixture
def coordinator(person_token):
    return as_token(person_token("coordinator", unit=UNIT))


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


def in_days(days: float) -> dt.datetime:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).replace(microsecond=0)


def party(name: str, channel=pb.CHANNEL_SECURE_MESSAGING, kind=pb.PARTY_KIND_MUNICIPALITY_UNIT, address=None):
    return pb.Party(kind=kind, name=name, channel=channel,
                    address=address or f"cosmic:{name.lower().replace(' ', '-')}")


def create_request(key=None, care_service=SIP, contact_type=VIDEO_TEAM, parties=(), start=None, **fields):
    values = dict(
        idempotency_key=key or uuid.uuid4().hex, patient_personnummer=PATIENT, start=ts(start or in_days(3)),
        duration_minutes=60, booking_unit_hsa_id=UNIT, coordinator_hsa_id=COORDINATOR,
        care_service=care_service, contact_type=contact_type, parties=list(parties),
    )
    values.update(fields)
    return pb.CreateBookingRequest(**values)

