"""The HTTP secure-messaging adapter against a receiver that follows its protocol."""

from __future__ import annotations

import pytest

from services.booking.messaging import HttpSecureMessaging
from services.runtime.outbox import PermanentDeliveryError, RetryableDeliveryError
from tests.booking.cosmic_receiver import CosmicReceiver


@pytest.fixture
async def secured():
    receiver = await CosmicReceiver(token="s3cret").start()
    client = HttpSecureMessaging(receiver.url, token="s3cret", timeout=2)
    yield receiver, client
    await client.close()
    await receiver.stop()


async def test_accepted_once_even_when_sent_twice(secured):
    receiver, client = secured
    await client.send("m-1", "cosmic:hemtjanst", "Kallelse", "Tid: i morgon")
    await client.send("m-1", "cosmic:hemtjanst", "Kallelse", "Tid: i morgon")
    assert list(receiver.accepted) == ["m-1"] and receiver.posts["m-1"] == 2


async def test_busy_receiver_is_retryable_and_unknown_recipient_is_permanent(secured):
    receiver, client = secured
    receiver.fail_next = 1
    with pytest.raises(RetryableDeliveryError, match="503"):
        await client.send("m-2", "cosmic:a", "s", "b")
    receiver.unknown_recipients.add("cosmic:nobody")
    with pytest.raises(PermanentDeliveryError, match="404"):
        await client.send("m-3", "cosmic:nobody", "s", "b")
    assert not receiver.accepted


async def test_unreachable_receiver_is_retryable_and_a_bad_token_is_permanent(secured):
    receiver, _ = secured
    wrong = HttpSecureMessaging(receiver.url, token="wrong", timeout=2)
    try:
        with pytest.raises(PermanentDeliveryError, match="401"):
            await wrong.send("m-4", "cosmic:a", "s", "b")
    finally:
        await wrong.close()
    gone = HttpSecureMessaging("http://127.0.0.1:9", timeout=1)
    try:
        with pytest.raises(RetryableDeliveryError, match="unreachable"):
            await gone.send("m-5", "cosmic:a", "s", "b")
    finally:
        await gone.close()
