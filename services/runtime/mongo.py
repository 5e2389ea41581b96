"""MongoDB from a URI (pymongo's async client): the same code runs on a MongoDB
replica set in production and on the embedded MongoDB-wire server in development."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient, WriteConcern

# A write that must survive a crash of the database (kill -9) before we answer.
DURABLE = WriteConcern(w="majority", j=True)


def connect(uri: str, app_name: str = "svpl", max_pool_size: int = 100) -> AsyncMongoClient[dict[str, Any]]:
    """A client that reconnects by itself; operations wait up to 5 s for a server."""
    return AsyncMongoClient(
        uri,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        connectTimeoutMS=3000,
        uuidRepresentation="standard",
        maxPoolSize=max_pool_size,
    )
