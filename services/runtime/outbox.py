"""The transactional outbox every service uses to send messages that must never be lost.

Why: a service that changes its data and then sends a message can crash in between
(message lost) or send and then fail to commit (message about a change that never
happened). Here the message is written as a document in the service's own database
*in the same MongoDB transaction* as the business change, so both exist or neither.
A background :class:`Dispatcher` then delivers it.

Shape of the parts:

- :class:`Outbox` writes messages (:meth:`Outbox.add` inside the caller's transaction,
  :func:`in_transaction` runs a callback in one) and reads their delivery state.
- :class:`ChannelAdapter` is what a channel implements: ``async deliver(message)``.
  It returns on success, raises :class:`RetryableDeliveryError` for a transient
  failure (timeouts, 5xx, unreachable) and :class:`PermanentDeliveryError` when a
  retry can't help (the receiver refuses the message). Any other exception counts as
  retryable.
- :class:`Dispatcher` (an asyncio task; the service's ``Component.start`` starts it, and
  its ``stop`` is registered in the service's ``Resources``) claims due messages with a *lease* (owner + expiry), delivers
  them, and records the outcome: ``delivered``, or back to ``pending`` with an
  exponential backoff with jitter, or ``failed`` (permanent error or attempts used up).
  A dispatcher that dies while holding a lease loses nothing: when the lease
  expires any dispatcher claims the message again. A delivery still running at 90 % of
  its lease is abandoned and counted as a retryable failure, so two dispatchers never
  deliver one message at the same time because of a slow receiver.
  Outcomes are counted in ``svpl_outbox_deliveries_total{outbox, channel, outcome}``.
- A failed message is *parked*: it stays, with its last error, and is never retried. A channel
  may name a *fallback* (``Dispatcher(fallbacks=...)``): for a permanent failure it gives the
  message that does the job another way (for example a phone task for a person), added as a new
  outbox message in the same transaction that parks the failed one, so it is never lost either.

Delivery is therefore at-least-once (a dispatcher killed after the receiver accepted
but before "delivered" was recorded will deliver again). Every message carries a
unique ``message_id`` that adapters pass to the receiver, and receivers deduplicate
by it, so the *outcome* is exactly-once.

Document fields (collection ``outbox`` by default)::

    _id            message id (str; unique; client-chosen or a UUID4)
    channel        adapter name, e.g. "secure_messaging"
    payload        dict, channel-specific
    state          pending | delivered | failed
    available_at   when the message may next be claimed (due time, or lease expiry)
    lease_owner    dispatcher holding the lease, or None
    attempts       claims so far (a killed attempt counts)
    last_error     text of the last failure ("" if none)
    trace          the W3C traceparent/tracestate it was written under (tracing on), continued on delivery
    created_at / last_attempt_at / delivered_at / failed_at

Hand-written because no well-kept Python library implements a MongoDB outbox with
leases; it is small and uses only plain pymongo.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter, Gauge
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.runtime import tracing
from services.runtime.mongo import DURABLE

log = logging.getLogger("svpl.outbox")

COLLECTION = "outbox"
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

T = TypeVar("T")

DELIVERIES = Counter(
    "svpl_outbox_deliveries_total",
    "Outbox delivery attempts by outbox, channel and outcome (delivered, retry, failed).",
    ["outbox", "channel", "outcome"],
)

UNDELIVERABLE = Gauge(
    "svpl_outbox_undeliverable_messages",
    "Pending outbox messages of a channel whose destination is not configured in this service (switched "
    "off): they wait until it is. By outbox and channel; every replica reports the same count.",
    ["outbox", "channel"],
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class DeliveryError(Exception):
    """A delivery failed; the message text is recorded as the message's last_error."""


class RetryableDeliveryError(DeliveryError):
    """Transient: the dispatcher retries after a backoff."""


class PermanentDeliveryError(DeliveryError):
    """A retry can't help: the message is marked failed."""


@dataclass(frozen=True)
class OutboxMessage:
    """What an adapter gets: the message id (pass it to the receiver for dedupe) and payload."""

    message_id: str
    channel: str
    payload: Mapping[str, Any]
    attempt: int
    created_at: dt.datetime

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> OutboxMessage:
        return cls(doc["_id"], doc["channel"], doc.get("payload") or {}, doc.get("attempts", 0), doc["created_at"])


# A channel's fallback: (channel, payload) of the message to send instead of one that failed for good
# (given the message and the error), or None for nothing.
Fallback = Callable[[OutboxMessage, str], "tuple[str, Mapping[str, Any]] | None"]


class ChannelAdapter(Protocol):
    async def deliver(self, message: OutboxMessage) -> None:
        """Hand the message to the channel; raise RetryableDeliveryError / PermanentDeliveryError."""


async def in_transaction(client: AsyncMongoClient[dict[str, Any]],
                         callback: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
    """Run `callback(session)` in one durable MongoDB transaction (retried on transient errors).

    The callback may run more than once, so it must only do database work with `session`.
    """
    async with client.start_session() as session:
        return await session.with_transaction(callback, write_concern=DURABLE)


class Outbox:
    """Writes messages in the caller's transaction and reads their delivery state."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], collection: str = COLLECTION) -> None:
        self.collection = db.get_collection(collection, write_concern=DURABLE)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("state", ASCENDING), ("available_at", ASCENDING)])

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    async def add(
        self,
        session: AsyncClientSession | None,
        channel: str,
        payload: Mapping[str, Any],
        *,
        message_id: str | None = None,
        not_before: dt.datetime | None = None,
    ) -> str:
        """Insert one pending message (pass the session of the business change's transaction).

        Returns the message id. A message id that already exists raises DuplicateKeyError,
        which aborts the caller's transaction (nothing half-written)."""
        now = _now()
        new_id = message_id or self.new_id()
        doc = {
            "_id": new_id,
            "channel": channel,
            "payload": dict(payload),
            "state": PENDING,
            "available_at": not_before or now,
            "lease_owner": None,
            "attempts": 0,
            "last_error": "",
            "created_at": now,
            "last_attempt_at": None,
            "delivered_at": None,
            "failed_at": None,
        }
        headers = tracing.carrier()
        if headers:
            doc[tracing.OUTBOX_FIELD] = headers
        await self.collection.insert_one(doc, session=session)
        return new_id

    async def get(self, message_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": message_id})

    async def get_many(self, message_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = [m for m in message_ids if m]
        if not ids:
            return {}
        return {doc["_id"]: doc async for doc in self.collection.find({"_id": {"$in": ids}})}

    async def mark_delivered(self, message_id: str, session: AsyncClientSession | None = None) -> bool:
        """Record a delivery done outside the dispatcher (e.g. inline on the request path,
        in the same transaction as its effect)."""
        now = _now()
        result = await self.collection.update_one(
            {"_id": message_id, "state": PENDING},
            {"$set": {"state": DELIVERED, "delivered_at": now, "lease_owner": None, "last_error": ""}},
            session=session,
        )
        return result.modified_count == 1


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": the n-th retry waits between half and all of
    min(cap, base * 2**(n-1)) seconds, so retries of many messages spread out."""

    base: float = 1.0
    cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * (2.0 ** max(0, attempt - 1)))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


class Dispatcher:
    """Claims due messages under a lease, delivers them through their channel's adapter.

    `lease_seconds` must exceed the longest delivery; a dispatcher that dies (or is
    cancelled) mid-delivery leaves its leased messages to be claimed again when the lease
    expires. `max_attempts` (None = forever) turns a message `failed` after that many claims.
    """

    def __init__(
        self,
        outbox: Outbox,
        adapters: Mapping[str, ChannelAdapter],
        *,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        poll_seconds: float = 0.5,
        concurrency: int = 8,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        name: str = "outbox",
        fallbacks: Mapping[str, Fallback] | None = None,
        unconfigured: Iterable[str] = (),
        count_seconds: float = 30.0,
    ) -> None:
        self.outbox = outbox
        self.adapters = dict(adapters)
        self.owner = owner or f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.name = name
        self.fallbacks = dict(fallbacks or {})
        # Channels this service writes to but has no destination for: their waiting messages are
        # counted every `count_seconds` (svpl_outbox_undeliverable_messages, and an alert on it).
        self.unconfigured = list(unconfigured)
        self.count_seconds = count_seconds
        self._counted_at = -float("inf")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"svpl-{self.name}-dispatcher")

    async def stop(self) -> None:
        """Stop now: in-flight deliveries are cancelled; their leases expire and are retried."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def notify(self) -> None:
        """A message was just committed: look now instead of at the next poll."""
        self._wake.set()

    async def count_unconfigured(self) -> dict[str, int]:
        """Count the pending messages of each unconfigured channel, into the gauge."""
        counts = {}
        for channel in self.unconfigured:
            counts[channel] = await self.outbox.collection.count_documents({"state": PENDING, "channel": channel})
            UNDELIVERABLE.labels(self.name, channel).set(counts[channel])
        return counts

    async def _run(self) -> None:
        while True:
            try:
                if self.unconfigured and time.monotonic() - self._counted_at >= self.count_seconds:
                    self._counted_at = time.monotonic()
                    await self.count_unconfigured()
                handled = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("%s dispatcher: pass failed; retrying", self.name, exc_info=True)
                handled = 0
            if handled:
                continue
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    # ------------------------------------------------------------------ one pass

    async def claim(self) -> dict[str, Any] | None:
        """Atomically take one due message: pending and available (never claimed, backoff
        elapsed, or a lease that expired)."""
        now = _now()
        return await self.outbox.collection.find_one_and_update(
            {"state": PENDING, "available_at": {"$lte": now}, "channel": {"$in": list(self.adapters)}},
            {
                "$set": {"lease_owner": self.owner, "available_at": now + self.lease, "last_attempt_at": now},
                "$inc": {"attempts": 1},
            },
            sort=[("available_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )

    async def run_once(self) -> int:
        """Claim and deliver up to `concurrency` due messages; returns how many were handled."""
        claimed = []
        for _ in range(self.concurrency):
            doc = await self.claim()
            if doc is None:
                break
            claimed.append(doc)
        if claimed:
            await asyncio.gather(*(self._deliver(doc) for doc in claimed))
        return len(claimed)

    async def _deliver(self, doc: dict[str, Any]) -> None:
        message = OutboxMessage.from_doc(doc)
        adapter = self.adapters[message.channel]
        try:
            # A delivery never outlives its lease (else another dispatcher would deliver it too).
            async with asyncio.timeout(self.lease.total_seconds() * 0.9):
                with tracing.continued(f"outbox deliver {message.channel}", doc.get(tracing.OUTBOX_FIELD),
                                       **{"messaging.system": "svpl-outbox",
                                          "messaging.destination.name": message.channel,
                                          "messaging.message.id": message.message_id}):
                    await adapter.deliver(message)
        except PermanentDeliveryError as exc:
            await self._failed(message, str(exc) or exc.__class__.__name__)
        except asyncio.CancelledError:
            raise  # killed mid-delivery: the lease expires and someone retries
        except Exception as exc:  # noqa: BLE001 - retryable (RetryableDeliveryError or unexpected)
            error = str(exc) or exc.__class__.__name__
            if isinstance(exc, TimeoutError):
                error = f"no answer within the lease ({self.lease.total_seconds() * 0.9:.0f}s)"
            if self.max_attempts is not None and message.attempt >= self.max_attempts:
                await self._failed(message, f"gave up after {message.attempt} attempts: {error}")
            else:
                await self._retry(message, error)
        else:
            await self._delivered(message)

    async def _delivered(self, message: OutboxMessage) -> None:
        DELIVERIES.labels(self.name, message.channel, "delivered").inc()
        # Recorded even if our lease expired meanwhile: the message did reach the receiver.
        await self.outbox.collection.update_one(
            {"_id": message.message_id, "state": PENDING},
            {"$set": {"state": DELIVERED, "delivered_at": _now(), "lease_owner": None, "last_error": ""}},
        )

    async def _retry(self, message: OutboxMessage, error: str) -> None:
        DELIVERIES.labels(self.name, message.channel, "retry").inc()
        delay = self.backoff.delay(message.attempt)
        log.info("%s: message %s attempt %d failed, retry in %.1fs: %s",
                 self.name, message.message_id, message.attempt, delay, error[:200])
        await self.outbox.collection.update_one(
            {"_id": message.message_id, "state": PENDING, "lease_owner": self.owner},
            {"$set": {"available_at": _now() + dt.timedelta(seconds=delay), "lease_owner": None,
                      "last_error": error[:1000]}},
        )

    async def _failed(self, message: OutboxMessage, error: str) -> None:
        DELIVERIES.labels(self.name, message.channel, "failed").inc()
        log.warning("%s: message %s failed permanently: %s", self.name, message.message_id, error[:200])
        fallback = self.fallbacks.get(message.channel)
        instead = fallback(message, error) if fallback else None

        async def park(session: AsyncClientSession | None) -> None:
            result = await self.outbox.collection.update_one(
                {"_id": message.message_id, "state": PENDING},
                {"$set": {"state": FAILED, "failed_at": _now(), "lease_owner": None, "last_error": error[:1000]}},
                session=session,
            )
            if instead is not None and result.modified_count == 1:
                await self.outbox.add(session, instead[0], instead[1], message_id=f"{message.message_id}-fallback")

        if instead is None:
            await park(None)
            return
        await in_transaction(self.outbox.collection.database.client, park)
        self.notify()
