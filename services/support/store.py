"""Tickets in MongoDB (collection `tickets`): one versioned document per ticket, on the runtime's
VersionedStore (every change is a versioned replace, retried on a lost race), written with j:true.

A ticket is inserted whole before anything else happens for a report (so a restart mid-request
loses nothing); `idem` is unique, so a retried report with the same key finds the same ticket.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services.runtime.errors import NotFound, Unavailable
from services.runtime.mongo import DURABLE
from services.runtime.paging import Key, Keyset
from services.runtime.store import VersionedStore
from services.support.model import OPEN_STATES, Ticket, TicketState

# The desk's listing, newest first (the position a page token holds: created_at, then id).
LISTING = Keyset(Key("created_at", dt.datetime, DESCENDING), Key("_id", str, DESCENDING))
# The same, oldest first (the desk's "oldest first" sorting).
LISTING_OLDEST = Keyset(Key("created_at", dt.datetime, ASCENDING), Key("_id", str, ASCENDING))


class TicketStore(VersionedStore[Ticket]):
    def __init__(self, db: AsyncDatabase[dict[str, Any]], watch_db: AsyncDatabase[dict[str, Any]] | None = None) -> None:
        super().__init__(db.client, db.get_collection("tickets", write_concern=DURABLE),
                         from_doc=Ticket.from_doc, to_doc=Ticket.to_doc,
                         missing=lambda ticket_id: NotFound(f"ticket {ticket_id} not found"),
                         contended="the ticket is being changed by someone else; try again")
        # The change feed's cursor, on a pool of its own (Tickets shares it among the open desk pages).
        self.watched = (watch_db if watch_db is not None else db).get_collection("tickets")

    async def ensure_indexes(self) -> None:
        tickets = self.collection
        await tickets.create_index([("idem", ASCENDING)], unique=True)
        await tickets.create_index([("queue_id", ASCENDING), ("state", ASCENDING), ("created_at", DESCENDING)])
        await tickets.create_index([("created_at", DESCENDING), ("_id", DESCENDING)])
        # A municipality desk's listing: its organisation's tickets, newest first.
        await tickets.create_index([("org_key", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)])
        await tickets.create_index([("followup", ASCENDING)])
        # The short number read out on the phone: unique (sparse: tickets filed before it have none).
        await tickets.create_index([("number", ASCENDING)], unique=True, sparse=True)
        # A reporter's own tickets.
        await tickets.create_index([("reporter.id", ASCENDING), ("created_at", DESCENDING)])
        await tickets.create_index([("filed_by", ASCENDING), ("created_at", DESCENDING)])

    async def by_idem(self, idem: str) -> Ticket | None:
        return await self.find_one({"idem": idem})

    async def page(self, selector: dict[str, Any], *, query: object, size: int, token: str,
                   oldest_first: bool = False) -> tuple[list[Ticket], str]:
        """One page of the listing (newest first, or oldest first) and the next page's token."""
        keyset = LISTING_OLDEST if oldest_first else LISTING
        docs, next_token = await keyset.page(self.collection, selector, query=(query, oldest_first), size=size,
                                             token=token)
        return [Ticket.from_doc(d) for d in docs], next_token

    async def changes(self) -> AsyncIterator[Ticket | None]:
        """None once the stream is open (nothing changed after that is missed), then every ticket as it
        is after each insert or change (a MongoDB change stream, so a change made by any support replica
        reaches every watcher)."""
        pipeline = [{"$match": {"operationType": {"$in": ["insert", "update", "replace"]}}}]
        try:
            async with await self.watched.watch(pipeline, full_document="updateLookup") as stream:
                yield None
                async for change in stream:
                    doc = change.get("fullDocument")
                    if doc is not None:
                        yield Ticket.from_doc(doc)
        except PyMongoError:
            raise Unavailable("the tickets' change stream was interrupted; watch again") from None

    async def follow_ups_older_than(self, cutoff: dt.datetime) -> list[str]:
        """Ids of tickets with a follow-up still to do, untouched since `cutoff`."""
        cursor = self.collection.find({"followup": True, "updated_at": {"$lt": cutoff}}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def oldest_waiting(self) -> dict[str, dt.datetime]:
        """The filing time of the oldest ticket per queue that is neither resolved nor closed."""
        waiting = [s for s in OPEN_STATES if s != TicketState.RESOLVED]
        pipeline: list[dict[str, Any]] = [{"$match": {"state": {"$in": waiting}}},
                                          {"$group": {"_id": "$queue_id", "oldest": {"$min": "$created_at"}}}]
        return {row["_id"]: row["oldest"] async for row in await self.collection.aggregate(pipeline)}

    async def open_counts(self) -> dict[tuple[str, str], int]:
        """Open tickets by (queue, state)."""
        pipeline: list[dict[str, Any]] = [{"$match": {"state": {"$in": list(OPEN_STATES)}}},
                                          {"$group": {"_id": {"q": "$queue_id", "s": "$state"}, "n": {"$sum": 1}}}]
        return {(row["_id"]["q"], row["_id"]["s"]): row["n"] async for row in await self.collection.aggregate(pipeline)}
