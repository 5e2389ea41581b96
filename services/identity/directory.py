"""The HSA directory: one interface, two back-ends.

- `LdapDirectory`: an HSA LDAP server through ldap3 (thread-safe restartable
  connection, calls run in a worker thread so the event loop never blocks).
- `LocalDirectory`: a copy of the directory in identity's own database, loaded from
  an export file (JSON lines, one LDAP entry per line: its `dn` and its attributes by
  their HSA names); the default for `make run`.

HSA as it is (Inera's TKB "Organisationsinformation"; sources in docs/INTEGRATIONS.md), read
through `HsaMapping` (every object class and attribute name is configuration, SVPL_HSA as JSON):

- a person is an entry of the object class `HSAPersonExtension` (with inetOrgPerson,
  organizationalPerson, person, securePerson) under `…,ou=<unit>,o=<organisation>,l=<county>,c=SE`:
  hsaIdentity, givenName, sn, title (job title), hsaTitle (licensed professions), mail, o, ou,
  hsaSystemRole (`<system id>;<role>`) and hsaProtectedPerson (skyddade personuppgifter);
- the organisation entry (the `o=` above the person) carries the organisation number `orgNo`:
  region or municipality is derived from it (`organization_kinds`: organisation-number prefixes,
  Swedish regions are 232100-xxxx and municipalities 212000-xxxx, or whole numbers);
- commissions (medarbetaruppdrag) are entries of the object class `hsaCommission` naming their
  members (hsaCommissionMember = the person's HSA-id) with hsaCommissionPurpose and
  hsaCommissionRight (`<activity>;<information type>;<scope>`); they are read with the person.

svpl's own facts are not HSA attributes: who may coordinate (and work the support desk or read the
access log) is an hsaSystemRole value `<system_id>;<role>` that the region registers for svpl
(`system_id` and the role names are configuration). A protected person is never in a search's
results unless the searcher holds one of `protected_visible_to` (default: nobody); a lookup by the
exact HSA-id (their own login; a coordinator given the id by the person) still finds them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING

from services.identity import hsa_id as hsa
from services.runtime import auth, names
from services.runtime.errors import InvalidArgument, Unavailable
from services.runtime.paging import Key, Keyset

REGION = "region"
MUNICIPALITY = "municipality"
FUNCTIONAL_ROLES = (auth.ROLE_COORDINATOR, auth.ROLE_SUPPORT_DESK, auth.ROLE_ACCESS_LOG)
log = logging.getLogger("svpl.identity.directory")
SEARCH_CAP = 2000  # most matches a search ranks; narrow the search beyond this
ORGANIZATION_CACHE_SECONDS = 3600.0  # an organisation's number, read once an hour at most
# A search's order, and the position a page token holds: surname, given name (case folded), HSA-id
# (the local copy's fields; DirectoryPerson.sort_key gives the same for a person from LDAP).
ORDER = Keyset(Key("sn_lc", str), Key("given_lc", str), Key("_id", str))
TRUE = ("true", "1", "yes")


class HsaMapping(BaseModel):
    """Where svpl reads each fact in HSA (SVPL_HSA, JSON; every key optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    person_class: str = "HSAPersonExtension"
    commission_class: str = "hsaCommission"
    identity: str = "hsaIdentity"
    given_name: str = "givenName"
    surname: str = "sn"
    title: str = "title"
    profession: str = "hsaTitle"
    mail: str = "mail"
    organization: str = "o"
    unit: str = "ou"
    system_role: str = "hsaSystemRole"
    protected: str = "hsaProtectedPerson"
    organization_number: str = "orgNo"
    commission_member: str = "hsaCommissionMember"
    commission_purpose: str = "hsaCommissionPurpose"
    commission_right: str = "hsaCommissionRight"
    # hsaSystemRole values `<system_id>;<HSA role name>` that give svpl roles.
    system_id: str = "SVPL"
    system_roles: dict[str, str] = {"coordinator": auth.ROLE_COORDINATOR, "support_desk": auth.ROLE_SUPPORT_DESK,
                                    "access_log": auth.ROLE_ACCESS_LOG}
    # Organisation number (10 digits) or a prefix of it → region | municipality; the longest match wins.
    organization_kinds: dict[str, str] = {"232100": REGION, "212000": MUNICIPALITY}
    # Roles that see protected persons in search results (default: nobody).
    protected_visible_to: tuple[str, ...] = ()

    def person_attributes(self) -> list[str]:
        return [self.identity, self.given_name, self.surname, self.title, self.profession, self.mail,
                self.organization, self.unit, self.system_role, self.protected]

    def kind_of(self, organization_number: str) -> str:
        number = hsa.organization_number(organization_number.replace("-", "").strip())
        matches = [p for p in self.organization_kinds if number.startswith(p)]
        return self.organization_kinds[max(matches, key=len)] if matches else ""

    def functional_roles(self, system_roles: tuple[str, ...]) -> tuple[str, ...]:
        roles = []
        for value in system_roles:
            system, _, role = value.partition(";")
            mapped = self.system_roles.get(role.strip()) if system.strip() == self.system_id else None
            if mapped in FUNCTIONAL_ROLES and mapped not in roles:
                roles.append(mapped)
        return tuple(roles)

    def sees_protected(self, roles: frozenset[str]) -> bool:
        return bool(roles & set(self.protected_visible_to))


@dataclass(frozen=True)
class Commission:
    """A medarbetaruppdrag: its purpose and rights (`<activity>;<information type>;<scope>`)."""

    hsa_id: str
    purpose: str
    rights: tuple[str, ...] = ()


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
    mail: str = ""
    professions: tuple[str, ...] = ()  # hsaTitle: licensed professions
    protected: bool = False
    organization_number: str = ""
    commissions: tuple[Commission, ...] = ()

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


def _get(attrs: dict, name: str):
    """An attribute by name, whatever its case (LDAP attribute names are case-insensitive)."""
    if name in attrs:
        return attrs[name]
    folded = name.casefold()
    return next((v for k, v in attrs.items() if k.casefold() == folded), None)


def organization_dn(dn: str, mapping: HsaMapping) -> str:
    """The DN of the organisation entry above an entry (its first `o=` ancestor), or ""."""
    from ldap3.utils.dn import safe_dn, to_dn

    try:
        parts = to_dn(safe_dn(dn))
    except Exception:  # noqa: BLE001 - ldap3 raises plain exceptions for a DN it cannot parse
        return ""
    prefix = mapping.organization.casefold() + "="
    for i, rdn in enumerate(parts):
        if rdn.casefold().startswith(prefix):
            return ",".join(parts[i:])
    return ""


def person_from_entry(attrs: dict, mapping: HsaMapping, organization_number: str = "",
                      commissions: tuple[Commission, ...] = ()) -> DirectoryPerson:
    """A person entry (HSA attribute names, as mapped) as a DirectoryPerson."""
    m = mapping
    return DirectoryPerson(
        hsa_id=_first(_get(attrs, m.identity)),
        given_name=_first(_get(attrs, m.given_name)),
        surname=_first(_get(attrs, m.surname)),
        title=_first(_get(attrs, m.title)),
        organization=_first(_get(attrs, m.organization)),
        unit=_first(_get(attrs, m.unit)),
        organization_kind=m.kind_of(organization_number),
        functional_roles=m.functional_roles(_many(_get(attrs, m.system_role))),
        mail=_first(_get(attrs, m.mail)),
        professions=_many(_get(attrs, m.profession)),
        protected=_first(_get(attrs, m.protected)).strip().lower() in TRUE,
        organization_number=hsa.organization_number(organization_number.replace("-", "").strip()),
        commissions=commissions,
    )


def commission_from_entry(attrs: dict, mapping: HsaMapping) -> Commission:
    return Commission(hsa_id=_first(_get(attrs, mapping.identity)),
                      purpose=_first(_get(attrs, mapping.commission_purpose)),
                      rights=_many(_get(attrs, mapping.commission_right)))


def _members(attrs: dict, mapping: HsaMapping) -> list[str]:
    # hsaCommissionMember names the member by HSA-id (optionally followed by ";…" validity data).
    return [v.split(";")[0].strip() for v in _many(_get(attrs, mapping.commission_member))]


def _classes(attrs: dict) -> set[str]:
    return {c.casefold() for c in _many(_get(attrs, "objectClass"))}


@dataclass(frozen=True)
class Query:
    """A validated name search: every word must start the given name or the surname."""

    words: tuple[str, ...]
    organization: str = ""
    unit: str = ""
    include_protected: bool = False  # protected persons too (only for those who may see them)

    @classmethod
    def parse(cls, name: str, organization: str = "", unit: str = "", *, include_protected: bool = False) -> Query:
        text = " ".join((name or "").split())
        if len(text) < 2:
            raise InvalidArgument("name", "give at least 2 characters of a given name and/or surname")
        if len(text) > 100:
            raise InvalidArgument("name", "at most 100 characters")
        if any(ch in text for ch in "*()\\\x00"):
            raise InvalidArgument("name", "letters, spaces, hyphens and apostrophes only")
        return cls(tuple(text.split(" ")), (organization or "").strip(), (unit or "").strip(), include_protected)


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
    """An export file: one JSON object per line, an LDAP entry (`dn` and attributes by HSA name)."""
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return entries


def people_from_entries(entries: list[dict], mapping: HsaMapping) -> list[DirectoryPerson]:
    """The persons of a set of entries, each with its organisation's number and its commissions."""
    numbers: dict[str, str] = {}
    commissions: dict[str, list[Commission]] = {}
    person_class, commission_class = mapping.person_class.casefold(), mapping.commission_class.casefold()
    for e in entries:
        classes = _classes(e)
        if "organization" in classes:
            numbers[str(e.get("dn", "")).casefold()] = _first(_get(e, mapping.organization_number))
        if commission_class in classes:
            for member in _members(e, mapping):
                commissions.setdefault(member, []).append(commission_from_entry(e, mapping))
    people = []
    for e in entries:
        if person_class in _classes(e):
            hsa_id = _first(_get(e, mapping.identity))
            number = numbers.get(organization_dn(str(e.get("dn", "")), mapping).casefold(), "")
            people.append(person_from_entry(e, mapping, number, tuple(commissions.get(hsa_id, ()))))
    return people


class LocalDirectory:
    """The directory copy in identity's own database (collection `directory`)."""

    def __init__(self, db, export_file: str = "", mapping: HsaMapping | None = None) -> None:
        self._people = db["directory"]
        self._meta = db["directory_meta"]
        self._export_file = export_file
        self._mapping = mapping or HsaMapping()

    async def ensure_indexes(self) -> None:
        await self._people.create_index([("sn_lc", ASCENDING), ("given_lc", ASCENDING), ("_id", ASCENDING)])

    async def start(self) -> None:
        if self._export_file:
            await self.load_export(self._export_file)

    async def close(self) -> None:
        pass

    async def load_export(self, path: str | Path) -> int:
        """Replace the copy with the export's persons when the file or the mapping changed; returns
        persons loaded."""
        raw = await asyncio.to_thread(Path(path).read_bytes)
        digest = hashlib.sha256(raw + self._mapping.model_dump_json().encode()).hexdigest()
        meta = await self._meta.find_one({"_id": "export"})
        if meta and meta.get("sha256") == digest:
            return 0
        people = people_from_entries(read_export(path), self._mapping)
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
            "functional_roles": list(p.functional_roles), "mail": p.mail, "professions": list(p.professions),
            "protected": p.protected, "organization_number": p.organization_number,
            "commissions": [{"hsa_id": c.hsa_id, "purpose": c.purpose, "rights": list(c.rights)}
                            for c in p.commissions],
            "given_lc": p.given_name.casefold(), "sn_lc": p.surname.casefold(),
            "org_lc": p.organization.casefold(), "unit_lc": p.unit.casefold(),
        }

    @staticmethod
    def _person(doc: dict) -> DirectoryPerson:
        return DirectoryPerson(
            hsa_id=doc["_id"], given_name=doc["given_name"], surname=doc["surname"], title=doc.get("title", ""),
            organization=doc.get("organization", ""), unit=doc.get("unit", ""),
            organization_kind=doc.get("organization_kind", ""),
            functional_roles=tuple(doc.get("functional_roles", ())), mail=doc.get("mail", ""),
            professions=tuple(doc.get("professions", ())), protected=bool(doc.get("protected")),
            organization_number=doc.get("organization_number", ""),
            commissions=tuple(Commission(c["hsa_id"], c["purpose"], tuple(c["rights"]))
                              for c in doc.get("commissions", ())),
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
        if not query.include_protected:
            clauses.append({"protected": {"$ne": True}})
        if after is not None:
            clauses.append(ORDER.after(after))
        cursor = self._people.find({"$and": clauses}).sort(ORDER.sort()).limit(limit + 1)
        people = [self._person(d) async for d in cursor]
        return people[:limit], len(people) > limit


# ---------------------------------------------------------------------- LDAP


class LdapDirectory:
    """An HSA LDAP directory through ldap3."""

    def __init__(self, url: str, base_dn: str, bind_dn: str = "", password: str = "", ca_file: str = "",
                 timeout: float = 5.0, mapping: HsaMapping | None = None, extra_filter: str = "") -> None:
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
        self._mapping = mapping or HsaMapping()
        self._extra_filter = extra_filter.strip()
        # organisation DN (case folded) -> (organisation number, read at monotonic time)
        self._numbers: dict[str, tuple[str, float]] = {}

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

    def _search_sync(self, base: str, ldap_filter: str, attributes: list[str], size_limit: int,
                     scope: str = "SUBTREE") -> list[tuple[str, dict]]:
        from ldap3.core.exceptions import LDAPException

        for attempt in (1, 2):  # a dropped connection (server restart) is reopened once
            try:
                conn = self._connect()
                status, result, response, _ = conn.search(
                    base, ldap_filter, search_scope=getattr(self._ldap3, scope), attributes=attributes,
                    size_limit=size_limit, time_limit=max(1, round(self._timeout)),
                )
                break
            except LDAPException as exc:
                self._conn = None
                if attempt == 2:
                    raise Unavailable(f"the HSA directory is not reachable ({exc.__class__.__name__})") from None
        if not status and result.get("result") not in (0, 4, 32):  # success, sizeLimitExceeded, noSuchObject
            raise Unavailable(f"the HSA directory refused the search ({result.get('description')})")
        return [(e["dn"], e["attributes"]) for e in response or () if e.get("type") == "searchResEntry"]

    def _persons_filter(self, *parts: str) -> str:
        extra = [self._extra_filter] if self._extra_filter else []
        return "(&" + f"(objectClass={self._mapping.person_class})" + "".join(extra) + "".join(parts) + ")"

    def _organization_number(self, dn: str) -> str:
        org = organization_dn(dn, self._mapping)
        if not org:
            return ""
        cached = self._numbers.get(org.casefold())
        if cached and time.monotonic() - cached[1] < ORGANIZATION_CACHE_SECONDS:
            return cached[0]
        found = self._search_sync(org, "(objectClass=*)", [self._mapping.organization_number], 1, "BASE")
        number = _first(_get(found[0][1], self._mapping.organization_number)) if found else ""
        self._numbers[org.casefold()] = (number, time.monotonic())
        return number

    def _commissions(self, hsa_ids: list[str]) -> dict[str, list[Commission]]:
        from ldap3.utils.conv import escape_filter_chars

        m = self._mapping
        if not hsa_ids:
            return {}
        members = "".join(f"({m.commission_member}={escape_filter_chars(h)})" for h in hsa_ids)
        found = self._search_sync(self._base, f"(&(objectClass={m.commission_class})(|{members}))",
                                  [m.identity, m.commission_member, m.commission_purpose, m.commission_right],
                                  SEARCH_CAP)
        wanted, result = set(hsa_ids), dict[str, list[Commission]]()
        for _, attrs in found:
            for member in _members(attrs, m):
                if member in wanted:
                    result.setdefault(member, []).append(commission_from_entry(attrs, m))
        return result

    def _people_sync(self, found: list[tuple[str, dict]]) -> list[DirectoryPerson]:
        """Persons with their organisation's number and their commissions (one search for all)."""
        ids = [_first(_get(attrs, self._mapping.identity)) for _, attrs in found]
        commissions = self._commissions([i for i in ids if i])
        return [person_from_entry(attrs, self._mapping, self._organization_number(dn),
                                  tuple(commissions.get(hsa_id, ())))
                for (dn, attrs), hsa_id in zip(found, ids, strict=True)]

    def _lookup_sync(self, hsa_id: str) -> DirectoryPerson | None:
        from ldap3.utils.conv import escape_filter_chars

        flt = self._persons_filter(f"({self._mapping.identity}={escape_filter_chars(hsa_id)})")
        found = self._search_sync(self._base, flt, self._mapping.person_attributes(), 2)
        return self._people_sync(found[:1])[0] if found else None

    async def lookup(self, hsa_id: str) -> DirectoryPerson | None:
        return await asyncio.to_thread(self._lookup_sync, hsa_id)

    def _search_people_sync(self, query: Query, after: tuple | None, limit: int
                            ) -> tuple[list[DirectoryPerson], bool]:
        from ldap3.utils.conv import escape_filter_chars

        m = self._mapping
        parts = []
        for word in query.words:
            w = escape_filter_chars(word)
            parts.append(f"(|({m.given_name}={w}*)({m.surname}={w}*))")
        if query.organization:
            parts.append(f"({m.organization}={escape_filter_chars(query.organization)})")
        if query.unit:
            parts.append(f"({m.unit}={escape_filter_chars(query.unit)})")
        if not query.include_protected:
            parts.append(f"(!({m.protected}=TRUE))")
        found = self._search_sync(self._base, self._persons_filter(*parts), m.person_attributes(), SEARCH_CAP)

        def key(entry: tuple[str, dict]) -> tuple[str, str, str]:
            attrs = entry[1]
            return (names.displayable(_first(_get(attrs, m.surname))).casefold(),
                    names.displayable(_first(_get(attrs, m.given_name))).casefold(),
                    _first(_get(attrs, m.identity)))

        # LDAP has no portable server-side sort: rank here, the same order as the local copy.
        found.sort(key=key)
        found = ORDER.following(found, after, key)
        return self._people_sync(found[:limit]), len(found) > limit

    async def search(self, query: Query, after: tuple | None, limit: int) -> tuple[list[DirectoryPerson], bool]:
        return await asyncio.to_thread(self._search_people_sync, query, after, limit)
