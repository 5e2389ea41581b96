from pydantic import Field

from services.runtime.config import ServiceSettings


class BookingSettings(ServiceSettings):
    service_name: str = "booking"
    grpc_port: int = Field(50052, ge=0, le=65535)
