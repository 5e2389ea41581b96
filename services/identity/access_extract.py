"""A patient's access-log extract (patient data law): every recorded read or write of
their data, from the audit database that every service appends to through
services.runtime.access_log.AccessLog. Reading the extract is itself recorded."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from bson import ObjectId

from services.identity import personnummer as pnr
from services.runtime import paging
from services.runtime.access_log import AccessLog
from services.runtime.errors import InvalidArgument
from services.runtime.paging import Key, Keyset

# The extract's order (and a page token's position): when, then the record's id.
ORDER = Keyset(Key("at", dt.datetime), Key("_id", ObjectId))


@dataclass(frozen=True)
class ExtractQuery:
    patient: str
    start: dt.datetime | None
    end: dt.datetime | None


class AccessExtract:
    def __init__(self, access_log: AccessLog) -> None:
        self._log = access_log

    async def list(self, patient: str, start: dt.datetime | None, end: dt.datetime | None, page_size: int,
                   page_token: str) -> tuple[list[dict], str]:
        number = pnr.parse(patient, "patient_personnummer").normalized
        if start and end and end <= start:
            raise InvalidArgument("period.end", "must be after period.start")
        query = ExtractQuery(number, start, end)
        size = paging.page_size(page_size)
        selector: dict = {"patient": number}
        if start or end:
            selector["at"] = {**({"$gte": start} if start else {}), **({"$lt": end} if end else {})}
        records, token = await ORDER.page(self._log.collection, selector, query=query, size=size, token=page_token)
        await self._log.record("identity.list_access_records", number, resource="access_records",
                               purpose="access-log extract for the patient")
        for record in records:
            del record["_id"]
        return records, token
