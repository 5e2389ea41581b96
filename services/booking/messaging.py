"""Secure care messaging (the region's: Cosmic Link) and the outbox channel that uses it.

`SecureMessaging` is the adapter interface; `HttpSecureMessaging` is its one HTTP
implementation (httpx). Cosmic Link's integration API is not public, so the wire
protocol is ours and small, documented here for whoever writes the bridge:

    POST {base_url}/messages
    Authorization: Bearer {token}           (when configured)
    Idempotency-Key: {message_id}
    {"message_id": str, "recipient": str, "subject": str, "body": str}

    2xx        accepted (a receiver that has seen message_id answers 2xx again: dedupe)
    409        already received (treated as delivered)
    408, 429,
    5xx, I/O   transient: retried with backoff
    other 4xx  permanent: the message is marked failed (e.g. unknown recipient)

tests/booking/cosmic_receiver.py is a receiver that follows this protocol.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from services.runtime.outbox import OutboxMessage, PermanentDeliveryError, RetryableDeliveryError

CHANNEL = "secure_messaging"


class SecureMessaging(Protocol):
    async def send(self, message_id: str, recipient: str, subject: str, body: str) -> None:
        """Deliver one message; raise RetryableDeliveryError / PermanentDeliveryError."""


class HttpSecureMessaging:
    def __init__(self, base_url: str, token: str = "", timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                                       transport=transport)

    async def send(self, message_id: str, recipient: str, subject: str, body: str) -> None:
        try:
            response = await self._http.post(
                "/messages",
                json={"message_id": message_id, "recipient": recipient, "subject": subject, "body": body},
                headers={"Idempotency-Key": message_id},
            )
        except httpx.HTTPError as exc:
            raise RetryableDeliveryError(f"secure messaging unreachable: {exc.__class__.__name__}") from None
        status = response.status_code
        if 200 <= status < 300 or status == 409:
            return
        if status in (408, 429) or status >= 500:
            raise RetryableDeliveryError(f"secure messaging answered {status}")
        raise PermanentDeliveryError(f"secure messaging refused the message: {status} {response.text[:200]}")

    async def close(self) -> None:
        await self._http.aclose()


class SecureMessagingChannel:
    """The outbox adapter for invitations and notices: payload → one secure message."""

    def __init__(self, client: SecureMessaging) -> None:
        self._client = client

    async def deliver(self, message: OutboxMessage) -> None:
        p = message.payload
        await self._client.send(message.message_id, p["recipient"], p["subject"], p["body"])
