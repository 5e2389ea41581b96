"""Identity service assembly: settings → storage → domain → servicer → Component."""

from __future__ import annotations

import datetime as dt
import logging

from svpl.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity.access_extract import AccessExtract
from services.identity.assurance import Assurance
from services.identity.bankid import BankIdClient, BankIdLogin
from services.identity.config import IdentitySettings
from services.identity.development import DEMO_DIRECTORY, DevelopmentLogin, load_citizens
from services.identity.directory import Directory, LdapDirectory, LocalDirectory
from services.identity.oidc1177 import Oidc1177Login
from services.identity.saml1177 import Saml1177Login
from services.identity.servicer import ACCESS, IdentityServicer
from services.identity.siths import OcspChecker, SithsLogin, load_ca_certificates
from services.identity.token_service import TokenService
from services.identity.tokens import KeyRing
from services.runtime import auth, mongo
from services.runtime.access_log import AccessLog
from services.runtime.server import Binding, Component, Resources

log = logging.getLogger("svpl.identity")


def make_directory(settings: IdentitySettings, db) -> Directory:
    if settings.directory_backend == "ldap":
        return LdapDirectory(settings.ldap_url, settings.ldap_base_dn, settings.ldap_bind_dn,
                             settings.ldap_bind_password, settings.ldap_ca_file, settings.ldap_timeout_seconds,
                             mapping=settings.hsa, extra_filter=settings.ldap_person_filter)
    export = settings.directory_export_file or (str(DEMO_DIRECTORY) if settings.development_login else "")
    return LocalDirectory(db, export, settings.hsa)


async def build(settings: IdentitySettings) -> tuple[Component, auth.KeySet]:
    async with Resources() as opened:
        keys = KeyRing.load(settings.signing_keys_dir)
        client = opened.closing(mongo.connect(settings.mongodb_uri, settings.service_name))
        db = client[settings.database_name]
        access_log = opened.closing(AccessLog.for_service(settings, client))
        tokens = TokenService(
            keys, db,
            session_ttl=dt.timedelta(seconds=settings.session_ttl_seconds),
            join_default_ttl=dt.timedelta(seconds=settings.join_token_default_ttl_seconds),
            join_max_ttl=dt.timedelta(seconds=settings.join_token_max_ttl_seconds),
        )
        directory = opened.closing(make_directory(settings, db))
        citizens = load_citizens(settings.demo_citizens_file) if settings.development_login else {}
        development = DevelopmentLogin(settings.development_login, directory, tokens, citizens,
                                       test_environment=settings.test_environment)
        revocation = None
        if settings.siths_revocation == "ocsp":
            revocation = opened.closing(OcspChecker(url_override=settings.siths_ocsp_url,
                                                    timeout_seconds=settings.siths_ocsp_timeout_seconds,
                                                    cache_seconds=settings.siths_ocsp_cache_seconds,
                                                    cache_size=settings.siths_ocsp_cache_size))
        cas = load_ca_certificates(settings.siths_ca_files) if settings.siths_enabled else []  # none: SITHS refused
        siths = SithsLogin(cas, directory, tokens, revocation,
                           person_cas=settings.siths_person_ca_names, person_id_cas=settings.siths_person_id_ca_names,
                           function_cas=settings.siths_function_ca_names,
                           loa3_policies=settings.siths_loa3_policy_oids, loa2_policies=settings.siths_loa2_policy_oids,
                           test_environment=settings.test_environment)
        bankid_client = None
        if settings.bankid_url:
            bankid_client = opened.closing(BankIdClient(settings.bankid_url, settings.bankid_client_cert_file,
                                                        settings.bankid_client_key_file, settings.bankid_ca_file,
                                                        settings.bankid_timeout_seconds))
        bankid = BankIdLogin(bankid_client, db, tokens)
        assurance = Assurance(settings.e_services_1177_min_loa)
        state_ttl = dt.timedelta(seconds=settings.login_state_ttl_seconds)
        e_services: Oidc1177Login | Saml1177Login
        if settings.e_services_1177_protocol == "saml":
            e_services = Saml1177Login(
                settings.saml_1177_sp_entity_id, settings.saml_1177_idp_metadata_file, settings.saml_1177_sp_key_file,
                settings.saml_1177_sp_cert_file, db, tokens, idp_entity_id=settings.saml_1177_idp_entity_id,
                assurance=assurance, state_ttl=state_ttl)
        else:
            e_services = Oidc1177Login(
                settings.oidc_1177_issuer, settings.oidc_1177_client_id, settings.oidc_1177_client_secret, db,
                tokens, ca_file=settings.oidc_1177_ca_file, scope=settings.oidc_1177_scope,
                personnummer_claim=settings.oidc_1177_personnummer_claim,
                coordination_number_claim=settings.oidc_1177_coordination_number_claim,
                client_key_file=settings.oidc_1177_client_key_file, assurance=assurance, state_ttl=state_ttl)
        servicer = IdentityServicer(keys, tokens, directory, development, access_log, siths, bankid, e_services,
                                    AccessExtract(access_log), mapping=settings.hsa,
                                    test_environment=settings.test_environment)

        async def start() -> None:
            if settings.development_login:
                log.warning("development login is ON: anyone can log in as a demo person (never in production)")
            if settings.siths_revocation == "off":
                log.warning("SITHS revocation checking is OFF: a revoked card can log in (never in production)")
            await directory.start()

        binding = Binding(
            identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
            servicer,
            identity_pb2_grpc.add_IdentityServiceServicer_to_server,
            ACCESS,
        )

        async def fetch_revoked(cursor: str) -> tuple[list[tuple[str, float]], str]:
            sessions, next_cursor = await tokens.revoked_sessions(cursor)
            return [(token_id, expires.timestamp()) for token_id, expires in sessions], next_cursor

        # Identity verifies its own callers like every service does: its keys, and the revoked sessions
        # read from its own database (not over its own contract).
        keyset = keys.keyset()
        keyset.revocations = auth.Revocations(fetch_revoked, settings.revocation_poll_seconds,
                                              settings.revocation_max_staleness_seconds)
        component = Component([binding], resources=opened.pop_all(), start=start, mongo=client,
                              indexes=[access_log, directory, bankid, tokens, e_services])
        return component, keyset
