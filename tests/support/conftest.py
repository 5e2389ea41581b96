"""Support tests: the real support service (its own build) with identity, on the real database."""

from __future__ import annotations

import pytest
from svpl.support.v1 import support_pb2

from devstack.harness import as_token
from services.runtime import auth
from tests.conftest import PEOPLE

# Who reports, as the tests log in (tests/conftest.py PEOPLE), and an external actor.
EXTERNAL = dict(person_id="198112289874", id_kind="personnummer", name="Frida Försäkring", method="bankid",
                roles=[auth.ROLE_CITIZEN], organization="Försäkringskassan")

# Two municipalities and the region, as the HSA directory names them (the token's "org").
MUNI_A, MUNI_B, REGION_ORG = "Jönköpings kommun", "Värnamo kommun", "Region Jönköpings län"
_MUNI_ROLES = [auth.ROLE_STAFF, auth.ROLE_MUNICIPALITY_STAFF]
# Reporters: municipality staff of A (tests/conftest.py's Mona, with her organisation) and of B.
STAFF_A = {**PEOPLE["municipality_staff"], "organization": MUNI_A}
STAFF_B = dict(person_id="SE2120000837-3002", id_kind="hsa_id", name="Bo Värnamo", method="siths",
               roles=_MUNI_ROLES, organization=MUNI_B)
# Support desks: the region's (tests/conftest.py's Sam) and each municipality's own IT.
DESK_REGION = {**PEOPLE["support_desk"], "organization": REGION_ORG}
DESK_A = dict(person_id="SE2120000829-4002", id_kind="hsa_id", name="Ada Kommun-IT", method="siths",
              roles=[*_MUNI_ROLES, auth.ROLE_SUPPORT_DESK], organization=MUNI_A)
DESK_B = dict(person_id="SE2120000837-4003", id_kind="hsa_id", name="Berit Värnamo-IT", method="siths",
              roles=[*_MUNI_ROLES, auth.ROLE_SUPPORT_DESK], organization=MUNI_B)


@pytest.fixture
async def support(system_factory):
    """identity + support, each built exactly as `python -m services.<name>` builds it."""
    return await system_factory(["identity", "support"])


@pytest.fixture(scope="module")
async def shared_support(mongo, keys_dir, service_token):
    """One identity + support for a whole module (tests that only file and read tickets)."""
    from devstack.harness import ORDER, System

    system = System(mongo.uri, keys_dir, {name: service_token(name) for name in ORDER + ["gateway"]})
    await system.start(["identity", "support"])
    yield system
    await system.stop()


@pytest.fixture(scope="session")
def md(person_token):
    """Call metadata for a person: md("support_desk"), md(**fields)."""

    def make(who: str | None = None, **fields):
        return as_token(person_token(who, **fields))

    return make


async def file(system, metadata, problem=support_pb2.PROBLEM_KIND_TECHNICAL, description="Kommer inte in i mötet",
               **fields):
    request = support_pb2.FileReportRequest(problem=problem, description=description, **fields)
    return (await system.stub("support").FileReport(request, metadata=metadata)).ticket

