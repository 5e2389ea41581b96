"""datetime <-> google.protobuf.Timestamp, the one way (times are UTC everywhere)."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2


def to_timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """A message field value; None (field left unset) for None."""
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def to_datetime(ts: timestamp_pb2.Timestamp | None) -> dt.datetime | None:
    """An aware UTC datetime; None for an unset (zero) timestamp."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=dt.timezone.utc)
