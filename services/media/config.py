import socket

from pydantic import Field

from services.runtime.config import ServiceSettings


class MediaSettings(ServiceSettings):
    service_name: str = "media"
    grpc_port: int = Field(50054, ge=0, le=65535)
    # This instance's id: join tokens are bound to it (default: the host name, the pod name in Kubernetes).
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1)
    # Where participants' signalling reaches this instance (handed to roster and gateway); default grpc host:port.
    advertised_address: str = ""
    # Participants this instance takes before it stops accepting new rooms.
    capacity_participants: int = Field(60, ge=1)
    # Keyframe requests to one publisher: at most one per this many seconds.
    keyframe_interval_seconds: float = Field(0.3, gt=0)
    # Kernel buffer of each peer connection's UDP socket (capped by net.core.rmem_max / wmem_max).
    socket_buffer_bytes: int = Field(4 << 20, ge=64 << 10)
    # Quality thresholds above which a participant's connection is poor.
    poor_round_trip_ms: float = Field(300.0, gt=0)
    poor_packet_loss: float = Field(0.05, gt=0, le=1)
    poor_jitter_ms: float = Field(50.0, gt=0)
    # Connection reports to roster are retried (backoff up to this) while roster is unreachable.
    report_retry_max_seconds: float = Field(5.0, gt=0)
    # An echo test room ends by itself after this long.
    test_room_seconds: float = Field(300.0, gt=0)
    # Kubernetes: when set, the pod-deletion-cost updater runs (see pod_deletion_cost.py).
    pod_name: str = ""

    @property
    def address(self) -> str:
        return self.advertised_address or f"{self.grpc_host}:{self.grpc_port}"
