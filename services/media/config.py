from pydantic import Field

from services.runtime.config import ServiceSettings


class MediaSettings(ServiceSettings):
    service_name: str = "media"
    grpc_port: int = Field(50054, ge=0, le=65535)
