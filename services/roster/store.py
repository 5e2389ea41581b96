"""Meetings in MongoDB: one document per meeting, changed only by a versioned replace.

`mutate` (the runtime's VersionedStore) reads the meeting, applies a plain-Python change
(model.py), and replaces the document only if its version is still the one read (optimistic
concurrency); on a lost race it re-reads and re-applies, so every rule is checked against the
state the change lands on, across any number of roster replicas. A final state therefore can
never be overwritten by a change computed from an older state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.roster import model
from services.roster.model import Meeting
from services.runtime.errors import Aborted, NotFound, Unavailable
from services.runtime.fanout import FanOuts, Lagging, SourceEnded
from services.runtime.mongo import DURABLE
from services.runtime.paging import Key, Keyset
from services.runtime.store import VersionedStore

# A person's meetings in pages: by start, then id (the position a page token holds).
LISTING = Keyset(Key("start", dt.datetime), Key("_id", str))
MAX_CODE_TRIES = 20


class MeetingStore(VersionedStore[Meeting]):
    def __init__(self, client: AsyncMongoClient, database: str, watch_client: AsyncMongoClient | None = None) -> None:
        self.db = client[database]
        super().__init__(client, self.db.get_collection("meetings", write_concern=DURABLE),
                         from_doc=Meeting.from_doc, to_doc=Meeting.to_doc, missing=lambda _: NotFound("no such meeting"),
                         contended="the meeting is being changed by others right now; try again")
        self.meetings = self.collection
        self._feeds: FanOuts[Meeting] = FanOuts(name="svpl-roster-feed", errors=(Unavailable, NotFound))
        # Change streams hold a connection while they wait: on their own pool, they cannot take
        # the connections that writes need.
        self.watched = (watch_client or client)[database].get_collection("meetings")

    async def ensure_indexes(self) -> None:
        await self.meetings.create_index([("booking_id", ASCENDING)], unique=True)
        await self.meetings.create_index([("dial_in_code", ASCENDING)], unique=True)
        await self.meetings.create_index([("participants.person_id", ASCENDING)])
        await self.meetings.create_index([("coordinator_hsa_id", ASCENDING), ("start", ASCENDING)])
        await self.meetings.create_index([("state", ASCENDING), ("end", ASCENDING)])
        await self.meetings.create_index([("cleanup_pending", ASCENDING)])
        await self.meetings.create_index([("left_rooms.control", ASCENDING)], sparse=True)

    # ------------------------------------------------------------ create / read

    async def create(self, meeting: Meeting, new_code: Callable[[], str]) -> tuple[Meeting, bool]:
        """Insert with a fresh dial-in code; (meeting, created). Idempotent on booking_id:
        a second create for the same booking returns the first meeting, unchanged."""
        for _ in range(MAX_CODE_TRIES):
            existing = await self.by_booking(meeting.booking_id)
            if existing is not None:
                return existing, False
            meeting.dial_in_code = new_code()
            try:
                await self.insert(meeting)
                return meeting, True
            except DuplicateKeyError as exc:
                if "booking_id" in ((exc.details or {}).get("keyPattern") or {}):
                    continue  # a concurrent create for the same booking won: return it
                # The dial-in code collided with another meeting's: draw another.
        raise Aborted("could not allocate a unique dial-in code; try again")

    async def by_booking(self, booking_id: str) -> Meeting | None:
        return await self.find_one({"booking_id": booking_id})

    async def by_code(self, code: str) -> Meeting | None:
        return await self.find_one({"dial_in_code": code})

    async def for_person(self, person_id: str, start: dt.datetime | None, end: dt.datetime | None,
                         size: int, page_token: str) -> tuple[list[Meeting], str]:
        """Meetings the person coordinates, co-leads or is registered in (not removed), by start:
        one page (LISTING order) and the next page's token."""
        query: dict = {"$or": [
            {"coordinator_hsa_id": person_id},
            {"delegates": person_id},
            {"participants": {"$elemMatch": {"person_id": person_id, "removed": False}}},
        ]}
        if start:
            query["end"] = {"$gt": start}
        if end:
            query["start"] = {"$lt": end}
        docs, token = await LISTING.page(self.meetings, query, query=(person_id, start, end), size=size,
                                         token=page_token)
        return [Meeting.from_doc(doc) for doc in docs], token

    async def due_for_auto_close(self, cutoff: dt.datetime) -> list[str]:
        cursor = self.meetings.find(
            {"state": {"$in": [model.SCHEDULED, model.OPEN, model.LIVE]}, "end": {"$lte": cutoff}}, {"_id": 1}
        )
        return [doc["_id"] async for doc in cursor]

    async def cleanup_pending(self) -> list[str]:
        return [doc["_id"] async for doc in self.meetings.find({"cleanup_pending": True}, {"_id": 1})]

    async def with_left_rooms(self) -> list[str]:
        return [doc["_id"] async for doc in self.meetings.find({"left_rooms.control": {"$exists": True}}, {"_id": 1})]

    # ------------------------------------------------------------ watch

    async def watch(self, meeting_id: str) -> AsyncIterator[Meeting]:
        """The meeting now, then after every change (a MongoDB change stream on its document,
        so a change made by any roster replica is seen by every other). Every watcher of one
        meeting in this process shares one change stream (runtime.fanout): a meeting's watchers cost
        the database one cursor, whatever their number, on the watch client's own connection pool.
        A watcher that falls behind, or whose stream ends, gets Unavailable: it watches again."""
        fan = self._feeds.get(meeting_id, lambda: (self._changes(meeting_id), None))
        try:
            async with contextlib.aclosing(fan.items()) as meetings:
                async for meeting in meetings:
                    yield meeting
        except (SourceEnded, Lagging):
            raise Unavailable("the meeting's change stream ended or fell behind; watch again") from None

    async def _changes(self, meeting_id: str) -> AsyncIterator[Meeting]:
        pipeline = [{"$match": {"documentKey._id": meeting_id}}]
        try:
            async with await self.watched.watch(pipeline, full_document="updateLookup") as stream:
                # Read after the stream is open: no change between the two is missed.
                yield await self.get(meeting_id)
                async for change in stream:
                    doc = change.get("fullDocument")
                    if doc is None:
                        doc = await self.meetings.find_one({"_id": meeting_id})
                    if doc is not None:
                        yield Meeting.from_doc(doc)
        except PyMongoError:
            # The database went away mid-stream: the watcher reconnects (and gets a new snapshot).
            raise Unavailable("the meeting's change stream was interrupted; watch again") from None
