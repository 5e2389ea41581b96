from pathlib import Path

from pydantic import Field, field_validator, model_validator

from services.runtime.config import ServiceSettings, require_integration

DEFAULT_OPTIONS_FILE = Path(__file__).resolve().parent / "config" / "rjl.yaml"


class BookingSettings(ServiceSettings):
    service_name: str = "booking"
    grpc_port: int = Field(50052, ge=0, le=65535)
    # The region's care services, contact types and video combination (YAML, see config/rjl.yaml).
    booking_options_file: Path = DEFAULT_OPTIONS_FILE
    # Cosmic Link (secure care messaging) HTTP endpoint: required unless switched off
    # (SVPL_COSMIC_LINK_ENABLED=false: invitations by secure message wait in the outbox, counted in
    # svpl_outbox_undeliverable_messages, until it is switched on).
    cosmic_link_enabled: bool = True
    cosmic_link_url: str = ""
    cosmic_link_token: str = Field("", repr=False)
    cosmic_link_timeout_seconds: float = Field(10.0, gt=0)
    # Outbox dispatcher: lease (longer than any delivery), poll interval, backoff.
    outbox_lease_seconds: float = Field(30.0, gt=0)
    outbox_poll_seconds: float = Field(0.5, gt=0)
    outbox_backoff_base_seconds: float = Field(1.0, gt=0)
    outbox_backoff_cap_seconds: float = Field(300.0, gt=0)
    # Roster unreachable at create: the booking keeps meeting_pending and the dispatcher
    # retries room creation, first after this delay (the request path tries once inline).
    meeting_retry_delay_seconds: float = Field(5.0, ge=0)
    # Timeout of calls to roster and identity.
    call_timeout_seconds: float = Field(5.0, gt=0)

    @field_validator("cosmic_link_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (or empty)")
        return value

    @model_validator(mode="after")
    def _integrations(self):
        require_integration(self, "cosmic_link_enabled", "cosmic_link_url",
                            then="invitations by secure message wait in the outbox until it is switched on")
        return self
