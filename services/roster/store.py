"""Meetings in MongoDB: one document per meeting, changed only by a versioned replace.

`mutate` reads the meeting, applies a plain-Python change (model.py), and replaces the
document only if its version is still the one read (optimistic concurrency); on a lost
race it re-reads and re-applies, so every rule is checked against the state the change
lands on, across any number of roster replicas. A final state therefore can never be
overwritten by a change computed from an older state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.roster import model
from services.roster.model import Meeting
from services.runtime.errors import Aborted, NotFound, Unavailable
from services.runtime.mongo import DURABLE
from services.runtime.outbox import in_transaction

T = TypeVar("T")
MAX_RACES = 50
MAX_CODE_TRIES = 20


class _Conflict(Exception):
    """Another writer changed the meeting between our read and our write."""


class _CountedLock(asyncio.Lock):
    users = 0


class MeetingStore:
    def __init__(self, client: AsyncMongoClient, database: str, watch_client: AsyncMongoClient | None = None) -> None:
        self._locks: dict[str, _CountedLock] = {}
        self._feeds: dict[str, _Feed] = {}
        self.client = client
        self.db = client[database]
        self.meetings = self.db.get_collection("meetings", write_concern=DURABLE)
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
                await self.meetings.insert_one(meeting.to_doc())
                return meeting, True
            except DuplicateKeyError as exc:
                if "booking_id" in ((exc.details or {}).get("keyPattern") or {}):
                    continue  # a concurrent create for the same booking won: return it
                # The dial-in code collided with another meeting's: draw another.
        raise Aborted("could not allocate a unique dial-in code; try again")

    async def get(self, meeting_id: str) -> Meeting:
        doc = await self.meetings.find_one({"_id": meeting_id}) if meeting_id else None
        if doc is None:
            raise NotFound("no such meeting")
        return Meeting.from_doc(doc)

    async def by_booking(self, booking_id: str) -> Meeting | None:
        doc = await self.meetings.find_one({"booking_id": booking_id})
        return Meeting.from_doc(doc) if doc else None

    async def by_code(self, code: str) -> Meeting | None:
        doc = await self.meetings.find_one({"dial_in_code": code})
        return Meeting.from_doc(doc) if doc else None

    async def for_person(self, person_id: str, start: dt.datetime | None, end: dt.datetime | None,
                         skip: int, limit: int) -> list[Meeting]:
        """Meetings the person coordinates, co-leads or is registered in (not removed), by start."""
        query: dict = {"$or": [
            {"coordinator_hsa_id": person_id},
            {"delegates": person_id},
            {"participants": {"$elemMatch": {"person_id": person_id, "removed": False}}},
        ]}
        if start:
            query["end"] = {"$gt": start}
        if end:
            query["start"] = {"$lt": end}
        cursor = self.meetings.find(query).sort([("start", ASCENDING), ("_id", ASCENDING)]).skip(skip).limit(limit)
        return [Meeting.from_doc(doc) async for doc in cursor]

    async def due_for_auto_close(self, cutoff: dt.datetime) -> list[str]:
        cursor = self.meetings.find(
            {"state": {"$in": [model.SCHEDULED, model.OPEN, model.LIVE]}, "end": {"$lte": cutoff}}, {"_id": 1}
        )
        return [doc["_id"] async for doc in cursor]

    async def cleanup_pending(self) -> list[str]:
        return [doc["_id"] async for doc in self.meetings.find({"cleanup_pending": True}, {"_id": 1})]

    async def with_left_rooms(self) -> list[str]:
        return [doc["_id"] async for doc in self.meetings.find({"left_rooms.control": {"$exists": True}}, {"_id": 1})]

    # ------------------------------------------------------------ change

    async def mutate(
        self,
        meeting_id: str,
        change: Callable[[Meeting], T],
        also: Callable[[object, Meeting, T], Awaitable[None]] | None = None,
    ) -> tuple[Meeting, T]:
        """Apply `change` to the current meeting and store it (if it changed anything).

        `also(session, meeting, result)` runs in the same transaction as the write (the
        outbox message of a registration): both are stored, or neither."""
        # Writers in this process take turns per meeting, so they do not race each other
        # (a lost race costs a re-read and a retry); across replicas the version decides.
        lock = self._locks.setdefault(meeting_id, _CountedLock())
        lock.users += 1
        try:
            async with lock:
                return await self._mutate(meeting_id, change, also)
        finally:
            lock.users -= 1
            if not lock.users:
                self._locks.pop(meeting_id, None)

    async def _mutate(self, meeting_id, change, also):
        for _ in range(MAX_RACES):
            meeting = await self.get(meeting_id)
            before = meeting.to_doc()
            result = change(meeting)  # raises a domain error: nothing is written
            after = meeting.to_doc()
            if after == before:
                return meeting, result
            version = meeting.version
            meeting.version = version + 1
            after["version"] = version + 1
            try:
                if also is None:
                    await self._replace(None, meeting_id, version, after)
                else:
                    async def work(session):
                        await self._replace(session, meeting_id, version, after)
                        await also(session, meeting, result)

                    await in_transaction(self.client, work)
            except _Conflict:
                continue
            return meeting, result
        raise Aborted("the meeting is being changed by others right now; try again")

    async def _replace(self, session, meeting_id: str, version: int, doc: dict) -> None:
        done = await self.meetings.replace_one({"_id": meeting_id, "version": version}, doc, session=session)
        if done.matched_count != 1:
            raise _Conflict()

    # ------------------------------------------------------------ watch

    async def watch(self, meeting_id: str) -> AsyncIterator[Meeting]:
        """The meeting now, then after every change (a MongoDB change stream on its document,
        so a change made by any roster replica is seen by every other). Every watcher of one
        meeting in this process shares one change stream (a _Feed): a meeting's watchers cost the
        database one cursor, whatever their number, on the watch client's own connection pool."""
        feed = self._feeds.get(meeting_id)
        if feed is None:
            feed = self._feeds[meeting_id] = _Feed(self, meeting_id)
        queue = feed.join()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            feed.leave(queue)

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


class _Feed:
    """One meeting's change stream, fanned out to this process's watchers of it. A watcher that
    joins late gets the latest state first (every item is the whole meeting); one that falls
    BACKLOG changes behind is ended (Unavailable: it watches again, with a new snapshot)."""

    BACKLOG = 256

    def __init__(self, store: MeetingStore, meeting_id: str) -> None:
        self._store = store
        self._meeting_id = meeting_id
        self._queues: set[asyncio.Queue] = set()
        self._latest: Meeting | None = None
        self._task = asyncio.create_task(self._pump(), name=f"svpl-roster-feed-{meeting_id[:16]}")

    async def _pump(self) -> None:
        end: Exception
        try:
            async for meeting in self._store._changes(self._meeting_id):
                self._latest = meeting
                for queue in list(self._queues):
                    self._put(queue, meeting)
            end = Unavailable("the meeting's change stream ended; watch again")
        except (Unavailable, NotFound) as exc:
            end = exc
        finally:
            if self._store._feeds.get(self._meeting_id) is self:
                del self._store._feeds[self._meeting_id]
        for queue in list(self._queues):
            self._put(queue, end)

    def _put(self, queue: asyncio.Queue, item) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            queue.get_nowait()
            queue.put_nowait(Unavailable("too far behind the meeting's changes; watch again"))
            self._queues.discard(queue)

    def join(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(self.BACKLOG)
        if self._latest is not None:
            queue.put_nowait(self._latest)
        self._queues.add(queue)
        return queue

    def leave(self, queue: asyncio.Queue) -> None:
        self._queues.discard(queue)
        if not self._queues and not self._task.done():
            self._task.cancel()
            if self._store._feeds.get(self._meeting_id) is self:
                del self._store._feeds[self._meeting_id]
