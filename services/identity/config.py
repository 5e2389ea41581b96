from pydantic import Field

from services.runtime.config import ServiceSettings


class IdentitySettings(ServiceSettings):
    service_name: str = "identity"
    grpc_port: int = Field(50051, ge=0, le=65535)
    # Directory of Ed25519 signing keys (<kid>.pem); the newest signs. A mounted Secret in Kubernetes.
    signing_keys_dir: str
