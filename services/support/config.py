from pydantic import Field

from services.runtime.config import ServiceSettings


class SupportSettings(ServiceSettings):
    service_name: str = "support"
    grpc_port: int = Field(50055, ge=0, le=65535)
