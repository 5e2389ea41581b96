"""Page tokens (ListBookings / ListPhoneTasks): what the server hands out reads back, and
anything else a client sends is a clear INVALID_ARGUMENT, never a crash."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.booking.domain import _page_token, _read_page_token
from services.runtime.errors import InvalidArgument

times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1),
                     timezones=st.just(dt.timezone.utc))


@given(times, st.text(min_size=1, max_size=40))
def test_a_token_reads_back_to_its_position(when, ident):
    assert _read_page_token(_page_token(when, ident), "page.page_token") == (when, ident)


@given(st.text(max_size=80))
def test_any_other_token_is_refused_with_the_field_named(token):
    try:
        when, ident = _read_page_token(token, "page.page_token")
    except InvalidArgument as exc:
        assert exc.field == "page.page_token"
    else:  # a string that happens to decode to a valid token is a valid position
        assert isinstance(when, dt.datetime) and isinstance(ident, str)


def test_a_tampered_token_is_refused():
    with pytest.raises(InvalidArgument):
        _read_page_token(_page_token(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), "x")[:-3] + "!!!", "f")
