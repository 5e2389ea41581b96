"""Media's own database: the ids of closed rooms (a closed room never opens again, across restarts)."""

from __future__ import annotations

import datetime as dt

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
