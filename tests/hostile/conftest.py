"""Hostile-input tests share the gateway fixtures (the gateway app wired to the real services in-process)
and a snapshot of everything the system has stored, to prove a refusal changed nothing."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from bson import json_util
from pymongo import AsyncMongoClient

from tests.gateway.conftest import Browser, gateway, served  # noqa: F401

_clients: dict[str, AsyncMongoClient] = {}


async def snapshot(system, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """A hash of every document of every collection of this system's databases, by "db.collection"."""
    client = _clients.get(system.mongo_uri)
    if client is None:
        client = _clients[system.mongo_uri] = AsyncMongoClient(system.mongo_uri, tz_aware=True)
    out: dict[str, str] = {}
    for name in await client.list_database_names():
        if not name.startswith(system.prefix + "_"):
            continue
        db = client[name]
        for col in sorted(await db.list_collection_names()):
            if f"{name.removeprefix(system.prefix + '_')}.{col}" in skip:
                continue
            docs = [json_util.dumps(d, sort_keys=True) async for d in db[col].find({}).sort("_id", 1)]
            out[f"{name}.{col}"] = hashlib.sha256("\n".join(docs).encode()).hexdigest()[:16] + f":{len(docs)}"
    return out


@pytest.fixture(autouse=True, scope="session")
async def close_snapshot_clients():
    yield
    for client in _clients.values():
        await client.close()
    _clients.clear()


async def settled(system, skip: frozenset[str] = frozenset(), timeout: float = 15.0) -> dict[str, str]:
    """The snapshot once background work (outbox deliveries, reports) has stopped changing it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = await snapshot(system, skip)
    while loop.time() < deadline:
        await asyncio.sleep(0.1)
        now = await snapshot(system, skip)
        if now == last:
            return now
        last = now
    raise AssertionError(f"the stored state did not settle within {timeout}s")


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


__all__ = ["Browser", "snapshot", "settled", "changed"]
