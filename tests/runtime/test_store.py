"""The runtime's versioned store (roster's meetings, booking's bookings, support's tickets): a change is
checked against the state it lands on, a lost race is retried, a refused change writes nothing, and a
document stored before its service kept versions is changed like any other."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import pytest
from pymongo import AsyncMongoClient

from services.runtime.errors import FailedPrecondition, NotFound
from services.runtime.store import VersionedStore


@dataclass
class Counter:
    id: str
    value: int = 0
    seen: list[int] = field(default_factory=list)
    version: int = 0

    def to_doc(self) -> dict:
        return {"_id": self.id, "value": self.value, "seen": list(self.seen), "version": self.version}

    @classmethod
    def from_doc(cls, doc) -> Counter:
        return cls(doc["_id"], doc["value"], list(doc.get("seen", [])), doc.get("version", 0))


@pytest.fixture
async def store(mongo):
    client = AsyncMongoClient(mongo.uri, tz_aware=True)
    db = client[f"t{uuid.uuid4().hex[:8]}_store"]
    yield VersionedStore(client, db["counters"], from_doc=Counter.from_doc, to_doc=Counter.to_doc,
                         missing=lambda i: NotFound(f"counter {i} does not exist"))
    await client.close()


def bump(c: Counter) -> int:
    c.value += 1
    c.seen.append(c.value)
    return c.value


async def test_concurrent_changes_all_land_each_on_the_state_before_it(store):
    await store.insert(Counter("c"))
    results = await asyncio.gather(*(store.mutate("c", bump) for _ in range(20)))
    stored = await store.get("c")
    assert stored.value == 20 and sorted(r for _, r in results) == list(range(1, 21))
    assert stored.seen == list(range(1, 21)) and stored.version == 20


async def test_a_lost_race_across_stores_is_retried_on_the_fresh_state(store):
    other = VersionedStore(store.client, store.collection, from_doc=Counter.from_doc, to_doc=Counter.to_doc)
    await store.insert(Counter("c"))
    # Two stores (two replicas): their per-process turn-taking does not see each other; the version does.
    await asyncio.gather(*(s.mutate("c", bump) for s in (store, other) for _ in range(10)))
    assert (await store.get("c")).value == 20


async def test_a_refused_change_writes_nothing(store):
    await store.insert(Counter("c", value=5))

    def refuse(c: Counter) -> None:
        c.value = 99
        raise FailedPrecondition("no")

    with pytest.raises(FailedPrecondition):
        await store.mutate("c", refuse)
    assert (await store.get("c")).value == 5 and (await store.get("c")).version == 0


async def test_an_unchanged_document_is_not_written_unless_asked(store):
    await store.insert(Counter("c"))
    await store.mutate("c", lambda c: None)
    assert (await store.get("c")).version == 0
    await store.mutate("c", lambda c: None, always=True)
    assert (await store.get("c")).version == 1


async def test_a_document_stored_without_a_version_is_changed_and_gets_one(store):
    await store.collection.insert_one({"_id": "old", "value": 1, "seen": []})
    item, _ = await store.mutate("old", bump)
    assert item.version == 1
    assert await store.collection.find_one({"_id": "old"}) == {"_id": "old", "value": 2, "seen": [2], "version": 1}


async def test_a_missing_document_is_the_stores_not_found(store):
    with pytest.raises(NotFound, match="counter nope does not exist"):
        await store.mutate("nope", bump)
