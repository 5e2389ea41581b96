"""Sample requests for driving the system from tests and benchmarks: a meeting as booking asks
roster to create it, for the demo coordinator and Skatteverket's published test patient."""

from __future__ import annotations

import datetime as dt

from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2

from services.runtime.timestamps import to_timestamp

COORDINATOR_HSA = "SE2321000057-1001"
PATIENT_PNR = "191212121212"


def scheduled(start_in: dt.timedelta = dt.timedelta(hours=1), length: dt.timedelta = dt.timedelta(hours=1)):
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + start_in
    return common_pb2.TimeRange(start=to_timestamp(start), end=to_timestamp(start + length))


def create_request(booking_id: str, **kw) -> roster_pb2.CreateMeetingRequest:
    """roster.CreateMeeting as booking sends it (SIP, video); keywords override the defaults."""
    return roster_pb2.CreateMeetingRequest(
        booking_id=booking_id, scheduled=kw.pop("scheduled", None) or scheduled(),
        coordinator_hsa_id=kw.pop("coordinator_hsa_id", COORDINATOR_HSA), coordinator_name="Vera Samordnare",
        patient=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=kw.pop("patient", PATIENT_PNR),
                                     display_name="Tolvan Tolvansson"),
        care_unit_hsa_id="SE2321000057-7001", **kw)
