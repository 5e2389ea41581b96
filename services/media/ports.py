"""ICE host sockets inside a fixed UDP port range (SVPL_RTC_PORT_MIN/MAX).

Without TURN (the chart's turn.enabled=false) browsers reach a media pod directly on the ports
its node publishes, so every ICE host socket must be bound inside that range. aioice 0.13 (pinned,
under aiortc 1.16) has no option to choose the port: upstream has asked for one since aioice issue
#47, and the pull requests adding it (#63, #112 `port_range`) are not merged in any release, and
aiortc would not pass it through anyway. So this is hand-written: :func:`install` has
``rtc_internals.intercept_host_candidate_binds`` (the one place that knows how aioice binds its host
candidates: the running loop's ``create_datagram_endpoint`` with port 0) hand every such bind to
this module; inside a :func:`scope` it tries the range's ports from a random offset, skipping those
in use (EADDRINUSE), and outside one it binds port 0 as before. tests/media/test_aiortc_internals.py
fails if aioice stops binding that way.

A full range is not a port conflict: the bind fails with EADDRINUSE like any other (aioice then
skips the address without leaving a socket), and the scope records the shortage, so the caller
refuses the offer (RESOURCE_EXHAUSTED) rather than answer without candidates.

Echo test rooms have their own part of the range (:meth:`PortRange.split`, rooms.py): the ports
beyond capacity_participants, at most their share. A test room's binds are scoped to that part only;
a meeting's binds try the meetings' part first and then the test rooms' part, so test rooms can never
hold a port a meeting needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import ipaddress
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from services.media.rtc_internals import candidate_foundation, candidate_priority, intercept_host_candidate_binds


@dataclass(frozen=True)
class PortRange:
    min: int
    max: int

    def __len__(self) -> int:
        return self.max - self.min + 1

    def ports(self) -> list[int]:
        """Every port once, starting at a random offset (spreads binds, avoids retrying the same port)."""
        start = random.randrange(len(self))
        return [self.min + (start + i) % len(self) for i in range(len(self))]

    def split(self, tail: int) -> tuple[PortRange, PortRange | None]:
        """(the first len - tail ports, the last `tail` ports or None when tail is 0); 0 <= tail < len."""
        if not 0 <= tail < len(self):
            raise ValueError(f"cannot keep {tail} of the {len(self)} ports {self.min}-{self.max} apart")
        if tail == 0:
            return self, None
        return PortRange(self.min, self.max - tail), PortRange(self.max - tail + 1, self.max)


@dataclass
class Usage:
    """What binds in one scope did: the ports bound, and whether the ranges ran out."""

    ports: PortRange
    # Tried, in this order, after `ports` is full.
    then: tuple[PortRange, ...] = ()
    bound: list[int] = field(default_factory=list)
    exhausted: bool = False

    def order(self) -> list[int]:
        return [port for r in (self.ports, *self.then) for port in r.ports()]


_scope: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("svpl_media_rtc_ports", default=None)


class RangeExhausted(OSError):
    def __init__(self, ports: PortRange) -> None:
        super().__init__(errno.EADDRINUSE, f"no free media port in {ports.min}-{ports.max}")


@contextlib.contextmanager
def scope(ports: PortRange | None, *then: PortRange | None) -> Iterator[Usage | None]:
    """Port-0 UDP binds in this context (and tasks it starts, e.g. aiortc's ICE gathering) use `ports`,
    then the ranges in `then` (Nones skipped). None: ephemeral ports as usual. Installs the hook on the
    running loop if it is not there yet."""
    if ports is None:
        yield None
        return
    install(asyncio.get_running_loop())
    usage = Usage(ports, tuple(r for r in then if r is not None))
    token = _scope.set(usage)
    try:
        yield usage
    finally:
        _scope.reset(token)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Take over the port of aioice's host candidate binds on `loop`, once; outside a scope they bind
    port 0, exactly as before."""
    intercept_host_candidate_binds(loop, _bind)


async def _bind(open_port: Callable[[int], Awaitable]):
    """One host candidate's bind: `open_port(port)` is aioice's own bind with that port."""
    usage = _scope.get()
    if usage is None:
        return await open_port(0)
    for port in usage.order():
        try:
            result = await open_port(port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        usage.bound.append(port)
        return result
    usage.exhausted = True
    raise RangeExhausted(usage.ports)


def advertise_node_address(sdp: str, node_ip: str) -> str:
    """The answer `sdp` with, after each host candidate of node_ip's address family, the same port on
    the node's address (a server-reflexive candidate: the address the pod's port has outside it).

    With hostPorts (turn.enabled=false) the node publishes every port of the range as the same port
    number, but the pod gathers only its pod-network address, which browsers outside the cluster
    cannot reach; aiortc has no option to announce another address (no NAT 1:1 mapping as in other
    stacks), so the answer's text gets the node's candidates added here. The pod's own candidates stay
    (in-cluster peers use them). Checks arriving through the node are answered from the same socket."""
    if not node_ip:
        return sdp
    family = ipaddress.ip_address(node_ip).version
    out: list[str] = []
    for line in sdp.splitlines():
        out.append(line)
        if not line.startswith("a=candidate:"):
            continue
        _foundation, component, transport, _priority, address, port, _typ, kind, *_ = line[12:].split()
        if kind != "host" or transport.lower() != "udp" or ipaddress.ip_address(address).version != family:
            continue
        priority = candidate_priority(int(component), "srflx")
        out.append(f"a=candidate:{candidate_foundation('srflx', 'udp', address)} {component} udp {priority} "
                   f"{node_ip} {port} typ srflx raddr {address} rport {port}")
    return "\r\n".join(out) + "\r\n"
