"""ListAccessRecords: a patient's extract from the audit database written by every
service through AccessLog; paged, filtered by period, itself access-logged."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import timestamp_pb2
from pymongo import AsyncMongoClient
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2 as pb

from devstack.harness import as_token
from services.runtime import auth
from services.runtime.access_log import AccessLog
from tests.identity.test_tokens_rpc import field_violation

PATIENT, OTHER = "191212121212", "198112289874"


@pytest.fixture
async def system(system_factory, mongo):
    system = await system_factory(["identity"])
    client = AsyncMongoClient(mongo.uri, tz_aware=True)
    roster = AccessLog(client, "roster", f"{system.prefix}_audit")
    for i in range(7):
        token = auth.current_caller.set(auth.Caller(kind="person", id="SE2321000057-1001"))
        await roster.record("roster.read_participants", PATIENT, care_unit="Vårdcentralen Centrum",
                            resource=f"meetings/m{i}", purpose="SIP meeting")
        auth.current_caller.reset(token)
    await roster.record("roster.read_participants", OTHER, actor="service:booking")
    system.audit = client[f"{system.prefix}_audit"]["access_records"]
    yield system
    await client.close()


def officer(person_token):
    return as_token(person_token(person_id="SE2321000057-5001", id_kind="hsa_id", name="Lotta Logg",
                                 method="siths", roles=["staff", "region_staff", "access_log"]))


async def test_extract_lists_only_that_patients_records_in_pages(system, person_token):
    stub, md = system.stub("identity"), officer(person_token)
    seen, token = [], ""
    while True:
        r = await stub.ListAccessRecords(pb.ListAccessRecordsRequest(
            patient_personnummer="19121212-1212", page=common_pb2.PageRequest(page_size=3, page_token=token)),
            metadata=md)
        seen += list(r.records)
        token = r.page.next_page_token
        if not token:
            break
    roster_records = [x for x in seen if x.service == "roster"]
    assert [x.resource for x in roster_records] == [f"meetings/m{i}" for i in range(7)]
    assert {(x.actor, x.action, x.patient, x.care_unit, x.purpose) for x in roster_records} == {
        ("SE2321000057-1001", "roster.read_participants", PATIENT, "Vårdcentralen Centrum", "SIP meeting")}
    assert all(x.patient == PATIENT for x in seen)


async def test_reading_the_extract_is_itself_recorded(system, person_token):
    await system.stub("identity").ListAccessRecords(pb.ListAccessRecordsRequest(patient_personnummer=OTHER),
                                                    metadata=officer(person_token))
    mine = [d async for d in system.audit.find({"patient": OTHER, "service": "identity"})]
    assert [(d["actor"], d["action"]) for d in mine] == [("SE2321000057-5001", "identity.list_access_records")]


async def test_period_filters_the_extract(system, person_token):
    docs = [d async for d in system.audit.find({"patient": PATIENT}).sort("at", 1)]
    start = timestamp_pb2.Timestamp()
    start.FromDatetime(docs[3]["at"])
    r = await system.stub("identity").ListAccessRecords(pb.ListAccessRecordsRequest(
        patient_personnummer=PATIENT, period=common_pb2.TimeRange(start=start)), metadata=officer(person_token))
    assert all(x.at.ToDatetime(dt.timezone.utc) >= docs[3]["at"] for x in r.records)
    assert 4 <= len(r.records) < 8


async def test_only_the_access_log_role_may_read_and_bad_input_is_refused(system, person_token):
    stub = system.stub("identity")
    for who in ("coordinator", "patient", "support_desk"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListAccessRecords(pb.ListAccessRecordsRequest(patient_personnummer=PATIENT),
                                         metadata=as_token(person_token(who)))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListAccessRecords(pb.ListAccessRecordsRequest(patient_personnummer="19121212-1213"),
                                     metadata=officer(person_token))
    assert field_violation(err.value) == ("patient_personnummer", "check digit should be 2")
    before = await system.audit.count_documents({})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListAccessRecords(pb.ListAccessRecordsRequest(
            patient_personnummer=PATIENT, page=common_pb2.PageRequest(page_token="garbage")),
            metadata=officer(person_token))
    assert field_violation(err.value)[0] == "page.page_token"
    assert await system.audit.count_documents({}) == before  # refused input changed nothing
