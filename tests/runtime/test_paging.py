"""The one paging scheme (identity's directory and access extract, booking, support, roster): a token
reads back to its position, is bound to its query, and anything else is INVALID_ARGUMENT naming
page.page_token (never a crash); keyset pages stay right when items are added between pages."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st
from pymongo import AsyncMongoClient

from services.runtime import paging
from services.runtime.errors import InvalidArgument
from services.runtime.paging import DESCENDING, Key, Keyset

ORDER = Keyset(Key("at", dt.datetime), Key("_id", str))
MIXED = Keyset(Key("n", int, DESCENDING), Key("o", ObjectId), Key("_id", str))
times = st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1),
                     timezones=st.just(dt.timezone.utc))


@given(times, st.text(max_size=60), st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_a_token_reads_back_to_its_position(when, ident, n):
    assert ORDER.position(ORDER.token((when, ident), "q"), "q") == (when, ident)
    oid = ObjectId()
    assert MIXED.position(MIXED.token((n, oid, ident), ("q", 1)), ("q", 1)) == (n, oid, ident)


@given(st.text(max_size=200))
def test_any_other_token_is_refused_naming_the_field(token):
    try:
        position = ORDER.position(token, "q")
    except InvalidArgument as exc:
        assert exc.field == "page.page_token"
    else:
        assert token == "" and position is None


def test_a_token_is_for_its_own_query_only():
    token = ORDER.token((dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), "x"), ("unit-a",))
    with pytest.raises(InvalidArgument, match="another search"):
        ORDER.position(token, ("unit-b",))


def test_an_edited_token_is_refused():
    token = ORDER.token((dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), "x"), "q")
    body, digest = token.split(".")
    forged = ORDER.token((dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc), "x"), "q").split(".")[0]
    for bad in (forged + "." + digest, body[:-2] + "." + digest, body, token + "x"):
        with pytest.raises(InvalidArgument):
            ORDER.position(bad, "q")


@pytest.mark.parametrize("requested, size", [(0, 50), (1, 1), (500, 500), (501, 500), (10**9, 500)])
def test_page_sizes_have_one_rule(requested, size):
    assert paging.page_size(requested) == size


def test_a_negative_page_size_is_refused_naming_the_field():
    with pytest.raises(InvalidArgument) as err:
        paging.page_size(-1)
    assert err.value.field == "page.page_size"


async def test_pages_stay_right_when_items_are_added_between_them(mongo):
    client = AsyncMongoClient(mongo.uri, tz_aware=True)
    try:
        items = client[f"t{uuid.uuid4().hex[:8]}_paging"]["items"]
        base = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
        await items.insert_many([{"_id": f"i{n:02}", "at": base + dt.timedelta(minutes=n // 2)} for n in range(10)])
        seen, token = [], ""
        while True:
            page, token = await ORDER.page(items, {}, query="all", size=3, token=token)
            seen += [d["_id"] for d in page]
            if len(seen) == 3:  # an item before the position arrives: the next page is not shifted
                await items.insert_one({"_id": "early", "at": base - dt.timedelta(days=1)})
            if not token:
                break
        assert seen == [f"i{n:02}" for n in range(10)]
    finally:
        await client.close()
