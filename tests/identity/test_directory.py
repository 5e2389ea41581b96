"""The HSA directory: the LDAP back-end against a real slapd and the local copy in the
database answer the same questions the same way; lookups and searches over gRPC write
access records; paging is complete and stable."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest
from pymongo import AsyncMongoClient
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2 as pb

from devstack.embedded_db import free_port
from devstack.harness import as_token
from devstack.slapd import BASE_DN, READER_DN, READER_PASSWORD
from services.identity.demo.generate import people as persons_of
from services.identity.directory import HsaMapping, LdapDirectory, LocalDirectory, Query, person_from_entry
from services.runtime.errors import InvalidArgument, Unavailable
from tests.identity.test_tokens_rpc import field_violation


@pytest.fixture(scope="session")
def export_file(tmp_path_factory, directory_entries):
    path = tmp_path_factory.mktemp("export") / "hsa-export.jsonl"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in directory_entries), "utf-8")
    return path


@pytest.fixture
async def ldap_directory(slapd):
    d = LdapDirectory(slapd.url, BASE_DN, READER_DN, READER_PASSWORD)
    await d.start()
    yield d
    await d.close()


@pytest.fixture
async def local_directory(mongo, export_file):
    client = AsyncMongoClient(mongo.uri, tz_aware=True)
    db = client[f"dir_{uuid.uuid4().hex[:8]}"]
    d = LocalDirectory(db, str(export_file))
    await d.start()
    yield d
    await client.drop_database(db.name)
    await client.close()


@pytest.fixture(params=["ldap", "local"])
def directory(request):
    return request.getfixturevalue(f"{request.param}_directory")


async def test_lookup_by_hsa_id_reads_the_hsa_attributes(directory):
    vera = await directory.lookup("SE2321000057-1001")
    assert (vera.given_name, vera.surname, vera.title, vera.organization, vera.unit) == (
        "Vera", "Samordnare", "Samordnare SIP", "Region Jönköpings län", "Vårdcentralen Centrum")
    assert vera.roles() == ["staff", "region_staff", "coordinator"]
    assert (vera.organization_number, vera.mail, vera.protected) == (
        "2321000057", "se2321000057-1001@example.invalid", False)
    assert [(c.purpose, c.rights) for c in vera.commissions] == [("Vård och behandling", ("Läsa;Alla;SJF",))]
    mona = await directory.lookup("SE2120000829-3001")
    assert mona.roles() == ["staff", "municipality_staff"]
    assert (await directory.lookup("SE2321000057-5001")).roles() == ["staff", "region_staff", "access_log"]
    assert await directory.lookup("SE2321000057-999999") is None


async def test_search_by_start_of_given_name_and_surname(directory, directory_entries):
    people, more = await directory.search(Query.parse("vera sam"), None, 10)
    assert [p.hsa_id for p in people] == ["SE2321000057-1001"] and not more
    people, _ = await directory.search(Query.parse("Åberg"), None, 500)
    expected = {e["hsaIdentity"] for e in persons_of(directory_entries) if e["sn"] == "Åberg"
                and "hsaProtectedPerson" not in e}
    assert expected and {p.hsa_id for p in people} == expected


async def test_search_within_organisation_and_unit(directory, directory_entries):
    query = Query.parse("an", organization="Jönköpings kommun", unit="Socialtjänsten")
    people, _ = await directory.search(query, None, 500)
    expected = {e["hsaIdentity"] for e in persons_of(directory_entries)
                if e["o"] == "Jönköpings kommun" and e["ou"] == "Socialtjänsten" and "hsaProtectedPerson" not in e
                and any(n.lower().startswith("an") for n in (e["givenName"], e["sn"]))}
    assert expected and {p.hsa_id for p in people} == expected


async def test_paging_returns_every_match_once_in_order(directory):
    query = Query.parse("an")
    everything, more = await directory.search(query, None, 500)
    assert not more and len(everything) > 20
    pages, after = [], None
    while True:
        page, more = await directory.search(query, after, 7)
        pages += page
        after = page[-1].sort_key()  # the position a page token holds
        if not more:
            break
    assert pages == everything
    assert everything == sorted(everything, key=lambda p: p.sort_key())


async def test_both_back_ends_answer_alike(ldap_directory, local_directory):
    for name, org, unit in [("an", "", ""), ("Er", "Region Jönköpings län", ""), ("so", "", "Hemtjänst Öster"),
                            ("Anna Ander", "", ""), ("Öb", "", "")]:
        q = Query.parse(name, org, unit)
        first, _ = await local_directory.search(q, None, 3)
        after = first[-1].sort_key() if first else None  # both continue from the same position
        assert await ldap_directory.search(q, after, 9) == await local_directory.search(q, after, 9), name


@pytest.mark.parametrize("name, message", [
    ("a", "give at least 2 characters of a given name and/or surname"),
    ("Ve*", "letters, spaces, hyphens and apostrophes only"),
    ("Vera)(hsaIdentity=*", "letters, spaces, hyphens and apostrophes only"),
])
def test_bad_searches_are_refused(name, message):
    with pytest.raises(InvalidArgument) as err:
        Query.parse(name)
    assert (err.value.field, err.value.description) == ("name", message)


async def test_unreachable_ldap_server_is_unavailable_not_a_crash():
    d = LdapDirectory(f"ldap://127.0.0.1:{free_port()}", BASE_DN, READER_DN, READER_PASSWORD, timeout=1)
    await d.start()
    with pytest.raises(Unavailable, match="not reachable"):
        await d.lookup("SE2321000057-1001")


async def test_local_copy_reloads_only_a_changed_export(mongo, tmp_path, directory_entries):
    client = AsyncMongoClient(mongo.uri, tz_aware=True)
    db = client[f"dir_{uuid.uuid4().hex[:8]}"]
    path = tmp_path / "export.jsonl"
    persons = persons_of(directory_entries)
    structure = [e for e in directory_entries if e not in persons and "hsaCommission" not in e["objectClass"]]
    path.write_text("".join(json.dumps(e) + "\n" for e in structure + persons[:10]))
    d = LocalDirectory(db, str(path))
    assert await d.load_export(path) == 10
    assert await d.load_export(path) == 0  # unchanged
    changed = [dict(persons[0], title="Överläkare")] + persons[20:22]
    path.write_text("".join(json.dumps(e) + "\n" for e in structure + changed))
    assert await d.load_export(path) == 3
    assert (await d.lookup(changed[0]["hsaIdentity"])).title == "Överläkare"
    assert await d.lookup(persons[5]["hsaIdentity"]) is None
    await client.drop_database(db.name)
    await client.close()


def test_roles_come_from_the_organisation_number_and_svpls_system_roles():
    mapping = HsaMapping()
    p = person_from_entry({"hsaIdentity": ["SE2120000829-9"], "givenName": ["A"], "sn": ["B"],
                           "hsaSystemRole": ["SVPL;coordinator", "SVPL;superuser", "SVPL;support_desk",
                                             "ANNAT;access_log"]}, mapping, "212000-0829")
    assert p.roles() == ["staff", "municipality_staff", "coordinator", "support_desk"]
    region = person_from_entry({"hsaIdentity": "SE2321000057-9"}, mapping, "162321000057")
    assert (region.roles(), region.organization_number) == (["staff", "region_staff"], "2321000057")
    # An organisation number the rules do not know gives no region / municipality role.
    assert person_from_entry({"hsaIdentity": "SE5565594230-9"}, mapping, "5565594230").roles() == ["staff"]


def test_every_name_svpl_reads_is_configuration():
    mapping = HsaMapping(given_name="gn", surname="surname", system_role="roles", system_id="SE2321000057-SVPL",
                         system_roles={"samordnare": "coordinator"}, organization_kinds={"5565594230": "region"},
                         protected="skyddad")
    p = person_from_entry({"hsaIdentity": "SE5565594230-9", "gn": "Ada", "surname": "Lind", "skyddad": "true",
                           "roles": ["SE2321000057-SVPL;samordnare", "SVPL;coordinator"]}, mapping, "5565594230")
    assert (p.name, p.protected, p.roles()) == ("Ada Lind", True, ["staff", "region_staff", "coordinator"])


async def test_protected_persons_are_never_in_a_search_for_those_who_may_not_see_them(directory,
                                                                                     directory_entries):
    hidden = [e for e in persons_of(directory_entries) if e.get("hsaProtectedPerson") == "TRUE"]
    assert hidden, "the generated directory has protected persons"
    target = hidden[0]
    query = Query.parse(f"{target['givenName']} {target['sn']}")
    shown, _ = await directory.search(query, None, 500)
    assert target["hsaIdentity"] not in {p.hsa_id for p in shown}
    allowed, _ = await directory.search(Query.parse(query.words[0] + " " + query.words[1], include_protected=True),
                                        None, 500)
    assert target["hsaIdentity"] in {p.hsa_id for p in allowed}
    # A lookup by the exact HSA-id (their own login) still finds them.
    assert (await directory.lookup(target["hsaIdentity"])).protected


# ---------------------------------------------------------------- over gRPC, LDAP back-end

@pytest.fixture
async def ldap_system(system_factory, slapd):
    return await system_factory(["identity"], overrides={"identity": dict(
        directory_backend="ldap", ldap_url=slapd.url, ldap_base_dn=BASE_DN, ldap_bind_dn=READER_DN,
        ldap_bind_password=READER_PASSWORD, development_login=True)})


async def audit_records(system, mongo):
    client = AsyncMongoClient(mongo.uri, tz_aware=True)
    try:
        return [d async for d in client[f"{system.prefix}_audit"]["access_records"].find({}, {"_id": 0})]
    finally:
        await client.close()


async def test_lookup_person_writes_an_access_record(ldap_system, mongo, person_token):
    stub = ldap_system.stub("identity")
    r = await stub.LookupPerson(pb.LookupPersonRequest(hsa_id="SE2120000829-3001", purpose="invite to SIP"),
                                metadata=as_token(person_token("coordinator")))
    assert (r.person.given_name, r.person.staff_kind) == ("Mona", pb.STAFF_KIND_MUNICIPALITY)
    records = await audit_records(ldap_system, mongo)
    assert [(x["actor"], x["action"], x["patient"], x["purpose"], x["service"]) for x in records] == [
        ("SE2321000057-1001", "identity.lookup_person", "SE2120000829-3001", "invite to SIP", "identity")]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.LookupPerson(pb.LookupPersonRequest(hsa_id="SE2321000057-404"),
                                metadata=as_token(person_token("coordinator")))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.LookupPerson(pb.LookupPersonRequest(hsa_id="SE2321000057-1001"),
                                metadata=as_token(person_token("patient")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_search_directory_pages_and_records_each_person_shown(ldap_system, mongo, person_token):
    stub = ldap_system.stub("identity")
    md = as_token(person_token("region_staff"))
    seen, token = [], ""
    while True:
        r = await stub.SearchDirectory(pb.SearchDirectoryRequest(
            name="an", purpose="find a participant", page=common_pb2.PageRequest(page_size=25, page_token=token)),
            metadata=md)
        seen += [p.hsa_id for p in r.people]
        token = r.page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) > 25
    records = await audit_records(ldap_system, mongo)
    assert sorted(x["patient"] for x in records) == sorted(seen)
    assert {x["action"] for x in records} == {"identity.search_directory"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SearchDirectory(pb.SearchDirectoryRequest(name="er", page=common_pb2.PageRequest(
            page_token=r.page.next_page_token or "bm90LWEtdG9rZW4")), metadata=md)
    assert field_violation(err.value)[0] == "page.page_token"


async def test_development_login_reads_roles_from_ldap(ldap_system, service_token):
    r = await ldap_system.stub("identity").DevelopmentLogin(
        pb.DevelopmentLoginRequest(person_id="SE2321000057-4001"), metadata=as_token(service_token("gateway")))
    assert set(r.session.principal.roles) == {"staff", "region_staff", "support_desk"}
    assert r.session.principal.organization == "Region Jönköpings län"


async def test_ldaps_verifies_the_directory_server_certificate(tmp_path, directory_entries, tls_files):
    from devstack.slapd import Slapd

    server = Slapd(tmp_path, directory_entries[:40], tls=(tls_files["server_cert"], tls_files["server_key"])).start()
    first = persons_of(directory_entries[:40])[0]
    try:
        trusted = LdapDirectory(server.url, BASE_DN, READER_DN, READER_PASSWORD, ca_file=tls_files["server_ca"])
        await trusted.start()
        assert (await trusted.lookup(first["hsaIdentity"])).surname == first["sn"]
        await trusted.close()
        wrong_ca = LdapDirectory(server.url, BASE_DN, READER_DN, READER_PASSWORD, ca_file=tls_files["client_ca"],
                                 timeout=1)
        await wrong_ca.start()
        with pytest.raises(Unavailable):
            await wrong_ca.lookup(first["hsaIdentity"])
    finally:
        server.stop()


async def test_a_coordinator_cannot_find_a_protected_person_by_searching(ldap_system, person_token,
                                                                         directory_entries):
    target = next(e for e in persons_of(directory_entries) if e.get("hsaProtectedPerson") == "TRUE")
    stub = ldap_system.stub("identity")
    r = await stub.SearchDirectory(pb.SearchDirectoryRequest(name=f"{target['givenName']} {target['sn']}",
                                                             purpose="find a participant"),
                                   metadata=as_token(person_token("coordinator")))
    assert target["hsaIdentity"] not in {p.hsa_id for p in r.people}
    # Told the exact HSA-id by the person, a coordinator still reaches them (and the read is recorded).
    r = await stub.LookupPerson(pb.LookupPersonRequest(hsa_id=target["hsaIdentity"], purpose="invite"),
                                metadata=as_token(person_token("coordinator")))
    assert r.person.hsa_id == target["hsaIdentity"]


async def test_test_environment_hsa_ids_only_where_configured(system_factory, service_token):
    gw = as_token(service_token("booking"))
    production = (await system_factory(["identity"])).stub("identity")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await production.ValidateHsaId(pb.ValidateHsaIdRequest(hsa_id="TSTNMT2321000156-1019"), metadata=gw)
    assert field_violation(err.value)[0] == "hsa_id"
    test = (await system_factory(["identity"], overrides={"identity": dict(test_environment=True)})).stub("identity")
    r = await test.ValidateHsaId(pb.ValidateHsaIdRequest(hsa_id="TSTNMT2321000156-1019"), metadata=gw)
    assert (r.normalized, r.organization_number) == ("TSTNMT2321000156-1019", "2321000156")
    r = await production.ValidateHsaId(pb.ValidateHsaIdRequest(hsa_id="SE165565594230-1000"), metadata=gw)
    assert r.organization_number == "5565594230"
