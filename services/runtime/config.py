"""Settings from the environment, validated at start.

Every service subclasses :class:`ServiceSettings`; :func:`load_settings` turns a
validation error into one clear line naming the environment variable and exits.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SVPL_"


class ServiceSettings(BaseSettings):
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
