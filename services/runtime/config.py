"""Settings from the environment, validated at start.

Every service subclasses :class:`ServiceSettings`; :func:`load_settings` turns a
validation error into one clear line naming the environment variable and exits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.runtime.tls import ClientTls, TlsFiles

ENV_PREFIX = "SVPL_"


class TlsSettings(BaseSettings):
    """Mutual TLS between the services (services/runtime/tls.py): all three files, or none (plaintext,
    for `make run` and tests only; the chart always sets them)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # This service's certificate (PEM, with its chain), its key, and the CA bundle peers chain to.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    # Channels look for rotated files this often (servers look on every new connection).
    tls_reload_seconds: float = Field(10.0, gt=0)
    # The name media's certificate carries: media instances are called at their pod address, which no
    # certificate names, so channels to media verify this name instead (the chart: the media Service).
    tls_media_server_name: str = ""

    @model_validator(mode="after")
    def _all_or_none(self) -> TlsSettings:
        given = [bool(f) for f in (self.tls_cert_file, self.tls_key_file, self.tls_ca_file)]
        if any(given) and not all(given):
            raise ValueError("SVPL_TLS_CERT_FILE, SVPL_TLS_KEY_FILE and SVPL_TLS_CA_FILE: set all three or none")
        return self

    @property
    def tls_files(self) -> TlsFiles | None:
        if not self.tls_cert_file:
            return None
        return TlsFiles(Path(self.tls_cert_file), Path(self.tls_key_file), Path(self.tls_ca_file))

    @property
    def client_tls(self) -> ClientTls | None:
        files = self.tls_files
        return ClientTls(files, self.tls_reload_seconds) if files else None


class TracingSettings(BaseSettings):
    """OpenTelemetry tracing (services/runtime/tracing.py): off unless an OTLP endpoint is set, here or
    in the standard OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # The collector's OTLP/gRPC endpoint, e.g. http://otel-collector.observability:4317.
    otlp_endpoint: str = ""
    # Share of new traces recorded (parent-based: a trace started elsewhere keeps its decision).
    trace_sample_ratio: float = Field(1.0, ge=0, le=1)


class ServiceSettings(TlsSettings, TracingSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    service_name: str = Field(description="Name of this service, e.g. booking")
    grpc_port: int = Field(50050, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free port")
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    # Required: MongoDB URI (production: a replica set; development: the embedded server).
    mongodb_uri: str
    mongodb_database: str = ""
    # Where access records (patient data law) are appended; defaults to mongodb_uri.
    audit_mongodb_uri: str = ""
    audit_database: str = "svpl_audit"
    # Where the other services are (each service reads the ones it calls).
    identity_address: str = "127.0.0.1:50051"
    booking_address: str = "127.0.0.1:50052"
    roster_address: str = "127.0.0.1:50053"
    media_address: str = "127.0.0.1:50054"
    support_address: str = "127.0.0.1:50055"
    # This service's own token (minted by identity: `python -m services.identity mint-service-token`).
    service_token: str = ""
    region: str = "rjl"
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # How often readiness re-checks the database.
    db_check_seconds: float = Field(2.0, gt=0)
    # Revoked session tokens (logout) are fetched from identity this often; when they could not be
    # fetched for revocation_max_staleness_seconds, persons' calls are refused (UNAVAILABLE) until they can.
    revocation_poll_seconds: float = Field(2.0, gt=0)
    revocation_max_staleness_seconds: float = Field(30.0, gt=0)
    # A plaintext port serving only the gRPC health service, for Kubernetes' grpc probes (the kubelet
    # speaks no TLS); 0: none (health is then asked on the service's own port).
    health_port: int = Field(0, ge=0, le=65535)

    @property
    def database_name(self) -> str:
        return self.mongodb_database or f"svpl_{self.service_name}"


S = TypeVar("S", bound=BaseSettings)


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def require_integration(settings: BaseSettings, enabled: str, *needed: str, then: str) -> None:
    """An outside system a deployment must either configure or switch off explicitly: with
    `enabled` on (the default), each of `needed` must be set, else the start fails naming it and the
    switch (`then`: what switching it off means). Called from a settings class's model validator;
    `make run` and the test harness switch their integrations off (or point them at test servers)."""
    if not getattr(settings, enabled):
        return
    missing = [env_name(f) for f in needed if not getattr(settings, f)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required; "
                         f"or set {env_name(enabled)}=false ({then})")


class SettingsError(SystemExit):
    """Start-up stops here: the message names each bad environment variable."""


def _env_name(settings_cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    return (prefix + "_".join(str(p) for p in loc)).upper()


def load_settings(settings_cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment, or exit with a message naming every bad variable."""
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = _env_name(settings_cls, err["loc"])
            if not err["loc"]:  # a model validator's: its message names the variables itself
                lines.append(str(err["msg"]).removeprefix("Value error, "))
            elif err["type"] == "missing":
                lines.append(f"{name} is required but not set")
            else:
                lines.append(f"{name}: {err['msg']}")
        # SystemExit prints the message to stderr and exits 1, with no traceback.
        raise SettingsError("svpl: invalid configuration: " + "; ".join(lines)) from None
