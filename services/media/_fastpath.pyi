# Types of services/media/_fastpath, the module scripts/build_fastpath.py builds from fastpath.c.
from typing import Any

MAX_PLAIN: int
HISTORY: int

class Route:
    gso: bool
    def __init__(self, sock: Any, host: str, port: int, protect: int, context: int, session: Any) -> None: ...

def send(route: Route, header: bytes, at: int, abs_send_time: int, payload_type: int, first: int,
         sequence_offset: int, timestamp_offset: int, next_sequence: int, packets: list[Any], ring: list[Any],
         direct: bool, /) -> tuple[int, int, int, int, int, list[bytes] | None, bool]: ...

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
