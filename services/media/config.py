import ipaddress
import socket

from pydantic import Field, ValidationInfo, field_validator

from services.media.ports import PortRange
from services.media.rtc_internals import fastpath_available
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
    # Forwarded packets re-headed, SRTP-protected and sent by compiled code (services/media/fastpath.c, built
    # by `make install` and in the image), and a publication's RTP received by the lean path
    # (rtc_internals.LeanReceive); false: their references, rtc_internals.RtpOut's Python loop and aiortc's
    # own receive path (slower).
    compiled_forwarding: bool = Field(True, validate_default=True)
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
    # Echo test rooms this instance takes at once, as a share of capacity_participants and reserved on top
    # of it: floor(share x capacity), at least 1 (0 turns test rooms off); one per person (a new one replaces
    # the person's previous one); over it RESOURCE_EXHAUSTED. It counts peer connections, behind TURN too.
    # With a port range test rooms bind only the ports beyond capacity_participants (at most their share).
    test_room_share: float = Field(0.1, ge=0, le=1)
    # Kubernetes: when set, the pod-deletion-cost updater runs (see pod_deletion_cost.py).
    pod_name: str = ""
    # UDP ports of the peer connections' ICE host sockets (services/media/ports.py): 0/0 = ephemeral
    # (behind TURN); both set = every socket inside min..max (published directly, chart turn.enabled=false).
    # One port per peer connection and host address (max-bundle): the range must hold at least
    # capacity_participants ports; echo test rooms use only the ports beyond that (see test_room_share),
    # so a range of exactly capacity_participants ports has none for them.
    rtc_port_min: int = Field(0, ge=0, le=65535)
    rtc_port_max: int = Field(0, ge=0, le=65535)
    # The node's address when the pod's ports are published on it (hostPort, chart turn.enabled=false):
    # answers carry it as a candidate next to the pod's own (ports.advertise_node_address). Empty: none.
    node_ip: str = ""

    @field_validator("compiled_forwarding")
    @classmethod
    def _compiled_forwarding(cls, on: bool) -> bool:
        if on and not fastpath_available():
            raise ValueError("services/media/_fastpath is not built (fastpath.c): run `make install`, or set"
                             " SVPL_COMPILED_FORWARDING=false for the slower Python path")
        return on

    @field_validator("node_ip")
    @classmethod
    def _node_ip(cls, value: str) -> str:
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"must be an IP address (the node's, from status.hostIP), not {value!r}") from None
        return value

    @field_validator("rtc_port_min")
    @classmethod
    def _rtc_port_min(cls, low: int) -> int:
        if low and low < 1024:
            raise ValueError(f"must be 0 (ephemeral ports) or between 1024 and 65535, not {low}")
        return low

    @field_validator("rtc_port_max")
    @classmethod
    def _rtc_port_max(cls, high: int, info: ValidationInfo) -> int:
        if "rtc_port_min" not in info.data:  # SVPL_RTC_PORT_MIN itself is invalid (reported on its own)
            return high
        low = info.data["rtc_port_min"]
        if bool(low) != bool(high):
            raise ValueError("SVPL_RTC_PORT_MIN and SVPL_RTC_PORT_MAX are set together or not at all"
                             f" (SVPL_RTC_PORT_MIN={low}, SVPL_RTC_PORT_MAX={high})")
        if high and high < low:
            raise ValueError(f"must not be below SVPL_RTC_PORT_MIN ({low}), got {high}")
        capacity = info.data.get("capacity_participants", 0)
        if high and high - low + 1 < capacity:
            raise ValueError(f"the range {low}-{high} holds {high - low + 1} ports, fewer than "
                             f"SVPL_CAPACITY_PARTICIPANTS ({capacity}): each participant needs a port")
        return high

    @property
    def rtc_ports(self) -> PortRange | None:
        return PortRange(self.rtc_port_min, self.rtc_port_max) if self.rtc_port_min else None

    @property
    def address(self) -> str:
        return self.advertised_address or f"{self.grpc_host}:{self.grpc_port}"
