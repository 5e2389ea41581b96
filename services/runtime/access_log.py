"""The access log (patient data law): who read or changed which patient's data, when, why.

Every service appends here through this one class; records go to the audit
database with a journaled write before the read is answered. Identity serves a
patient's extract (ListAccessRecords). Personnummer are stored (the log must name
the patient) but never reach application logs: this module logs nothing about them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from services.runtime import auth
from services.runtime.config import ServiceSettings
from services.runtime.mongo import DURABLE, connect

AUDIT_DATABASE = "svpl_audit"
COLLECTION = "access_records"


class AccessLog:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], service: str, database: str = AUDIT_DATABASE) -> None:
        self._records = client[database].get_collection(COLLECTION, write_concern=DURABLE)
        self._service = service
        self._own_client: AsyncMongoClient[dict[str, Any]] | None = None

    @classmethod
    def for_service(cls, settings: ServiceSettings, client: AsyncMongoClient[dict[str, Any]]) -> AccessLog:
        """The service's access log: on its own server when SVPL_AUDIT_MONGODB_URI is set, else on `client`."""
        if not settings.audit_mongodb_uri:
            return cls(client, settings.service_name, settings.audit_database)
        own = connect(settings.audit_mongodb_uri, f"{settings.service_name}-audit")
        access = cls(own, settings.service_name, settings.audit_database)
        access._own_client = own
        return access

    async def close(self) -> None:
        """Close the audit client if this log opened its own."""
        if self._own_client is not None:
            await self._own_client.close()

    @property
    def collection(self) -> AsyncCollection[dict[str, Any]]:
        return self._records

    async def ensure_indexes(self) -> None:
        await self._records.create_index([("patient", ASCENDING), ("at", ASCENDING)])

    async def record(
        self,
        action: str,
        patients: str | list[str],
        *,
        care_unit: str = "",
        resource: str = "",
        purpose: str = "",
        actor: str | None = None,
        via: str = "",
    ) -> None:
        """Append one record per patient concerned (an empty patient is skipped).

        `actor` is whom the read was for; `via` the service that made the call on their behalf
        (e.g. actor "1912..."/"SE...", via "service:support"): a record with a via names the person,
        not the service. Records without one are unchanged (no "via" field)."""
        who = actor or auth.caller().actor()
        now = dt.datetime.now(dt.timezone.utc)
        docs = [
            {
                "at": now,
                "actor": who,
                "action": action,
                "patient": patient,
                "care_unit": care_unit,
                "service": self._service,
                "resource": resource,
                "purpose": purpose,
                **({"via": via} if via else {}),
            }
            for patient in ([patients] if isinstance(patients, str) else patients)
            if patient
        ]
        if docs:
            await self._records.insert_many(docs)
