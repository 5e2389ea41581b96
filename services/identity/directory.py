"""The HSA directory: one interface, two back-ends.

- `LdapDirectory`: an HSA LDAP server through ldap3 (thread-safe restartable
  connection, calls run in a worker thread so the event loop never blocks).
- `LocalDirectory`: a copy of the directory in identity's own database, loaded from
  an export file (JSON lines with HSA attribute names); the default for `make run`.

Attributes, as HSA names them: hsaIdentity, givenName, sn, title, o (organisation),
ou (unit). Two attributes are svpl's own (schema: devstack/hsa.schema, OIDs
under a private test arc): `hsaSvplOrganizationKind` ("region" | "municipality",
single-valued) gives the region_staff / municipality_staff role, and `hsaSvplRole`
(multi-valued: coordinator, support_desk, access_log) gives svpl's functional roles.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pymongo import ASCENDING

from services.runtime import auth, names
from services.runtime.errors import InvalidArgument, Unavailable
from services.runtime.paging import Key, Keyset

REGION = "region"
MUNICIPALITY = "municipality"
FUNCTIONAL_ROLES = (auth.ROLE_COORDINATOR, auth.ROLE_SUPPORT_DESK, auth.ROLE_ACCESS_LOG)
log = logging.getLogger("svpl.identity.directory")
SEARCH_CAP = 2000  # most matches a search ranks; narrow the search beyond this
# A search's order, and the position a page token holds: surname, given name (case folded), HSA-id
# (the local copy's fields; DirectoryPerson.sort_key gives the same for a person from LDAP).
ORDER = Keyset(Key("sn_lc", str), Key("given_lc", str), Key("_id", str))
ATTRIBUTES = ["hsaIdentity", "givenName", "sn", "title", "o", "ou", "hsaSvplOrganizationKind", "hsaSvplRole"]


@dataclass(frozen=True)
class DirectoryPerson:
    hsa_id: str
    given_name: str
    surname: str
    title: str = ""
    organization: str = ""
    unit: str = ""
    organization_kind: str = ""  # REGION | MUNICIPALITY | ""
    functional_roles: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Whatever the source (LDAP, the export file, the demo data): names fit for display.
        for attribute in ("given_name", "surname", "title", "organization", "unit"):
            object.__setattr__(self, attribute, names.displayable(getattr(self, attribute)))

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.surname}".strip()

    def roles(self) -> list[str]:
        """svpl roles: staff; region_staff / municipality_staff by organisation kind; functional roles."""
        roles = [auth.ROLE_STAFF]
        if self.organization_kind == REGION:
            roles.append(auth.ROLE_REGION_STAFF)
        elif self.organization_kind == MUNICIPALITY:
            roles.append(auth.ROLE_MUNICIPALITY_STAFF)
        roles += [r for r in self.functional_roles if r in FUNCTIONAL_ROLES]
        return roles

    def sort_key(self) -> tuple[str, str, str]:
        """Its position in a search (ORDER)."""
        return (self.surname.casefold(), self.given_name.casefold(), self.hsa_id)


def _first(value) -> str:
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def _many(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return (str(value),)


def person_from_attributes(attrs: dict) -> DirectoryPerson:
    """A directory entry (HSA attribute names) as a DirectoryPerson."""
    return DirectoryPerson(
        hsa_id=_first(attrs.get("hsaIdentity")),
        given_name=_first(attrs.get("givenName")),
        surname=_first(attrs.get("sn")),
        title=_first(attrs.get("title")),
        organization=_first(attrs.get("o")),
        unit=_first(attrs.get("ou")),
        organization_kind=_first(attrs.get("hsaSvplOrganizationKind")).lower(),
        functional_roles=tuple(r.lower() for r in _many(attrs.get("hsaSvplRole"))),
    )


@dataclass(frozen=True)
class Query:
    """A validated name search: every word must start the given name or the surname."""

    words: tuple[str, ...]
    organization: str = ""
    unit: str = ""

    @classmethod
    def parse(cls, name: str, organization: str = "", unit: str = "") -> Query:
        text = " ".join((name or "").split())
        if len(text) < 2:
            raise InvalidArgument("name", "give at least 2 characters of a given name and/or surname")
        if len(text) > 100:
            raise InvalidArgument("name", "at most 100 characters")
        if any(ch in text for ch in "*()\\\x00"):
            raise InvalidArgument("name", "letters, spaces, hyphens and apostrophes only")
        return cls(tuple(text.split(" ")), (organization or "").strip(), (unit or "").strip())


class Directory(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def lookup(self, hsa_id: str) -> DirectoryPerson | None: ...

    async def search(self, query: Query, after: tuple | None, limit: int) -> tuple[list[DirectoryPerson], bool]:
        """One page of matches after the position `after` (ORDER: surname, given name, HSA-id; None: from
        the first), and whether more follow."""
        ...


# ---------------------------------------------------------------------- local copy


def read_export(path: str | Path) -> list[dict]:
    """An export file: one JSON object per line with HSA attribute names."""
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return entries


class LocalDirectory:
    """The directory copy in identity's own database (collection `directory`)."""

    def __init__(self, db, export_file: str = "") -> None:
        self._people = db["directory"]
        self._meta = db["directory_meta"]
        self._export_file = export_file

    async def ensure_indexes(self) -> None:
        await self._people.create_index([("sn_lc", ASCENDING), ("given_lc", ASCENDING), ("_id", ASCENDING)])

    async def start(self) -> None:
        if self._export_file:
            await self.load_export(self._export_file)

    async def close(self) -> None:
        pass

    async def load_export(self, path: str | Path) -> int:
        """Replace the copy with the export's entries when the file changed; returns entries loaded."""
        raw = await asyncio.to_thread(Path(path).read_bytes)
        digest = hashlib.sha256(raw).hexdigest()
        meta = await self._meta.find_one({"_id": "export"})
        if meta and meta.get("sha256") == digest:
            return 0
        people = [person_from_attributes(e) for e in read_export(path)]
        docs = [self._doc(p) for p in people if p.hsa_id]
        await self._people.delete_many({})
        for i in range(0, len(docs), 500):
            await self._people.insert_many(docs[i:i + 500])
        await self._meta.replace_one({"_id": "export"}, {"_id": "export", "sha256": digest, "entries": len(docs),
                                                        "file": str(path)}, upsert=True)
        return len(docs)

    @staticmethod
    def _doc(p: DirectoryPerson) -> dict:
        return {
            "_id": p.hsa_id, "given_name": p.given_name, "surname": p.surname, "title": p.title,
            "organization": p.organization, "unit": p.unit, "organization_kind": p.organization_kind,
            "functional_roles": list(p.functional_roles),
            "given_lc": p.given_name.casefold(), "sn_lc": p.surname.casefold(),
            "org_lc": p.organization.casefold(), "unit_lc": p.unit.casefold(),
        }

    @staticmethod
    def _person(doc: dict) -> DirectoryPerson:
        return DirectoryPerson(
            hsa_id=doc["_id"], given_name=doc["given_name"], surname=doc["surname"], title=doc.get("title", ""),
            organization=doc.get("organization", ""), unit=doc.get("unit", ""),
            organization_kind=doc.get("organization_kind", ""),
            functional_roles=tuple(doc.get("functional_roles", ())),
        )

    async def lookup(self, hsa_id: str) -> DirectoryPerson | None:
        doc = await self._people.find_one({"_id": hsa_id})
        return self._person(doc) if doc else None

    async def search(self, query: Query, after: tuple | None, limit: int) -> tuple[list[DirectoryPerson], bool]:
        clauses: list[dict[str, Any]] = []
        for word in query.words:
            prefix = "^" + re.escape(word.casefold())
            clauses.append({"$or": [{"given_lc": {"$regex": prefix}}, {"sn_lc": {"$regex": prefix}}]})
        if query.organization:
            clauses.append({"org_lc": query.organization.casefold()})
        if query.unit:
            clauses.append({"unit_lc": query.unit.casefold()})
        if after is not None:
            clauses.append(ORDER.after(after))
        cursor = self._people.find({"$and": clauses}).sort(ORDER.sort()).limit(limit + 1)
        people = [self._person(d) async for d in cursor]
        return people[:limit], len(people) > limit


# ---------------------------------------------------------------------- LDAP


class LdapDirectory:
    """An HSA LDAP directory through ldap3."""

    def __init__(self, url: str, base_dn: str, bind_dn: str = "", password: str = "", ca_file: str = "",
                 timeout: float = 5.0) -> None:
        if not url or not base_dn:
            raise ValueError("the LDAP directory needs SVPL_LDAP_URL and SVPL_LDAP_BASE_DN")
        import ldap3  # imported here: the local back-end needs no LDAP library at all

        tls = None
        if url.startswith("ldaps://"):
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file or None)
        self._server = ldap3.Server(url, use_ssl=url.startswith("ldaps://"), tls=tls, get_info=ldap3.NONE,
                                    connect_timeout=max(1, round(timeout)))
        self._base = base_dn
        self._bind = (bind_dn or None, password or None)
        self._timeout = timeout
        self._conn = None
        self._ldap3 = ldap3

    async def ensure_indexes(self) -> None:
        pass  # the directory server's own

    async def start(self) -> None:
        from ldap3.core.exceptions import LDAPException

        try:
            await asyncio.to_thread(self._connect)
        except LDAPException as exc:  # not fatal: lookups answer UNAVAILABLE until it is back
            log.warning("HSA directory not reachable at start (%s); will retry on use", exc.__class__.__name__)

    def _connect(self):
        if self._conn is None:
            ldap3 = self._ldap3
            self._conn = ldap3.Connection(
                self._server, user=self._bind[0], password=self._bind[1],
                client_strategy=ldap3.SAFE_SYNC, auto_bind=ldap3.AUTO_BIND_NO_TLS,
                receive_timeout=max(1, round(self._timeout)), read_only=True, raise_exceptions=False,
            )
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.unbind)

    def _search_sync(self, ldap_filter: str, size_limit: int) -> list[DirectoryPerson]:
        from ldap3.core.exceptions import LDAPException

        for attempt in (1, 2):  # a dropped connection (server restart) is reopened once
            try:
                conn = self._connect()
                status, result, response, _ = conn.search(
                    self._base, ldap_filter, search_scope=self._ldap3.SUBTREE, attributes=ATTRIBUTES,
                    size_limit=size_limit, time_limit=max(1, round(self._timeout)),
                )
                break
            except LDAPException as exc:
                self._conn = None
                if attempt == 2:
                    raise Unavailable(f"the HSA directory is not reachable ({exc.__class__.__name__})") from None
        if not status and result.get("result") not in (0, 4, 32):  # success, sizeLimitExceeded, noSuchObject
            raise Unavailable(f"the HSA directory refused the search ({result.get('description')})")
        return [person_from_attributes(e["attributes"]) for e in response or () if e.get("type") == "searchResEntry"]

    async def lookup(self, hsa_id: str) -> DirectoryPerson | None:
        from ldap3.utils.conv import escape_filter_chars

        flt = f"(&(objectClass=hsaSvplPerson)(hsaIdentity={escape_filter_chars(hsa_id)}))"
        people = await asyncio.to_thread(self._search_sync, flt, 2)
        return people[0] if people else None

    async def search(self, query: Query, after: tuple | None, limit: int) -> tuple[list[DirectoryPerson], bool]:
        from ldap3.utils.conv import escape_filter_chars

        parts = ["(objectClass=hsaSvplPerson)"]
        for word in query.words:
            w = escape_filter_chars(word)
            parts.append(f"(|(givenName={w}*)(sn={w}*))")
        if query.organization:
            parts.append(f"(o={escape_filter_chars(query.organization)})")
        if query.unit:
            parts.append(f"(ou={escape_filter_chars(query.unit)})")
        people = await asyncio.to_thread(self._search_sync, "(&" + "".join(parts) + ")", SEARCH_CAP)
        # LDAP has no portable server-side sort: rank here, the same order as the local copy.
        people.sort(key=DirectoryPerson.sort_key)
        people = ORDER.following(people, after, DirectoryPerson.sort_key)
        return people[:limit], len(people) > limit
