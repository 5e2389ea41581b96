"""Registering a next of kin puts a message in their 1177 inbox, through roster's outbox:
written in the registration's transaction, delivered with retries, never lost, stored once."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from pymongo import AsyncMongoClient
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2

from devstack.embedded_db import free_port
from devstack.harness import as_token
from devstack.samples import scheduled
from services.roster.inbox1177 import Inbox1177Adapter
from services.runtime.outbox import OutboxMessage, PermanentDeliveryError, RetryableDeliveryError
from tests.polling import poll
from tests.roster.conftest import World
from tests.roster.inbox_1177_receiver import Inbox1177Receiver, write_pki

NEXT_OF_KIN = "198112289874"


@pytest.fixture(scope="module")
def ntjp(tmp_path_factory):
    """The platform's TLS material and svpl's function certificate (files, as from a Secret)."""
    return write_pki(tmp_path_factory.mktemp("ntjp"))


@pytest.fixture
async def inbox(ntjp):
    receiver = Inbox1177Receiver(ntjp["server_cert"], ntjp["server_key"], ntjp["client_ca"],
                                 authorized={"SE2321000057-SVPL"}).start()
    yield receiver
    receiver.stop()


def roster_settings(inbox, ntjp, **more):
    return {"inbox_1177_url": inbox.url, "inbox_1177_client_cert_file": ntjp["svpl_cert"],
            "inbox_1177_client_key_file": ntjp["svpl_key"], "inbox_1177_ca_file": ntjp["server_ca"],
            "outbox_poll_seconds": 0.05, "outbox_retry_base_seconds": 0.1, **more}


def adapter_for(inbox, ntjp, **kw) -> Inbox1177Adapter:
    options = {"client_cert": ntjp["svpl_cert"], "client_key": ntjp["svpl_key"], "ca_file": ntjp["server_ca"],
               **kw}
    return Inbox1177Adapter(inbox.url, **options)


def message(message_id="m-1", **payload) -> OutboxMessage:
    body = {"personnummer": NEXT_OF_KIN, "subject": "s", "body": "b", "care_unit": "SE2321000057-7001", **payload}
    return OutboxMessage(message_id, "inbox_1177", body, 1, dt.datetime.now(dt.timezone.utc))


async def test_next_of_kin_gets_one_inbox_message_despite_failures(system_factory, person_token, service_token,
                                                                   inbox, ntjp, mongo):
    system = await system_factory(["identity", "roster"], overrides={"roster": roster_settings(inbox, ntjp)})
    world = World(system, person_token, service_token)
    inbox.failures = ["503", "TECHNICAL_ERROR", "VP009"]  # the first three attempts fail, transiently
    m = await world.meeting()
    nok = await world.register_next_of_kin(m.meeting_id)
    messages = await poll(lambda: _messages(inbox), 15, "the 1177 inbox message",
                          until=lambda msgs: len(msgs) == 1)
    (message_id, delivered), = messages.items()
    assert message_id == f"nok-{m.meeting_id}-{nok.participant_id}"
    assert delivered["subject_of_care"] == NEXT_OF_KIN and delivered["care_unit"] == "SE2321000057-7001"
    assert delivered["caller"] == "SE2321000057-SVPL"  # the platform knew svpl by its certificate
    assert m.portal_url in delivered["body"] and m.dial_in_code in delivered["body"]
    assert inbox.requests == 4
    client = AsyncMongoClient(mongo.uri)
    try:
        doc = await client[f"{system.prefix}_roster"]["outbox"].find_one({"_id": message_id})
    finally:
        await client.close()
    assert doc["state"] == "delivered" and doc["attempts"] == 4


async def test_staff_registration_sends_nothing(system_factory, person_token, service_token, inbox, ntjp):
    system = await system_factory(["identity", "roster"], overrides={"roster": roster_settings(inbox, ntjp)})
    world = World(system, person_token, service_token)
    m = await world.meeting()
    await world.register(m.meeting_id, "Rita Region", roster_pb2.PARTICIPANT_ROLE_REGION_STAFF,
                         common_pb2.ID_KIND_HSA_ID, "SE2321000057-2001")
    await world.register_next_of_kin(m.meeting_id)
    await poll(lambda: _messages(inbox), 10, "the next of kin's message", until=lambda msgs: len(msgs) == 1)
    assert [x["subject_of_care"] for x in inbox.messages.values()] == [NEXT_OF_KIN]


@pytest.mark.parametrize("failure, error", [("503", RetryableDeliveryError), ("TECHNICAL_ERROR", RetryableDeliveryError),
                                            ("VP009", RetryableDeliveryError),
                                            ("VALIDATION_ERROR", PermanentDeliveryError),
                                            ("401", PermanentDeliveryError), ("VP007", PermanentDeliveryError),
                                            ("VP004", PermanentDeliveryError)])
async def test_adapter_tells_transient_from_permanent_failures(inbox, ntjp, failure, error):
    adapter = adapter_for(inbox, ntjp)
    try:
        inbox.failures = [failure]
        with pytest.raises(error):
            await adapter.deliver(message())
        await adapter.deliver(message())
        await adapter.deliver(message())  # a redelivery: the receiver keeps it once
        assert list(inbox.messages) == ["m-1"]
    finally:
        await adapter.close()


@pytest.mark.parametrize("how, fault", [
    ({"client_cert": "", "client_key": ""}, "VP002"),  # no client certificate
    ("other", "VP007"),  # a certificate the platform has not authorised for the contract
    ({"logical_address": "SE0000000000-NONE"}, "VP004"),  # no route to that logical address
])
async def test_the_platforms_configuration_faults_are_permanent(inbox, ntjp, how, fault):
    kw = ({"client_cert": ntjp["other_cert"], "client_key": ntjp["other_key"]} if how == "other" else how)
    adapter = adapter_for(inbox, ntjp, **kw)
    try:
        with pytest.raises(PermanentDeliveryError, match=fault):
            await adapter.deliver(message())
        assert inbox.messages == {}
    finally:
        await adapter.close()


async def test_a_message_without_a_sending_care_unit_is_never_sent(inbox, ntjp):
    adapter = adapter_for(inbox, ntjp)
    try:
        with pytest.raises(PermanentDeliveryError, match="no sending care unit"):
            await adapter.deliver(message(care_unit=""))
        assert inbox.requests == 0
    finally:
        await adapter.close()


async def test_the_platform_must_present_the_configured_ca(inbox, ntjp):
    adapter = adapter_for(inbox, ntjp, ca_file=ntjp["client_ca"])  # not the platform's CA
    try:
        with pytest.raises(RetryableDeliveryError, match="unreachable"):
            await adapter.deliver(message())
        assert inbox.requests == 0
    finally:
        await adapter.close()


async def test_unreachable_inbox_is_retryable(ntjp):
    adapter = Inbox1177Adapter(f"https://127.0.0.1:{free_port()}/vp", timeout=1, ca_file=ntjp["server_ca"])
    try:
        with pytest.raises(RetryableDeliveryError):
            await adapter.deliver(message("m-2"))
    finally:
        await adapter.close()


async def _messages(inbox):
    return dict(inbox.messages)


async def test_next_of_kin_hear_of_a_new_time_and_of_a_cancellation(system_factory, person_token, service_token,
                                                                    inbox, ntjp):
    system = await system_factory(["identity", "roster"], overrides={"roster": roster_settings(inbox, ntjp)})
    world = World(system, person_token, service_token)
    m = await world.meeting()
    await world.register_next_of_kin(m.meeting_id)
    new_time = scheduled(start_in=dt.timedelta(days=3))
    await world.roster.RescheduleMeeting(roster_pb2.RescheduleMeetingRequest(meeting_id=m.meeting_id,
                                                                             scheduled=new_time),
                                         metadata=world.booking)
    await world.roster.CancelMeeting(roster_pb2.CancelMeetingRequest(meeting_id=m.meeting_id), metadata=world.booking)
    await world.roster.CancelMeeting(roster_pb2.CancelMeetingRequest(meeting_id=m.meeting_id), metadata=world.booking)
    messages = await poll(lambda: _messages(inbox), 15, "three inbox messages", until=lambda msgs: len(msgs) >= 3)
    subjects = sorted(x["subject"] for x in messages.values())
    assert subjects == ["Inbjudan till SIP-möte", "Ny tid för SIP-möte", "SIP-mötet är inställt"]
    local = new_time.start.ToDatetime(tzinfo=dt.timezone.utc).astimezone(ZoneInfo("Europe/Stockholm"))
    rescheduled = next(x for x in messages.values() if x["subject"] == "Ny tid för SIP-möte")
    assert local.strftime("%Y-%m-%d kl. %H:%M") in rescheduled["body"]
    assert all(x["subject_of_care"] == NEXT_OF_KIN for x in messages.values())


async def test_a_refused_inbox_message_is_parked_and_the_coordinator_phones_instead(system_factory, inbox, ntjp,
                                                                                    person_token, mongo):
    """The platform refuses svpl for good (VP007): the message is parked after one attempt (never
    retried), the coordinator sees that the next of kin was not notified, and has a phone task."""
    from svpl.booking.v1 import booking_pb2

    from tests.booking.conftest import UNIT, create_request

    system = await system_factory(["identity", "roster", "booking"],
                                  overrides={"roster": roster_settings(inbox, ntjp)})
    coordinator = as_token(person_token("coordinator", unit=UNIT))
    inbox.failures = ["VP007"]
    booked = (await system.stub("booking").CreateBooking(create_request(), metadata=coordinator)).booking
    roster = system.stub("roster")
    nok = (await roster.RegisterParticipant(roster_pb2.RegisterParticipantRequest(
        meeting_id=booked.meeting_id, full_name="Nils Närstående", role=roster_pb2.PARTICIPANT_ROLE_NEXT_OF_KIN,
        person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_PERSONNUMMER, id=NEXT_OF_KIN)),
        metadata=coordinator)).participant

    async def tasks():
        return (await system.stub("booking").ListPhoneTasks(booking_pb2.ListPhoneTasksRequest(),
                                                            metadata=coordinator)).tasks

    task, = await poll(tasks, 15, "the coordinator's phone task", until=lambda t: len(t) == 1)
    assert (task.booking_id, task.party.name, task.party.kind) == (
        booked.booking_id, "Nils Närstående", booking_pb2.PARTY_KIND_NEXT_OF_KIN)
    assert "1177-inkorg" in task.instructions and booked.dial_in_code in task.instructions
    assert NEXT_OF_KIN not in task.instructions  # no personnummer in the task
    listed = (await roster.ListParticipants(roster_pb2.ListParticipantsRequest(meeting_id=booked.meeting_id),
                                            metadata=coordinator)).participants
    assert {p.participant_id: p.inbox_notice for p in listed}[nok.participant_id] == \
        roster_pb2.INBOX_NOTICE_NOT_DELIVERED
    client = AsyncMongoClient(mongo.uri)
    try:
        parked = await client[f"{system.prefix}_roster"]["outbox"].find_one(
            {"_id": f"nok-{booked.meeting_id}-{nok.participant_id}"})
    finally:
        await client.close()
    assert (parked["state"], parked["attempts"], inbox.requests) == ("failed", 1, 1)
    assert "VP007" in parked["last_error"] and inbox.messages == {}
