"""The shared transactional outbox (services/runtime/outbox.py) on the real database."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from services.runtime import mongo as runtime_mongo
from services.runtime.outbox import (
    DELIVERED,
    FAILED,
    PENDING,
    Backoff,
    Dispatcher,
    Outbox,
    OutboxMessage,
    PermanentDeliveryError,
    RetryableDeliveryError,
    in_transaction,
)
from tests.polling import poll


@pytest.fixture
async def db(mongo):
    client = runtime_mongo.connect(mongo.uri)
    name = "t_outbox_" + uuid.uuid4().hex[:8]
    yield client, client[name]
    await client.drop_database(name)
    await client.close()


class Receiver:
    """A receiver that dedupes by message id; can be told to fail or hang."""

    def __init__(self):
        self.accepted: dict[str, dict] = {}
        self.calls = 0
        self.fail_next = 0
        self.hang = False
        self.entered = asyncio.Event()

    async def deliver(self, message: OutboxMessage) -> None:
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise RetryableDeliveryError("receiver busy (503)")
        self.accepted.setdefault(message.message_id, dict(message.payload))
        if self.hang:
            self.entered.set()
            await asyncio.Event().wait()  # accepted, but the answer never comes back


async def test_message_exists_only_if_the_business_change_commits(db):
    client, database = db
    outbox = Outbox(database)

    async def ok(session):
        await database.things.insert_one({"_id": "a"}, session=session)
        return await outbox.add(session, "test", {"n": 1})

    message_id = await in_transaction(client, ok)
    assert (await outbox.get(message_id))["state"] == PENDING

    async def fails(session):
        await outbox.add(session, "test", {"n": 2}, message_id="doomed")
        await database.things.insert_one({"_id": "a"}, session=session)  # duplicate key: aborts

    with pytest.raises(Exception):
        await in_transaction(client, fails)
    assert await outbox.get("doomed") is None


async def test_retryable_failures_back_off_record_attempts_then_deliver(db):
    _, database = db
    outbox, receiver = Outbox(database), Receiver()
    receiver.fail_next = 2
    message_id = await outbox.add(None, "test", {"n": 1})
    dispatcher = Dispatcher(outbox, {"test": receiver}, backoff=Backoff(base=0.05, cap=0.1), poll_seconds=0.02)
    assert await dispatcher.run_once() == 1
    doc = await outbox.get(message_id)
    assert doc["state"] == PENDING and doc["attempts"] == 1 and "503" in doc["last_error"]
    assert doc["available_at"] > doc["last_attempt_at"]  # backed off, not immediately due
    assert await dispatcher.run_once() == 0  # not due yet
    dispatcher.start()
    try:
        done = await poll(lambda: _state(outbox, message_id, DELIVERED), 10, "the message delivered", 0.02)
    finally:
        await dispatcher.stop()
    assert done["attempts"] == 3 and done["last_error"] == ""
    assert list(receiver.accepted) == [message_id]


async def test_permanent_error_marks_failed_without_retry(db):
    _, database = db
    outbox = Outbox(database)

    class Refuses:
        async def deliver(self, message):
            raise PermanentDeliveryError("recipient unknown (404)")

    message_id = await outbox.add(None, "test", {})
    await Dispatcher(outbox, {"test": Refuses()}).run_once()
    doc = await outbox.get(message_id)
    assert doc["state"] == FAILED and "404" in doc["last_error"] and doc["attempts"] == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    backoff = Backoff(base=1, cap=8, rng=random.Random(1))
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
        delays = {backoff.delay(attempt) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1


async def test_killed_dispatcher_mid_delivery_loses_nothing_and_receiver_dedupes(db):
    _, database = db
    outbox, receiver = Outbox(database), Receiver()
    ids = [await outbox.add(None, "test", {"n": n}) for n in range(5)]
    receiver.hang = True
    first = Dispatcher(outbox, {"test": receiver}, lease_seconds=0.5, poll_seconds=0.02, owner="first")
    first.start()
    await asyncio.wait_for(receiver.entered.wait(), 10)
    await first.stop()  # killed mid-delivery: receiver has messages, none marked delivered
    assert all(d["state"] == PENDING and d["lease_owner"] == "first" for d in (await outbox.get_many(ids)).values())
    accepted_before = set(receiver.accepted)
    assert accepted_before

    receiver.hang = False
    second = Dispatcher(outbox, {"test": receiver}, lease_seconds=5, poll_seconds=0.02, owner="second")
    second.start()
    try:
        await poll(lambda: _all_delivered(outbox, ids), 10, "every message delivered by the second dispatcher", 0.02)
    finally:
        await second.stop()
    assert set(receiver.accepted) == set(ids)  # every message once at the receiver
    assert receiver.calls > len(ids)  # ... although some were delivered twice
    docs = await outbox.get_many(ids)
    assert all(d["attempts"] == 2 for i, d in docs.items() if i in accepted_before)


async def _state(outbox, message_id, state):
    doc = await outbox.get(message_id)
    return doc if doc and doc["state"] == state else None


async def _all_delivered(outbox, ids):
    docs = await outbox.get_many(ids)
    return len(docs) == len(ids) and all(d["state"] == DELIVERED for d in docs.values())


async def test_a_delivery_that_outlives_its_lease_is_abandoned_and_retried(db):
    _, database = db
    outbox, receiver = Outbox(database), Receiver()
    receiver.hang = True
    message_id = await outbox.add(None, "test", {})
    await Dispatcher(outbox, {"test": receiver}, lease_seconds=0.3, backoff=Backoff(base=0.01, cap=0.01)).run_once()
    doc = await outbox.get(message_id)
    assert doc["state"] == PENDING and "no answer within the lease" in doc["last_error"] and doc["lease_owner"] is None


async def test_messages_for_a_destination_switched_off_are_counted_while_they_wait(db):
    """A channel this service writes but has no destination for (switched off): its messages wait,
    untouched, and svpl_outbox_undeliverable_messages says how many (the chart's alert fires on it)."""
    from prometheus_client import REGISTRY

    _, database = db
    outbox = Outbox(database)
    name = "t-" + uuid.uuid4().hex[:6]
    delivered = Receiver()
    dispatcher = Dispatcher(outbox, {"test": delivered}, name=name, poll_seconds=0.05, count_seconds=0.05,
                            unconfigured=["secure_messaging"])

    def waiting() -> float | None:
        return REGISTRY.get_sample_value("svpl_outbox_undeliverable_messages",
                                         {"outbox": name, "channel": "secure_messaging"})

    for n in range(2):
        await outbox.add(None, "secure_messaging", {"n": n})
    sent = await outbox.add(None, "test", {"n": 9})
    dispatcher.start()
    try:
        await poll(lambda: waiting() == 2 and sent in delivered.accepted, 10, what="two waiting, the other delivered")
        assert [d["state"] for d in await database["outbox"].find({"channel": "secure_messaging"}).to_list()] == [
            PENDING, PENDING]
        await database["outbox"].update_many({"channel": "secure_messaging"}, {"$set": {"state": DELIVERED}})
        await poll(lambda: waiting() == 0, 10, what="the count back to 0 once none waits")
    finally:
        await dispatcher.stop()
