"""Networks a participant really has, built on this machine with Linux network namespaces.

`Topology` makes namespaces and veth links with unique names and a private /16 of its own
(10.<n>.0.0/16, checked unused), routes that /16 to a blackhole in the root namespace (so no packet
for those addresses ever leaves the machine) and removes everything on `close`, also after a
failure. Used by tests/network (and bench/network.py). The media service runs in-process in the root
namespace ("the cluster"); a client peer
runs on a `NetnsLoop`: an asyncio loop on its own thread that has entered the client's namespace
with setns(2), so the sockets aiortc opens there are the client's. setns on one thread changes only
that thread's network namespace (Python 3.11 has no os.setns: libc's, through ctypes).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import ipaddress
import os
import random
import secrets
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ifaddr

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def available() -> str:
    """Why namespaces cannot be built here ("" when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "iptables", "tc") if shutil.which(tool) is None]
    if shutil.which("turnserver") is None:
        missing.append("turnserver (coturn)")
    return f"missing {', '.join(missing)} (scripts/system-deps.sh installs them)" if missing else ""


def run(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
    return result


def ipv4_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice's host addresses, IPv4 only, of the calling thread's namespace (ifaddr asks the kernel
    from this thread): the namespaces here are IPv4-only."""
    return [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
            if isinstance(ip.ip, str) and not ip.ip.startswith("127.")]


class Topology:
    """Namespaces and links of one test; `close` removes them all."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.net = self._free_net()
        self.namespaces: list[str] = []
        self.root_links: list[str] = []
        self._subnets = 0
        run("ip", "route", "add", "blackhole", str(self.net))

    @staticmethod
    def _free_net() -> ipaddress.IPv4Network:
        used = run("ip", "-4", "route", "show", "table", "all").stdout + run("ip", "-4", "addr").stdout
        for _ in range(50):
            net = ipaddress.IPv4Network(f"10.{random.randrange(200, 250)}.0.0/16")
            if f"10.{net.network_address.packed[1]}." not in used:
                return net
        raise RuntimeError("no free 10.200-249.0.0/16 for a test network")

    def namespace(self, role: str) -> str:
        name = f"svpl-{self.tag}-{role}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "link", "set", "lo", "up", ns=name)
        return name

    def link(self, a: str | None, b: str | None) -> tuple[str, str, str, str]:
        """A veth pair between namespaces a and b (None: the root namespace) on a /24 of its own:
        (a's interface, a's address .1, b's interface, b's address .2)."""
        self._subnets += 1
        base = f"10.{self.net.network_address.packed[1]}.{self._subnets}"
        if_a, if_b = f"sv{self.tag}{self._subnets}a", f"sv{self.tag}{self._subnets}b"
        run("ip", "link", "add", if_a, "type", "veth", "peer", "name", if_b)
        for ns, ifname, addr in ((a, if_a, f"{base}.1"), (b, if_b, f"{base}.2")):
            if ns is None:
                self.root_links.append(ifname)
            else:
                run("ip", "link", "set", ifname, "netns", ns)
            run("ip", "addr", "add", f"{addr}/24", "dev", ifname, ns=ns)
            run("ip", "link", "set", ifname, "up", ns=ns)
        return if_a, f"{base}.1", if_b, f"{base}.2"

    def close(self) -> None:
        for ns in self.namespaces:
            run("ip", "netns", "del", ns, check=False)  # its interfaces (and their peers) go with it
        for ifname in self.root_links:
            run("ip", "link", "del", ifname, check=False)
        run("ip", "route", "del", "blackhole", str(self.net), check=False)


class NetnsLoop:
    """An asyncio loop on a thread inside network namespace `ns`; `call` runs a coroutine there."""

    def __init__(self, ns: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._failed: BaseException | None = None
        ready = threading.Event()

        def main() -> None:
            try:
                fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
                try:
                    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns into {ns}")
                finally:
                    os.close(fd)
            except BaseException as exc:  # noqa: BLE001 - handed to the constructor's thread
                self._failed = exc
                ready.set()
                return
            asyncio.set_event_loop(self.loop)
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name=f"netns-{ns}", daemon=True)
        self.thread.start()
        ready.wait(10)
        if self._failed is not None:
            raise self._failed

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """`call` from a thread that waits for it (no event loop of its own)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


class Coturn:
    """Debian's coturn (`turnserver`) on one address: TURN over UDP/TCP on 3478 and over TLS on
    `tls_port`, TURN REST API credentials (use-auth-secret), relay ports `relay` (min, max)."""

    def __init__(self, address: str, secret: str, cert: str, key: str, relay: tuple[int, int],
                 workdir: str, tls_port: int = 443) -> None:
        self.address, self.tls_port = address, tls_port
        self.log = open(os.path.join(workdir, "turnserver.log"), "w")
        self.process = subprocess.Popen(
            ["turnserver", "-n", "--log-file=stdout", "--simple-log", f"--pidfile={workdir}/turnserver.pid",
             f"--listening-ip={address}", f"--relay-ip={address}", "--listening-port=3478",
             f"--tls-listening-port={tls_port}", f"--cert={cert}", f"--pkey={key}",
             f"--min-port={relay[0]}", f"--max-port={relay[1]}", "--realm=svpl.test", "--use-auth-secret",
             f"--static-auth-secret={secret}", "--fingerprint", "--no-cli", "--no-dtls", "--no-multicast-peers",
             "--no-software-attribute", f"--userdb={workdir}/turndb"],
            stdout=self.log, stderr=subprocess.STDOUT)

    async def started(self) -> None:
        """Returns once the TLS listener accepts connections, within 10 s (as devstack/slapd.py waits)."""
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"turnserver exited ({self.process.returncode}): see {self.log.name}")
            try:
                _, writer = await asyncio.open_connection(self.address, self.tls_port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


class _RelayListener(asyncio.DatagramProtocol):
    """One port of a DelayRelay: what a client sends to it goes on through the relay."""

    def __init__(self, relay: DelayRelay, port: int) -> None:
        self.relay, self.port = relay, port

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        asyncio.ensure_future(self.relay._forward(self.transport, self.port, data, addr))


class DelayRelay:
    """A user-space UDP relay with added delay (this kernel has no netem): on `address`, every port
    of `ports` forwards to the same port on `target`, each client through a socket of its own (as
    a NAT would), both ways after `delay` seconds; a reply for which `lose(reply)` is true is dropped
    (a loss on the way back). Runs on the loop it is started on (a NetnsLoop's for a relay inside a
    namespace)."""

    def __init__(self, address: str, ports: range, target: str, delay: float,
                 lose: Callable[[bytes], bool] = lambda _reply: False) -> None:
        self.address, self.ports, self.target, self.delay, self.lose = address, ports, target, delay, lose
        self._listeners: list[asyncio.DatagramTransport] = []
        self._upstream: dict[tuple[tuple[str, int], int], asyncio.Future] = {}

    def _later(self, send) -> None:
        if self.delay > 0:
            asyncio.get_running_loop().call_later(self.delay, send)
        else:
            send()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for port in self.ports:
            transport, _ = await loop.create_datagram_endpoint(functools.partial(_RelayListener, self, port),
                                                               local_addr=(self.address, port))
            self._listeners.append(transport)

    async def _forward(self, listener: asyncio.DatagramTransport, port: int, data: bytes, client) -> None:
        key = (client, port)
        if key not in self._upstream:  # a socket of its own towards the target, opened once
            relay = self

            class Back(asyncio.DatagramProtocol):
                def datagram_received(self, reply: bytes, addr) -> None:
                    if not relay.lose(reply):
                        relay._later(lambda: listener.sendto(reply, client))

            self._upstream[key] = asyncio.ensure_future(asyncio.get_running_loop().create_datagram_endpoint(
                Back, remote_addr=(self.target, port)))
        upstream, _ = await self._upstream[key]
        self._later(lambda: upstream.sendto(data))

    async def stop(self) -> None:
        for t in self._listeners:
            t.close()
        for opened in self._upstream.values():
            if opened.done() and not opened.exception():
                opened.result()[0].close()


class TcpForward:
    """Forwards each TCP connection accepted on `listen` to `target`. Sockets belong to the network
    namespace of the thread that makes them: `listen` is an (address, port) to listen on in the
    namespace of the loop that runs `start` (a NetnsLoop's), or a socket already listening, made in
    another namespace; the connections to `target` are made from the loop's namespace.
    Hand-written: socat cannot enter a namespace by itself, and `ip netns exec socat` per
    connection would start a process for each. A connection to `target` is retried for up to
    `patience` seconds (the program behind it may still be starting)."""

    def __init__(self, listen: tuple[str, int] | socket.socket, target: tuple[str, int], patience: float = 10.0) -> None:
        self.listen, self.target, self.patience = listen, target, patience
        self.server: asyncio.Server | None = None
        self._open: set[asyncio.Task] = set()

    async def start(self) -> None:
        sock = self.listen if isinstance(self.listen, socket.socket) else socket.create_server(self.listen)
        self.server = await asyncio.start_server(self._accepted, sock=sock)

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._connection(reader, writer))
        self._open.add(task)
        task.add_done_callback(self._open.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deadline = time.monotonic() + self.patience
        while True:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
                break
            except OSError:
                if time.monotonic() > deadline:
                    writer.close()
                    return
                await asyncio.sleep(0.05)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in tuple(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)


# ------------------------------------------------------------------------------------------------
# The networks a participant has. Each returns the client's namespace, the media settings the
# network needs, and the client's ICE servers; whatever runs (coturn, a relay) is closed by `close`.


@dataclass
class Network:
    client_ns: str
    media: dict = field(default_factory=dict)  # media settings (overrides)
    ice_servers: list = field(default_factory=list)  # aiortc RTCIceServer for the client
    facts: dict = field(default_factory=dict)  # addresses the tests check
    _closers: list = field(default_factory=list)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            result = closer()
            if asyncio.iscoroutine(result):
                await result


def behind_nat(topo: Topology) -> Network:
    """A nurse's 4G or a home router: a private address behind a NAT that lets the client's own UDP
    (and the answers) through and nothing else in."""
    client_ns, router = topo.namespace("client"), topo.namespace("nat")
    _, root_addr, wan, _ = topo.link(None, router)  # the cluster .1 <-> the router's WAN side .2
    _, lan_addr, _, client_addr = topo.link(router, client_ns)
    for rule in (["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                 ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wan, "-j", "MASQUERADE"],
                 ["iptables", "-A", "FORWARD", "-i", wan, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
                  "-j", "ACCEPT"],
                 ["iptables", "-A", "FORWARD", "-i", wan, "-j", "DROP"],
                 ["ip", "route", "add", "default", "via", root_addr]):
        run(*rule, ns=router)
    run("ip", "route", "add", "default", "via", lan_addr, ns=client_ns)
    return Network(client_ns, facts={"client_addr": client_addr})


async def https_only(topo: Topology, workdir: str, certificate: Callable[[str], tuple[str, str, str]]) -> Network:
    """A hospital network: the firewall lets out only TCP to port 443. coturn (TLS on 443) is the way
    in, with `certificate(address)` -> (certificate, key, CA) files; the client process must trust
    the CA (SSL_CERT_FILE=facts["ca"]: aioice verifies with Python's default context)."""
    from aiortc import RTCIceServer

    from services.gateway.routes.joining import turn_credentials

    client_ns = topo.namespace("client")
    _, turn_addr, _, _ = topo.link(None, client_ns)
    run("ip", "route", "add", "default", "via", turn_addr, ns=client_ns)
    for rule in (["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"],
                 ["-A", "OUTPUT", "-p", "tcp", "--dport", "443", "-j", "ACCEPT"],
                 ["-A", "OUTPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                 ["-P", "OUTPUT", "DROP"],
                 ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
                 ["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                 ["-P", "INPUT", "DROP"]):
        run("iptables", *rule, ns=client_ns)
    cert, key, ca = certificate(turn_addr)
    secret = secrets.token_urlsafe(24)
    low = random.randrange(50000, 60000, 100)
    coturn = Coturn(turn_addr, secret, cert, key, (low, low + 99), workdir)
    network = Network(client_ns, facts={"turn_addr": turn_addr, "ca": ca},
                      _closers=[coturn.stop])
    await coturn.started()
    # As the gateway mints them (GET /api/ice-servers): TURN REST API credentials, short-lived.
    username, credential = turn_credentials(secret, "a-session", 300, time.time())
    network.ice_servers = [RTCIceServer(urls=f"turns:{turn_addr}:443?transport=tcp", username=username,
                                        credential=credential)]
    return network


def _published_ports() -> tuple[int, int]:
    low = random.randrange(42000, 48000, 20)
    return low, low + 19


def node_address_only(topo: Topology) -> Network:
    """turn.enabled=false: the node publishes the pod's UDP range (hostPort: the same port numbers,
    DNAT to the pod) and nothing else of the pod network is reachable; media is told the node's
    address (SVPL_NODE_IP). The root namespace is the pod."""
    client_ns, node = topo.namespace("client"), topo.namespace("node")
    _, pod_ip, node_out, _ = topo.link(None, node)
    _, node_ip, _, _ = topo.link(node, client_ns)
    low, high = _published_ports()
    for rule in (["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                 ["iptables", "-t", "nat", "-A", "PREROUTING", "-d", node_ip, "-p", "udp", "--dport",
                  f"{low}:{high}", "-j", "DNAT", "--to-destination", pod_ip],
                 ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", node_out, "-j", "MASQUERADE"],
                 ["iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "DNAT,ESTABLISHED,RELATED",
                  "-j", "ACCEPT"],
                 ["iptables", "-P", "FORWARD", "DROP"]):
        run(*rule, ns=node)
    run("ip", "route", "add", "default", "via", node_ip, ns=client_ns)
    return Network(client_ns, media={"node_ip": node_ip, "rtc_port_min": low, "rtc_port_max": high,
                                     "capacity_participants": 10},
                   facts={"node_ip": node_ip, "ports": (low, high)})


WEAK_LOSS = ["INPUT", "-p", "udp", "-m", "statistic", "--mode", "random", "--probability", "0.02", "-j", "DROP"]


async def weak_link(topo: Topology) -> Network:
    """A patient's home on a poor mobile link: 2 % random loss each way (iptables statistic), 500
    kbit/s each way (tc tbf), 200 ms added each way by a user-space relay (no netem here), which is
    the only way through for media: media's answer names the relay's address as a node's.
    facts["clear"]() makes the link good, facts["lose_rtp"](payload types) loses those RTP packets
    through it (() stops doing so); facts["route_tcp"](port) lets the client reach that TCP port of the cluster's
    address (facts["cluster_addr"]) through the link too (the portal's HTTP: routed, sharing the
    500 kbit/s, without the loss and delay the relay adds to UDP); nothing else is routed."""
    client_ns, link_ns = topo.namespace("client"), topo.namespace("weak")
    _, media_addr, wan, wan_addr = topo.link(None, link_ns)
    lan, relay_addr, _, client_addr = topo.link(link_ns, client_ns)
    run("ip", "route", "add", "default", "via", relay_addr, ns=client_ns)

    routed: list[int] = []

    def route_tcp(port: int) -> None:
        if not routed:
            run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=link_ns)
            run("iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT",
                ns=link_ns)
            run("iptables", "-P", "FORWARD", "DROP", ns=link_ns)
            # The way back (goes with the root end of the link when the topology closes).
            run("ip", "route", "add", str(ipaddress.IPv4Interface(f"{client_addr}/24").network), "via", wan_addr)
        run("iptables", "-A", "FORWARD", "-i", lan, "-d", media_addr, "-p", "tcp", "--dport", str(port),
            "-j", "ACCEPT", ns=link_ns)
        routed.append(port)

    low, high = _published_ports()
    run("iptables", "-A", *WEAK_LOSS, ns=link_ns)
    for ifname in (lan, wan):
        run("tc", "qdisc", "add", "dev", ifname, "root", "tbf", "rate", "500kbit", "burst", "16kb",
            "latency", "400ms", ns=link_ns)
    link_loop = NetnsLoop(link_ns)
    relay = DelayRelay(relay_addr, range(low, high + 1), media_addr, delay=0.2)

    async def stop() -> None:
        await link_loop.call(relay.stop())
        link_loop.close()

    network = Network(client_ns, media={"node_ip": relay_addr, "rtc_port_min": low, "rtc_port_max": high,
                                        "capacity_participants": 10}, _closers=[stop],
                      facts={"cluster_addr": media_addr})
    await link_loop.call(relay.start())

    def clear() -> None:
        relay.delay = 0
        run("iptables", "-D", *WEAK_LOSS, ns=link_ns)
        for ifname in (lan, wan):
            run("tc", "qdisc", "del", "dev", ifname, "root", ns=link_ns)

    lost_types: list[list[str]] = []

    def lose_rtp(payload_types: tuple[int, ...]) -> None:
        """Every RTP packet of these payload types through the link lost (both ways, retransmissions
        too when their type is given), or, with (), none any more. RTP headers are not encrypted
        (SRTP, RFC 3711): iptables' u32 match reads the payload type, byte 1 of the UDP payload."""
        while lost_types:
            run("iptables", "-D", *lost_types.pop(), ns=link_ns)
        if payload_types:
            rule = ["INPUT", "-p", "udp", "-m", "u32", "--u32",
                    "0>>22&0x3C@8>>16&0x7F=" + ",".join(map(str, payload_types)), "-j", "DROP"]
            run("iptables", "-I", *rule, ns=link_ns)
            lost_types.append(rule)

    network.facts.update(clear=clear, lose_rtp=lose_rtp, route_tcp=route_tcp)
    return network
