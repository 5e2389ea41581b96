from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.runtime.config import ENV_PREFIX


class GatewaySettings(BaseSettings):
    """The gateway is HTTP, not gRPC: its own settings, the same loading rules."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    service_name: str = "gateway"
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    log_level: str = "INFO"
    region: str = "rjl"
    identity_address: str = "127.0.0.1:50051"
    booking_address: str = "127.0.0.1:50052"
    roster_address: str = "127.0.0.1:50053"
    media_address: str = "127.0.0.1:50054"
    support_address: str = "127.0.0.1:50055"
    # The gateway's own service token (minted by identity).
    service_token: str
    development_login: bool = False
