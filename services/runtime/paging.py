"""One paging scheme for every List/Search RPC: keyset paging with opaque, validated page tokens.

A listing has an order (`Keyset`: fields with their direction, the last one unique, e.g. `_id`).
A page token holds the key of the last item shown; the next page is the items strictly after it
in that order. Unlike an offset, such a position stays right while items are added or removed
between pages: none is skipped, none shown twice.

A token is opaque to clients (base64url of a small JSON document) and checked when it comes back:
its shape, the type of each key value (text, integer, time, ObjectId), a digest over its content
(an edited or truncated token is evident) and a fingerprint of the query it was made for (a token
is not reused for another search). Anything else is INVALID_ARGUMENT naming `page.page_token`,
never an internal error. A token carries no secret and grants nothing: the caller's own filter
applies on every page, so a forged position could only move where the caller's own listing starts.

Page sizes, one rule (AIP-158): negative is INVALID_ARGUMENT naming `page.page_size`, 0 means
DEFAULT_SIZE, more than MAX_SIZE is read as MAX_SIZE.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bson import ObjectId
from bson.errors import BSONError
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from services.runtime.errors import InvalidArgument

DEFAULT_SIZE = 50
MAX_SIZE = 500
TOKEN_FIELD = "page.page_token"  # noqa: S105 - a field name, not a secret
SIZE_FIELD = "page.page_size"
MAX_TOKEN_CHARS = 2000

_DIGEST_CONTEXT = b"svpl page token v1\x00"
_BAD = "not a token from a previous page of this listing"
_OTHER = "belongs to another search: start again without a page token"

T = TypeVar("T")


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(SIZE_FIELD, "must not be negative")
    return min(requested or DEFAULT_SIZE, MAX_SIZE)


def fingerprint(query: object) -> str:
    """Which listing a token belongs to (the query's parameters, as a short digest)."""
    return hashlib.sha256(repr(query).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- key values in a token

def _encode_value(value: object) -> object:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a key value")
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # the database client is tz-aware: a naive time is UTC
            value = value.replace(tzinfo=dt.timezone.utc)
        return {"t": value.isoformat()}
    if isinstance(value, ObjectId):
        return {"o": str(value)}
    if isinstance(value, (str, int)):
        return value
    raise TypeError(f"{type(value).__name__} is not a key value")


def _decode_value(raw: object, kind: type) -> object:
    if kind is dt.datetime:
        if not (isinstance(raw, dict) and set(raw) == {"t"} and isinstance(raw["t"], str)):
            raise ValueError
        value = dt.datetime.fromisoformat(raw["t"])
        if value.tzinfo is None:
            raise ValueError
        return value
    if kind is ObjectId:
        if not (isinstance(raw, dict) and set(raw) == {"o"} and isinstance(raw["o"], str)):
            raise ValueError
        return ObjectId(raw["o"])
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not -(2**63) <= raw < 2**63:
            raise ValueError
        return raw
    if kind is str:
        if not isinstance(raw, str):
            raise ValueError
        return raw
    raise TypeError(f"{kind.__name__} is not a key type")


def _digest(payload: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(_DIGEST_CONTEXT + payload).digest()[:9]).decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------- the order of a listing


@dataclass(frozen=True)
class Key:
    field: str
    kind: type  # str | int | dt.datetime | ObjectId
    direction: int = ASCENDING


class Keyset:
    """The order of one listing: `Keyset(Key("start", dt.datetime), Key("_id", str))`.

    The last key must be unique in the collection, so every item has one position."""

    def __init__(self, *keys: Key) -> None:
        if not keys:
            raise ValueError("a keyset needs at least one key")
        self.keys = keys

    # ------------------------------------------------------------ tokens

    def token(self, position: Sequence[object], query: object) -> str:
        """The page token for the item at `position` (its key values, in order)."""
        if len(position) != len(self.keys):
            raise ValueError("a position has one value per key")
        payload = json.dumps([fingerprint(query), [_encode_value(v) for v in position]],
                             separators=(",", ":"), ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + _digest(payload)

    def position(self, token: str, query: object) -> tuple[object, ...] | None:
        """The position a token names (None: no token, the first page); INVALID_ARGUMENT otherwise."""
        if not token:
            return None
        try:
            if len(token) > MAX_TOKEN_CHARS or not token.isascii():
                raise ValueError
            body, _, digest = token.partition(".")
            payload = _b64decode(body)
            if not digest or digest != _digest(payload):
                raise ValueError
            fp, raw = json.loads(payload)
            if not isinstance(fp, str) or not isinstance(raw, list) or len(raw) != len(self.keys):
                raise ValueError
            position = tuple(_decode_value(v, k.kind) for v, k in zip(raw, self.keys))
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError, binascii.Error, BSONError):
            raise InvalidArgument(TOKEN_FIELD, _BAD) from None
        if fp != fingerprint(query):
            raise InvalidArgument(TOKEN_FIELD, _OTHER)
        return position

    # ------------------------------------------------------------ MongoDB

    def sort(self) -> list[tuple[str, int]]:
        return [(k.field, k.direction) for k in self.keys]

    def of(self, doc: Mapping[str, Any]) -> tuple[Any, ...]:
        """A document's position."""
        return tuple(doc[k.field] for k in self.keys)

    def after(self, position: Sequence[object]) -> dict[str, Any]:
        """The filter for the items strictly after `position` in this order."""
        clauses = []
        for i, key in enumerate(self.keys):
            clause = {k.field: v for k, v in zip(self.keys[:i], position)}
            clause[key.field] = {"$gt" if key.direction == ASCENDING else "$lt": position[i]}
            clauses.append(clause)
        return clauses[0] if len(clauses) == 1 else {"$or": clauses}

    async def page(self, collection: AsyncCollection[dict[str, Any]], selector: dict[str, Any], *, query: object,
                   size: int, token: str,
                   projection: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], str]:
        """One page of `selector`'s documents in this order, and the next page's token ("" at the end).
        `query` is what the caller asked for (its fingerprint binds the token to it)."""
        position = self.position(token, query)
        if position is not None:
            selector = {"$and": [selector, self.after(position)]}
        docs = await collection.find(selector, projection).sort(self.sort()).limit(size + 1).to_list()
        return self.cut(docs, size, query, self.of)

    # ------------------------------------------------------------ in memory

    def cut(self, items: list[T], size: int, query: object, key: Callable[[T], Sequence[object]]) -> tuple[list[T], str]:
        """The first `size` of `items` (one more was read to know whether more follow), and the token."""
        more = len(items) > size
        items = items[:size]
        return items, self.token(key(items[-1]), query) if more and items else ""

    def following(self, items: Iterable[T], position: Sequence[object] | None,
                  key: Callable[[T], Sequence[object]]) -> list[T]:
        """The items strictly after `position`, for a source sorted in memory (all keys ascending)."""
        if any(k.direction != ASCENDING for k in self.keys):
            raise ValueError("in-memory keysets are ascending")
        if position is None:
            return list(items)
        target = tuple(position)
        return [item for item in items if tuple(key(item)) > target]


__all__ = ["ASCENDING", "DESCENDING", "DEFAULT_SIZE", "MAX_SIZE", "Key", "Keyset", "fingerprint", "page_size"]
