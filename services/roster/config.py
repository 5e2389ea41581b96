from pydantic import Field

from services.runtime.config import ServiceSettings


class RosterSettings(ServiceSettings):
    service_name: str = "roster"
    grpc_port: int = Field(50053, ge=0, le=65535)
