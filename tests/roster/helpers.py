"""Small helpers the roster tests share: times, requests, and reading a refusal's reason."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2

from services.runtime.timestamps import to_timestamp
from tests.harness import as_token

COORDINATOR_HSA = "SE2321000057-1001"
PATIENT_PNR = "191212121212"


def scheduled(start_in: dt.timedelta = dt.timedelta(hours=1), length: dt.timedelta = dt.timedelta(hours=1)):
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + start_in
    return common_pb2.TimeRange(start=to_timestamp(start), end=to_timestamp(start + length))


def create_request(booking_id: str, **kw) -> roster_pb2.CreateMeetingRequest:
    return roster_pb2.CreateMeetingRequest(
        booking_id=booking_id, scheduled=kw.pop("scheduled", None) or scheduled(),
        coordinator_hsa_id=kw.pop("coordinator_hsa_id", COORDINATOR_HSA), coordinator_name="Vera Samordnare",
        patient=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=kw.pop("patient", PATIENT_PNR),
                                     display_name="Tolvan Tolvansson"),
        care_unit_hsa_id="SE2321000057-7001", **kw)


def reason(exc: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason of a refusal ("" when there is none)."""
    status = rpc_status.from_call(exc)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def md(token: str):
    return as_token(token)


async def poll(predicate, fetch, what: str, timeout: float = 10.0):
    """Call `fetch` until `predicate(value)` holds; the value, or an AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        await asyncio.sleep(0.05)
