"""Opaque page tokens (offset + a fingerprint of the query, so a token is not reused for another query)."""

from __future__ import annotations

import base64
import hashlib
import json

from services.runtime.errors import InvalidArgument

DEFAULT_SIZE = 50
MAX_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page.page_size", "must not be negative")
    return min(requested or DEFAULT_SIZE, MAX_SIZE)


def _fingerprint(query: object) -> str:
    return hashlib.sha256(repr(query).encode()).hexdigest()[:12]


# No search pages this far; a larger skip would overflow the database's integer.
MAX_OFFSET = 2**31 - 1


def encode(offset: int, query: object) -> str:
    raw = json.dumps({"o": offset, "q": _fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, query: object) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, fingerprint = int(data["o"]), data["q"]
    except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: int(float('inf'))
        raise InvalidArgument("page.page_token", "not a token from a previous page of this search") from None
    if fingerprint != _fingerprint(query) or not 0 <= offset <= MAX_OFFSET:
        raise InvalidArgument("page.page_token", "belongs to another search: start again without a page token")
    return offset
