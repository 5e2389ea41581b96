"""Fixtures every test shares: the real database server, identity's keys, tokens for
each kind of caller, and in-process gRPC servers on port 0."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, TypedDict

import pytest

from devstack.embedded_db import EmbeddedMongo
from services.identity.tokens import KeyRing
from services.runtime import auth
from services.runtime.server import start_server

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch):
    """aioice skips 127.0.0.1 when gathering host candidates; every WebRTC peer in the suite is on
    loopback (tests only: production gathers the host's real addresses)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture(scope="session")
def mongo(tmp_path_factory):
    """One real MongoDB-wire server (SecantusDB) for the session; each test uses its own database names."""
    db = EmbeddedMongo(tmp_path_factory.mktemp("db") / "data").start()
    yield db
    db.stop()


@pytest.fixture(scope="session")
def keyring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture(scope="session")
def service_token(keyring):
    def mint(name: str) -> str:
        return keyring.issue_service_token(name)

    return mint


class Person(TypedDict):
    person_id: str
    id_kind: str
    name: str
    method: str
    roles: list[str]


# Staff and citizens the tests log in as. Skatteverket's published test personnummer only.
PEOPLE: dict[str, Person] = {
    "coordinator": Person(person_id="SE2321000057-1001", id_kind="hsa_id", name="Vera Samordnare", method="siths",
                          roles=[auth.ROLE_STAFF, auth.ROLE_REGION_STAFF, auth.ROLE_COORDINATOR]),
    "other_coordinator": Person(person_id="SE2321000057-1002", id_kind="hsa_id", name="Olle Annan", method="siths",
                                roles=[auth.ROLE_STAFF, auth.ROLE_REGION_STAFF, auth.ROLE_COORDINATOR]),
    "region_staff": Person(person_id="SE2321000057-2001", id_kind="hsa_id", name="Rita Region", method="siths",
                           roles=[auth.ROLE_STAFF, auth.ROLE_REGION_STAFF]),
    "municipality_staff": Person(person_id="SE2120000829-3001", id_kind="hsa_id", name="Mona Kommun", method="siths",
                                 roles=[auth.ROLE_STAFF, auth.ROLE_MUNICIPALITY_STAFF]),
    "support_desk": Person(person_id="SE2321000057-4001", id_kind="hsa_id", name="Sam Support", method="siths",
                           roles=[auth.ROLE_STAFF, auth.ROLE_REGION_STAFF, auth.ROLE_SUPPORT_DESK]),
    "patient": Person(person_id="191212121212", id_kind="personnummer", name="Tolvan Tolvansson", method="bankid",
                      roles=[auth.ROLE_CITIZEN]),
    "next_of_kin": Person(person_id="198112289874", id_kind="personnummer", name="Nils Närstående",
                          method="e_services_1177", roles=[auth.ROLE_CITIZEN]),
}


@pytest.fixture(scope="session")
def person_token(keyring):
    """person_token("coordinator") or person_token(person_id=..., roles=[...], ...)."""

    def mint(who: str | None = None, ttl: dt.timedelta = dt.timedelta(hours=1), **fields) -> str:
        spec: dict[str, Any] = {**PEOPLE[who], **fields} if who else dict(fields)
        spec.setdefault("assurance", "high")
        return keyring.issue_session_token(ttl=ttl, **spec)[0]

    return mint


@pytest.fixture
async def serve():
    """Start Components in-process on port 0; everything started is stopped at the end."""
    running = []

    async def start(component, keys, **options):
        server = await start_server(component, keys, "127.0.0.1:0", **options)
        running.append(server)
        return server

    yield start
    for server in reversed(running):
        await server.stop(0)


@pytest.fixture(scope="session")
def keys_dir(keyring, tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    keyring.save_current(directory)
    return directory


@pytest.fixture
async def system_factory(mongo, keys_dir, service_token):
    """Build a whole in-process system: `sys = await system_factory(["identity", "roster"])`."""
    from devstack.harness import OPTIONAL, ORDER, System

    systems = []

    async def make(names=None, overrides=None):
        tokens = {name: service_token(name) for name in ORDER + OPTIONAL + ["gateway"]}
        system = System(mongo.uri, keys_dir, tokens, overrides=overrides or {})
        systems.append(system)
        return await system.start(names)

    yield make
    for system in systems:
        await system.stop()
