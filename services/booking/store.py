"""Booking's storage (MongoDB, every write j:true): bookings, invitations, phone tasks.

A booking is one versioned document changed only through `BookingStore.mutate` (the runtime's
VersionedStore: read, apply a pure change from model.py, replace if the version is unchanged,
retry on a lost race); what the change sends (invitations, notices, phone tasks, outbox messages)
is written in the same transaction. Documents written before bookings had a version count as
version 0. Invitations and phone tasks are changed field by field (`$set`), never replaced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient

from services.booking.model import Booking, Invitation, PhoneTask
from services.runtime.errors import NotFound
from services.runtime.mongo import DURABLE
from services.runtime.paging import Key, Keyset
from services.runtime.store import VersionedStore

# Listings in pages (the position a page token holds): bookings by start, phone tasks by creation; then id.
BOOKING_ORDER = Keyset(Key("start", dt.datetime), Key("_id", str))
TASK_ORDER = Keyset(Key("created_at", dt.datetime), Key("_id", str))


class BookingStore(VersionedStore[Booking]):
    def __init__(self, client: AsyncMongoClient, db) -> None:
        super().__init__(client, db.get_collection("bookings", write_concern=DURABLE),
                         from_doc=Booking.from_doc, to_doc=Booking.to_doc,
                         missing=lambda booking_id: NotFound(f"booking {booking_id} does not exist"),
                         contended="the booking is being changed by others right now; try again")
        self.invitations = db.get_collection("invitations", write_concern=DURABLE)
        self.phone_tasks = db.get_collection("phone_tasks", write_concern=DURABLE)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("booking_unit", ASCENDING), ("start", ASCENDING), ("_id", ASCENDING)])
        await self.collection.create_index([("coordinator", ASCENDING), ("start", ASCENDING), ("_id", ASCENDING)])
        await self.collection.create_index("meeting_id")
        await self.collection.create_index("dial_in_code")
        await self.invitations.create_index([("booking_id", ASCENDING), ("created_at", ASCENDING)])
        await self.phone_tasks.create_index([("coordinator", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)])

    # ------------------------------------------------------------ bookings

    async def by_meeting(self, meeting_id: str) -> Booking | None:
        return await self.find_one({"meeting_id": meeting_id})

    async def by_dial_in_code(self, code: str) -> Booking | None:
        return await self.find_one({"dial_in_code": code})

    async def page(self, selector: dict, *, query: object, size: int, token: str) -> tuple[list[Booking], str]:
        docs, next_token = await BOOKING_ORDER.page(self.collection, selector, query=query, size=size, token=token)
        return [Booking.from_doc(d) for d in docs], next_token

    # ------------------------------------------------------------ invitations

    async def add_invitations(self, invitations: list[Invitation], session=None) -> None:
        if invitations:
            await self.invitations.insert_many([i.to_doc() for i in invitations], session=session)

    async def invitation(self, invitation_id: str) -> Invitation | None:
        doc = await self.invitations.find_one({"_id": invitation_id})
        return Invitation.from_doc(doc) if doc else None

    async def invitations_of(self, booking_id: str) -> list[Invitation]:
        """A booking's invitations, oldest first."""
        cursor = self.invitations.find({"booking_id": booking_id}).sort("created_at", ASCENDING)
        return [Invitation.from_doc(d) async for d in cursor]

    async def invitations_by_id(self, ids: Iterable[str]) -> list[Invitation]:
        """These invitations, in the order given."""
        ids = list(ids)
        found = {d["_id"]: Invitation.from_doc(d) async for d in self.invitations.find({"_id": {"$in": ids}})}
        return [found[i] for i in ids if i in found]

    async def invitations_awaiting(self, booking_id: str, awaiting_meeting: bool, session) -> list[Invitation]:
        """A booking's invitations still waiting for its room (True) or already sent (False)."""
        cursor = self.invitations.find({"booking_id": booking_id, "awaiting_meeting": awaiting_meeting},
                                       session=session)
        return [Invitation.from_doc(d) async for d in cursor]

    async def invitation_sent(self, invitation_id: str, fields: dict[str, Any], session) -> None:
        """The notice went out (an outbox message or a phone task, named in `fields`)."""
        await self.invitations.update_one({"_id": invitation_id}, {"$set": {**fields, "awaiting_meeting": False}},
                                          session=session)

    async def invitation_confirmed(self, inv: Invitation) -> None:
        await self.invitations.update_one({"_id": inv.id}, {"$set": {
            "attendee_names": inv.attendee_names, "confirmed_at": inv.confirmed_at, "confirmed_by": inv.confirmed_by}})

    # ------------------------------------------------------------ phone tasks

    async def add_phone_task(self, task: PhoneTask, session) -> None:
        await self.phone_tasks.insert_one(task.to_doc(), session=session)

    async def phone_task(self, task_id: str) -> PhoneTask | None:
        doc = await self.phone_tasks.find_one({"_id": task_id})
        return PhoneTask.from_doc(doc) if doc else None

    async def phone_task_done(self, task_id: str, at: dt.datetime) -> None:
        await self.phone_tasks.update_one({"_id": task_id}, {"$set": {"done": True, "done_at": at}})

    async def phone_task_page(self, selector: dict, *, query: object, size: int,
                              token: str) -> tuple[list[PhoneTask], str]:
        docs, next_token = await TASK_ORDER.page(self.phone_tasks, selector, query=query, size=size, token=token)
        return [PhoneTask.from_doc(d) for d in docs], next_token
