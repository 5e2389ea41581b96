"""datetime <-> google.protobuf.Timestamp, the one way (times are UTC everywhere)."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from services.runtime.errors import InvalidArgument


def to_timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """A message field value; None (field left unset) for None."""
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def to_datetime(ts: timestamp_pb2.Timestamp | None, field: str = "timestamp") -> dt.datetime | None:
    """An aware UTC datetime; None for an unset (zero) timestamp. A timestamp outside what
    protobuf allows (years 1-9999, nanos 0-999999999) is the caller's input: InvalidArgument on `field`."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    try:
        return ts.ToDatetime(tzinfo=dt.timezone.utc)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "not a valid time (years 1-9999, nanos 0-999999999)") from None
