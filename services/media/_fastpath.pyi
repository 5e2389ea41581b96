# Types of services/media/_fastpath, the module scripts/build_fastpath.py builds from fastpath.c.
from typing import Any

MAX_PLAIN: int
HISTORY: int
WINDOW: int
FAN_PYTHON: int
FAN_REST: int
FAN_REFUSED: int
FAN_FAILED: int

class Route:
    gso: bool
    payload_type: int
    first: int
    sequence_offset: int
    timestamp_offset: int
    sequence: int
    last_timestamp: int
    last_time: float
    armed: bool
    sends: int
    ring: Ring
    @property
    def header(self) -> bytes | None: ...
    def __init__(self) -> None: ...
    def target(self, sock: Any, host: str, port: int, protect: int, context: int, session: Any, sender: Any, dtls: Any,
               connected: Any, nominated: dict[Any, Any], pair: Any, transport: Any) -> None: ...
    def set_header(self, header: bytes, at: int, /) -> None: ...
    def settle(self) -> None: ...

class Ring:
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> bytes | None: ...
    def __setitem__(self, index: int, value: bytes | None, /) -> None: ...

def send(route: Route, packets: list[Any], abs_send_time: int, ntp: int, /) -> tuple[int, list[bytes] | None, bool]: ...
def fan_out(routes: list[Route], packets: list[Any], abs_send_time: int, ntp: int,
            /) -> list[tuple[int, int, list[bytes] | BaseException | None]] | None: ...

# The receive side (the section at the end of fastpath.c).
class ReceivedRtp(tuple[Any, ...]):
    ssrc: int
    payload_type: int
    marker: int
    sequence_number: int
    timestamp: int
    payload: bytes
    padding_size: int
    abs_send_time: int | None

def parse_rtp(data: bytes, abs_send_time_id: int, vp8: bool, /) -> ReceivedRtp | None: ...

class RateCounter:
    def __init__(self, window_size: int, scale: int = 8000) -> None: ...
    def add(self, value: int, now_ms: int, /) -> None: ...
    def rate(self, now_ms: int, /) -> int | None: ...
    def reset(self) -> None: ...
    def load(self, origin_index: int, origin_ms: int | None, counts: list[int], values: list[int], /) -> None: ...
