"""Media's own database: the ids of closed rooms (a closed room never opens again, across restarts)
and the ids of join tokens already used (a join token admits one connection, once)."""

from __future__ import annotations

import datetime as dt

from pymongo.errors import DuplicateKeyError

from services.runtime.mongo import DURABLE


class ClosedRooms:
    def __init__(self, db) -> None:
        self._col = db.get_collection("closed_rooms", write_concern=DURABLE)
        self._known: set[str] = set()

    async def is_closed(self, meeting_id: str) -> bool:
        if meeting_id in self._known:
            return True
        if await self._col.find_one({"_id": meeting_id}, {"_id": 1}) is not None:
            self._known.add(meeting_id)
            return True
        return False

    async def mark_closed(self, meeting_id: str) -> None:
        """Durable (j:true) before CloseRoom answers."""
        await self._col.update_one(
            {"_id": meeting_id}, {"$setOnInsert": {"closed_at": dt.datetime.now(dt.timezone.utc)}}, upsert=True
        )
        self._known.add(meeting_id)


class UsedJoinTokens:
    """Join tokens are single-use: the token id is recorded (unique `_id`, durable) when it first
    admits a connection, and a replay of the same token, on this instance or after a restart, is
    refused. A record is kept until its token expires (TTL index on `expires_at`); after that the
    token's own expiry refuses it."""

    def __init__(self, db) -> None:
        self._col = db.get_collection("used_join_tokens", write_concern=DURABLE)

    async def ensure_indexes(self) -> None:
        await self._col.create_index("expires_at", expireAfterSeconds=0)

    async def claim(self, token_id: str, meeting_id: str, participant_id: str, expires_at: dt.datetime) -> bool:
        """Record the first use; False when the token was used before (the insert is the one gate)."""
        try:
            await self._col.insert_one({"_id": token_id, "meeting_id": meeting_id, "participant_id": participant_id,
                                        "used_at": dt.datetime.now(dt.timezone.utc), "expires_at": expires_at})
        except DuplicateKeyError:
            return False
        return True

    async def release(self, token_id: str) -> None:
        """The negotiation the token was claimed for failed before any connection existed: usable again."""
        await self._col.delete_one({"_id": token_id})
