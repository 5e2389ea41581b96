from typing import Literal

from pydantic import Field, model_validator

from services.identity.directory import HsaMapping
from services.runtime.config import ServiceSettings, env_name, require_integration


class IdentitySettings(ServiceSettings):
    service_name: str = "identity"
    grpc_port: int = Field(50051, ge=0, le=65535)
    # Directory of Ed25519 signing keys (<kid>.pem); the newest signs. A mounted Secret in Kubernetes.
    signing_keys_dir: str
    # Lifetime of a session token issued at login.
    session_ttl_seconds: int = Field(3600, ge=60, le=12 * 3600)
    # Join tokens: default and longest lifetime (roster asks for its own within this bound).
    join_token_default_ttl_seconds: int = Field(300, ge=10, le=86400)
    join_token_max_ttl_seconds: int = Field(4 * 3600, ge=10, le=86400)

    # Development identity provider (`make run` only): off unless explicitly turned on.
    development_login: bool = False

    # The HSA directory: "local" (a copy in identity's own database, loaded from an export
    # file) or "ldap" (an HSA LDAP server).
    directory_backend: Literal["local", "ldap"] = "local"
    # JSON-lines export (HSA attribute names) loaded into the local copy at start when it
    # changed. Empty: with development_login on, the bundled demo export; otherwise none.
    directory_export_file: str = ""
    ldap_url: str = ""  # ldap://host:389 or ldaps://host:636
    ldap_base_dn: str = ""
    ldap_bind_dn: str = ""
    ldap_bind_password: str = ""
    ldap_ca_file: str = ""  # CA bundle for ldaps:// (empty: the system store)
    ldap_timeout_seconds: float = Field(5.0, gt=0)
    # An LDAP filter added to every person search (e.g. "(hsaIdentity=SE2321000057*)"); empty: none.
    ldap_person_filter: str = ""
    # How HSA's entries are read (object classes, attribute names, the hsaSystemRole values that give
    # svpl roles, organisation numbers of regions / municipalities, who sees protected persons):
    # SVPL_HSA as JSON, e.g. '{"system_id": "SE2321000057-SVPL"}'. See services/identity/directory.py.
    hsa: HsaMapping = HsaMapping()
    # An Inera test environment: test HSA-ids (TSTNMT…, T-SERVICES-SE…) are accepted. Never in production.
    test_environment: bool = False
    # Demo citizens (personnummer + name) the development login may use; empty: the bundled demo file.
    demo_citizens_file: str = ""

    # SITHS: PEM file(s) with the trusted SITHS CA certificates (comma-separated paths): the root
    # and issuing CAs (the same bundle the ingress verifies cards with). Required unless switched off
    # (SVPL_SITHS_ENABLED=false: every SITHS login is refused).
    siths_enabled: bool = True
    siths_ca_files: str = ""
    # Issuing CAs (subject common names, comma-separated) whose certificates log people in: the
    # "Person HSA-id" CAs. In Inera's test environment their names begin with "TEST".
    siths_person_ca_names: str = "SITHS e-id Person HSA-id 3 CA v1,SITHS e-id Person HSA-id 2 CA v1"
    # CAs of the card's personnummer-based certificate and of function certificates: refused with a
    # message telling the person to pick the HSA-id certificate.
    siths_person_id_ca_names: str = ("SITHS e-id Person ID 3 CA v1,SITHS e-id Person ID 2 CA v1,"
                                     "SITHS e-id Person ID Mobile CA v1")
    siths_function_ca_names: str = "SITHS e-id Function CA v1"
    # Certificate policy OIDs (comma-separated) that mean LoA 3 (regular cards, eIDAS substantial) and
    # LoA 2 (replacement cards), as Inera publishes them for SITHS e-id. A card naming neither is refused.
    siths_loa3_policy_oids: str = ""
    siths_loa2_policy_oids: str = ""
    # Revocation of SITHS cards by OCSP (RFC 6960), failing closed. "off" only for the local
    # development stack (the chart refuses it).
    siths_revocation: Literal["ocsp", "off"] = "ocsp"
    # The OCSP responder to ask instead of the one each card names (Authority Information Access).
    siths_ocsp_url: str = ""
    siths_ocsp_timeout_seconds: float = Field(5.0, gt=0, le=60)
    # A GOOD answer is reused until min(its nextUpdate, this age); at most this many are kept.
    siths_ocsp_cache_seconds: int = Field(300, ge=0, le=3600)
    siths_ocsp_cache_size: int = Field(10_000, ge=1)

    # BankID Relying Party API v6.
    bankid_url: str = ""  # e.g. https://appapi2.bankid.com/rp/v6.0
    bankid_client_cert_file: str = ""  # RP certificate (PEM), with its key below
    bankid_client_key_file: str = ""
    bankid_ca_file: str = ""  # the CA that signs the BankID server certificate
    bankid_timeout_seconds: float = Field(10.0, gt=0)

    # 1177 e-services login for citizens: "oidc" (the Swedish OIDC profile) or "saml" (SAML 2.0 Web SSO,
    # as Inera's citizen IdP is published). Either way the login must reach e_services_1177_min_loa
    # (3: LoA 3, eIDAS substantial); weaker logins are refused.
    e_services_1177_protocol: Literal["oidc", "saml"] = "oidc"
    e_services_1177_min_loa: int = Field(3, ge=2, le=4)
    # OpenID Connect relying party.
    oidc_1177_issuer: str = ""  # discovery at <issuer>/.well-known/openid-configuration
    oidc_1177_client_id: str = ""
    # Client authentication: private_key_jwt with this key (PEM; the profile's default), else the secret.
    oidc_1177_client_key_file: str = ""
    oidc_1177_client_secret: str = ""
    oidc_1177_ca_file: str = ""
    oidc_1177_scope: str = "openid https://id.oidc.se/scope/naturalPersonNumber"
    # The ID-token claims that carry the personnummer, and the samordningsnummer.
    oidc_1177_personnummer_claim: str = "https://id.oidc.se/claim/personalIdentityNumber"
    oidc_1177_coordination_number_claim: str = "https://id.oidc.se/claim/coordinationNumber"
    # SAML 2.0 service provider: our entityID, the IdP's metadata (a file, e.g. from a ConfigMap) and,
    # when it lists several, which IdP; our signing key and certificate (a Secret; the IdP has them
    # in our SP metadata).
    saml_1177_sp_entity_id: str = ""
    saml_1177_idp_metadata_file: str = ""
    saml_1177_idp_entity_id: str = ""
    saml_1177_sp_key_file: str = ""
    saml_1177_sp_cert_file: str = ""
    login_state_ttl_seconds: int = Field(600, ge=30, le=3600)

    @model_validator(mode="after")
    def _integrations(self):
        require_integration(self, "siths_enabled", "siths_ca_files", then="every SITHS login is refused")
        if self.directory_backend == "ldap":
            missing = [env_name(f) for f in ("ldap_url", "ldap_base_dn") if not getattr(self, f)]
            if missing:
                raise ValueError(f"{' and '.join(missing)} required with {env_name('directory_backend')}=ldap "
                                 "(the HSA directory)")
        elif not self.directory_export_file and not self.development_login:
            raise ValueError(f"the HSA directory is required: {env_name('directory_backend')}=ldap with "
                             f"{env_name('ldap_url')}, or {env_name('directory_export_file')} (an HSA export)")
        return self
