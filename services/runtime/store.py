"""Documents changed only by a versioned replace (optimistic concurrency), for every service.

A service's aggregate (roster's meeting, booking's booking, support's ticket) is one document
with a `version` field, read into a plain-Python model (`from_doc`) and written back whole
(`to_doc`). `VersionedStore.mutate` reads it, applies a pure change (which may raise a domain
error: nothing is written), and replaces the document only if its version is still the one read;
on a lost race it re-reads and re-applies, so every rule is checked against the state the change
lands on, across any number of replicas. A change computed from an older state can therefore
never overwrite a newer one. `also(session, item, result)` runs in the same transaction as the
write (an outbox message, rows of another collection): both are stored, or neither.

Writers in one process take turns per document (a lost race costs a re-read and a retry); across
processes the version decides. Any other write to such a document must move its version on too.
A document stored before its service kept versions counts as version 0. `to_doc` must build a
fresh document (no list or dict shared with the model), so a change is seen as one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from services.runtime.errors import Aborted, DomainError, NotFound
from services.runtime.outbox import in_transaction

R = TypeVar("R")
MAX_RACES = 50
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, uuid_representation=UuidRepresentation.STANDARD)


class Versioned(Protocol):
    version: int


T = TypeVar("T", bound=Versioned)


class Conflict(Exception):
    """Another writer changed the document between our read and our write."""


class _CountedLock(asyncio.Lock):
    users = 0


class VersionedStore(Generic[T]):
    """One collection of versioned documents, read as models of type T.

    `from_doc(doc) -> T` and `to_doc(item) -> dict` (with `_id` and `version`) are the storage form;
    `missing(id)` is the error for an id that does not exist; `contended` the message when
    MAX_RACES writers in a row won the race."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], collection: AsyncCollection[dict[str, Any]], *,
                 from_doc: Callable[[Any], T], to_doc: Callable[[T], dict[str, Any]],
                 missing: Callable[[str], DomainError] = lambda _: NotFound("not found"),
                 contended: str = "it is being changed by others right now; try again",
                 max_races: int = MAX_RACES) -> None:
        self.client = client
        self.collection = collection
        self.from_doc = from_doc
        self.to_doc = to_doc
        self._missing = missing
        self._contended = contended
        self._max_races = max_races
        self._locks: dict[str, _CountedLock] = {}

    # ------------------------------------------------------------ read

    async def get(self, item_id: str, session: AsyncClientSession | None = None) -> T:
        doc = await self.collection.find_one({"_id": item_id}, session=session) if item_id else None
        if doc is None:
            raise self._missing(item_id)
        return self.from_doc(doc)

    async def find_one(self, selector: Mapping[str, Any], session: AsyncClientSession | None = None) -> T | None:
        doc = await self.collection.find_one(selector, session=session)
        return self.from_doc(doc) if doc is not None else None

    async def find(self, selector: Mapping[str, Any], *, sort: list[tuple[str, int]] | None = None,
                   session: AsyncClientSession | None = None) -> list[T]:
        cursor = self.collection.find(selector, session=session)
        if sort:
            cursor = cursor.sort(sort)
        return [self.from_doc(doc) async for doc in cursor]

    def as_stored(self, item: T) -> T:
        """The item as the database keeps it (times to the millisecond), without reading it back."""
        return self.from_doc(bson.decode(bson.encode(self.to_doc(item)), codec_options=_CODEC))

    # ------------------------------------------------------------ write

    async def insert(self, item: T, session: AsyncClientSession | None = None) -> None:
        """A new document (DuplicateKeyError when its `_id` or a unique key exists)."""
        await self.collection.insert_one(self.to_doc(item), session=session)

    async def mutate(
        self,
        item_id: str,
        change: Callable[[T], R],
        also: Callable[[Any, T, R], Awaitable[None]] | None = None,
        *,
        always: bool = False,
    ) -> tuple[T, R]:
        """Apply `change` to the current document and store it (if it changed anything, or `always`);
        returns the item as stored and what `change` returned. `also(session, item, result)` runs in
        the same transaction as the write, and only when there is one."""
        lock = self._locks.setdefault(item_id, _CountedLock())
        lock.users += 1
        try:
            async with lock:
                return await self._mutate(item_id, change, also, always)
        finally:
            lock.users -= 1
            if not lock.users:
                self._locks.pop(item_id, None)

    async def _mutate(self, item_id: str, change: Callable[[T], R],
                      also: Callable[[Any, T, R], Awaitable[None]] | None, always: bool) -> tuple[T, R]:
        for _ in range(self._max_races):
            item = await self.get(item_id)
            before = self.to_doc(item)
            result = change(item)  # raises a domain error: nothing is written
            after = self.to_doc(item)
            if after == before and not always:
                return item, result
            version = item.version
            item.version = version + 1
            after["version"] = version + 1
            try:
                if also is None:
                    await self._replace(None, item_id, version, after)
                else:
                    async def work(session: AsyncClientSession, item: T = item, result: R = result,
                                   after: dict[str, Any] = after, version: int = version) -> None:
                        await self._replace(session, item_id, version, after)
                        await also(session, item, result)

                    await in_transaction(self.client, work)
            except Conflict:
                continue
            return item, result
        raise Aborted(self._contended)

    async def _replace(self, session: AsyncClientSession | None, item_id: str, version: int,
                       doc: dict[str, Any]) -> None:
        # Version 0 is also a document stored without one (null matches a missing field).
        expected: object = version if version else {"$in": [0, None]}
        done = await self.collection.replace_one({"_id": item_id, "version": expected}, doc, session=session)
        if done.matched_count != 1:
            raise Conflict()
