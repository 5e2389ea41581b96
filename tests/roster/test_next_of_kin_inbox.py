"""Registering a next of kin puts a message in their 1177 inbox, through roster's outbox:
written in the registration's transaction, delivered with retries, never lost, stored once."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from pymongo import AsyncMongoClient
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2

from devstack.samples import scheduled
from services.roster.inbox1177 import Inbox1177Adapter
from services.runtime.outbox import OutboxMessage, PermanentDeliveryError, RetryableDeliveryError
from tests.polling import poll
from tests.roster.conftest import World
from tests.roster.inbox_1177_receiver import Inbox1177Receiver

NEXT_OF_KIN = "198112289874"


@pytest.fixture
async def inbox():
    receiver = await Inbox1177Receiver().start()
    yield receiver
    await receiver.stop()


async def test_next_of_kin_gets_one_inbox_message_despite_failures(system_factory, person_token, service_token,
                                                                   inbox, mongo):
    system = await system_factory(["identity", "roster"], overrides={"roster": {
        "inbox_1177_url": inbox.url, "outbox_poll_seconds": 0.05, "outbox_retry_base_seconds": 0.1}})
    world = World(system, person_token, service_token)
    inbox.failures = ["503", "TECHNICAL_ERROR"]  # the first two attempts fail, transiently
    m = await world.meeting()
    nok = await world.register_next_of_kin(m.meeting_id)
    messages = await poll(lambda: _messages(inbox), 15, "the 1177 inbox message",
                          until=lambda msgs: len(msgs) == 1)
    (message_id, message), = messages.items()
    assert message_id == f"nok-{m.meeting_id}-{nok.participant_id}"
    assert message["subject_of_care"] == NEXT_OF_KIN and message["care_unit"] == "SE2321000057-7001"
    assert m.portal_url in message["body"] and m.dial_in_code in message["body"]
    assert inbox.requests == 3
    client = AsyncMongoClient(mongo.uri)
    try:
        doc = await client[f"{system.prefix}_roster"]["outbox"].find_one({"_id": message_id})
    finally:
        await client.close()
    assert doc["state"] == "delivered" and doc["attempts"] == 3


async def test_staff_registration_sends_nothing(system_factory, person_token, service_token, inbox):
    system = await system_factory(["identity", "roster"], overrides={"roster": {
        "inbox_1177_url": inbox.url, "outbox_poll_seconds": 0.05, "outbox_retry_base_seconds": 0.1}})
    world = World(system, person_token, service_token)
    m = await world.meeting()
    await world.register(m.meeting_id, "Rita Region", roster_pb2.PARTICIPANT_ROLE_REGION_STAFF,
                         common_pb2.ID_KIND_HSA_ID, "SE2321000057-2001")
    await world.register_next_of_kin(m.meeting_id)
    await poll(lambda: _messages(inbox), 10, "the next of kin's message", until=lambda msgs: len(msgs) == 1)
    assert [x["subject_of_care"] for x in inbox.messages.values()] == [NEXT_OF_KIN]


@pytest.mark.parametrize("failure, error", [("503", RetryableDeliveryError), ("TECHNICAL_ERROR", RetryableDeliveryError),
                                            ("VALIDATION_ERROR", PermanentDeliveryError),
                                            ("401", PermanentDeliveryError)])
async def test_adapter_tells_transient_from_permanent_failures(inbox, failure, error):
    adapter = Inbox1177Adapter(inbox.url)
    message = OutboxMessage("m-1", "inbox_1177", {"personnummer": NEXT_OF_KIN, "subject": "s", "body": "b"}, 1,
                            dt.datetime.now(dt.timezone.utc))
    try:
        inbox.failures = [failure]
        with pytest.raises(error):
            await adapter.deliver(message)
        await adapter.deliver(message)
        await adapter.deliver(message)  # a redelivery: the receiver keeps it once
        assert list(inbox.messages) == ["m-1"]
    finally:
        await adapter.close()


async def test_unreachable_inbox_is_retryable():
    adapter = Inbox1177Adapter(Inbox1177Receiver().url, timeout=1)
    try:
        with pytest.raises(RetryableDeliveryError):
            await adapter.deliver(OutboxMessage("m-2", "inbox_1177", {"personnummer": NEXT_OF_KIN, "subject": "s",
                                                                      "body": "b"}, 1, dt.datetime.now(dt.timezone.utc)))
    finally:
        await adapter.close()


async def _messages(inbox):
    return dict(inbox.messages)


async def test_next_of_kin_hear_of_a_new_time_and_of_a_cancellation(system_factory, person_token, service_token,
                                                                    inbox):
    system = await system_factory(["identity", "roster"], overrides={"roster": {
        "inbox_1177_url": inbox.url, "outbox_poll_seconds": 0.05, "outbox_retry_base_seconds": 0.1}})
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
