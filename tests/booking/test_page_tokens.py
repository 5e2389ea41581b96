"""Page tokens (ListBookings / ListPhoneTasks, on the runtime's one paging scheme): what the server
hands out reads back, and anything else a client sends is a clear INVALID_ARGUMENT, never a crash."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.booking.store import BOOKING_ORDER
from services.runtime.errors import InvalidArgument

times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1),
                     timezones=st.just(dt.timezone.utc))
QUERY = ("SE2321000057-0001", "", None, None)


@given(times, st.text(min_size=1, max_size=40))
def test_a_token_reads_back_to_its_position(when, ident):
    assert BOOKING_ORDER.position(BOOKING_ORDER.token((when, ident), QUERY), QUERY) == (when, ident)


@given(st.text(max_size=80))
def test_any_other_token_is_refused_with_the_field_named(token):
    try:
        position = BOOKING_ORDER.position(token, QUERY)
    except InvalidArgument as exc:
        assert exc.field == "page.page_token"
    else:  # only the empty token (the first page) is no position
        assert token == "" and position is None


def test_a_tampered_token_is_refused():
    token = BOOKING_ORDER.token((dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), "x"), QUERY)
    with pytest.raises(InvalidArgument):
        BOOKING_ORDER.position(token[:-3] + "!!!", QUERY)
