"""Tickets in MongoDB (collection `tickets`): one versioned document per ticket, on the runtime's
VersionedStore (every change is a versioned replace, retried on a lost race), written with j:true.

A ticket is inserted whole before anything else happens for a report (so a restart mid-request
loses nothing); `idem` is unique, so a retried report with the same key finds the same ticket.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.runtime.errors import NotFound
from services.runtime.mongo import DURABLE
from services.runtime.paging import Key, Keyset
from services.runtime.store import VersionedStore
from services.support.model import OPEN_STATES, Ticket

# The desk's listing, newest first (the position a page token holds: created_at, then id).
LISTING = Keyset(Key("created_at", dt.datetime, DESCENDING), Key("_id", str, DESCENDING))


class TicketStore(VersionedStore[Ticket]):
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        super().__init__(db.client, db.get_collection("tickets", write_concern=DURABLE),
                         from_doc=Ticket.from_doc, to_doc=Ticket.to_doc,
                         missing=lambda ticket_id: NotFound(f"ticket {ticket_id} not found"),
                         contended="the ticket is being changed by someone else; try again")

    async def ensure_indexes(self) -> None:
        tickets = self.collection
        await tickets.create_index([("idem", ASCENDING)], unique=True)
        await tickets.create_index([("queue_id", ASCENDING), ("state", ASCENDING), ("created_at", DESCENDING)])
        await tickets.create_index([("created_at", DESCENDING), ("_id", DESCENDING)])
        # A municipality desk's listing: its organisation's tickets, newest first.
        await tickets.create_index([("org_key", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)])
        await tickets.create_index([("followup", ASCENDING)])

    async def by_idem(self, idem: str) -> Ticket | None:
        return await self.find_one({"idem": idem})

    async def page(self, selector: dict[str, Any], *, query: object, size: int, token: str) -> tuple[list[Ticket], str]:
        """One page of the listing (newest first) and the next page's token."""
        docs, next_token = await LISTING.page(self.collection, selector, query=query, size=size, token=token)
        return [Ticket.from_doc(d) for d in docs], next_token

    async def follow_ups_older_than(self, cutoff: dt.datetime) -> list[str]:
        """Ids of tickets with a follow-up still to do, untouched since `cutoff`."""
        cursor = self.collection.find({"followup": True, "updated_at": {"$lt": cutoff}}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def open_counts(self) -> dict[tuple[str, str], int]:
        """Open tickets by (queue, state)."""
        pipeline: list[dict[str, Any]] = [{"$match": {"state": {"$in": list(OPEN_STATES)}}},
                                          {"$group": {"_id": {"q": "$queue_id", "s": "$state"}, "n": {"$sum": 1}}}]
        return {(row["_id"]["q"], row["_id"]["s"]): row["n"] async for row in await self.collection.aggregate(pipeline)}
