"""make bench-network: time from "join" (the client starts its offer) to the client's first decoded
video frame, on each network of tests/network (built with Linux namespaces by devstack/netns.py),
p50/p95 over repeated joins, next to a loopback baseline measured in the same run (the client in
the media service's own namespace): the ratio says what the network costs. Not a test; needs root
(namespaces, iptables, tc) and coturn (scripts/system-deps.sh).

Each join: a room with one participant on the cluster side (connected first, publishing), then the
client joins and the clock runs until it decodes that participant's first video frame. The peers
are the test suite's aiortc peers (devstack/peers.py); the TURN certificate is made with the
test PKI (devstack/pki.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aioice.ice
from svpl.media.v1 import media_pb2

from bench.timing import pct
from devstack import netns
from devstack.embedded_db import EmbeddedMongo
from devstack.harness import ORDER, System, as_token
from devstack.peers import Peer
from devstack.pki import turn_certificate
from services.identity.tokens import KeyRing

JOINS = int(os.environ.get("BENCH_NETWORK_JOINS", "10"))
FIRST_FRAME_TIMEOUT = 20.0
INSTANCE = "bench-network"


class Bench:
    def __init__(self, system: System, keyring: KeyRing, tokens: dict[str, str]) -> None:
        self.media = system.stub("media")
        self.keyring = keyring
        self.roster_md, self.gateway_md = as_token(tokens["roster"]), as_token(tokens["gateway"])

    async def negotiate(self, meeting_id: str, participant: str, offer: str) -> str:
        token = self.keyring.issue_join_token(meeting_id=meeting_id, participant_id=participant,
                                              media_instance=INSTANCE, ttl=dt.timedelta(minutes=5))[0]
        response = await self.media.Negotiate(media_pb2.NegotiateRequest(join_token=token, sdp_offer=offer),
                                              metadata=self.gateway_md)
        return response.sdp_answer

    async def join_once(self, client: netns.NetnsLoop | None, ice_servers: list) -> float | None:
        """Seconds from the client's join to its first video frame (None: none within the timeout)."""
        def on_client(coro):
            return client.call(coro) if client is not None else coro

        meeting_id = "bench-" + uuid.uuid4().hex[:8]
        await self.media.OpenRoom(media_pb2.OpenRoomRequest(meeting_id=meeting_id), metadata=self.roster_md)
        local = Peer()
        remote: Peer | None = None
        try:
            await local.answer(await self.negotiate(meeting_id, "cluster", await local.offer()))
            await asyncio.wait_for(local.connected.wait(), FIRST_FRAME_TIMEOUT)
            remote = await on_client(_new_peer(ice_servers))
            started = time.monotonic()
            await on_client(remote.answer(await self.negotiate(meeting_id, "client", await on_client(remote.offer()))))
            deadline = started + FIRST_FRAME_TIMEOUT
            while remote.first_video_at() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - a bench
                await asyncio.sleep(0.005)
            first = remote.first_video_at()
            return first - started if first is not None else None
        finally:
            await local.close()
            if remote is not None:
                await on_client(remote.close())
            await self.media.CloseRoom(media_pb2.CloseRoomRequest(meeting_id=meeting_id), metadata=self.roster_md)


async def _new_peer(ice_servers: list) -> Peer:
    return Peer(ice_servers=ice_servers)


async def _case(name: str, build: Callable[[netns.Topology], Awaitable[netns.Network] | netns.Network] | None,
                database: EmbeddedMongo, keys: Path, keyring: KeyRing, tokens: dict[str, str]) -> list[float | None]:
    topo = netns.Topology() if build is not None else None
    network: netns.Network | None = None
    client: netns.NetnsLoop | None = None
    system = None
    try:
        if topo is not None and build is not None:
            built = build(topo)
            network = await built if asyncio.iscoroutine(built) else built  # type: ignore[assignment]
        media = network.media if network else {}
        if network and "ca" in network.facts:
            os.environ["SSL_CERT_FILE"] = network.facts["ca"]
        system = System(database.uri, keys, tokens, overrides={
            "media": {"instance_id": INSTANCE, "log_level": "WARNING", **media},
            "identity": {"log_level": "WARNING"}})
        await system.start(["identity", "media"])
        bench = Bench(system, keyring, tokens)
        client = netns.NetnsLoop(network.client_ns) if network else None
        ice = network.ice_servers if network else []
        await bench.join_once(client, ice)  # warm-up
        return [await bench.join_once(client, ice) for _ in range(JOINS)]
    finally:
        if client is not None:
            client.close()
        if system is not None:
            await system.stop()
        if network is not None:
            await network.close()
        if topo is not None:
            topo.close()
        os.environ.pop("SSL_CERT_FILE", None)


async def main() -> None:
    missing = netns.available()
    if missing:
        sys.exit(f"bench-network: {missing}")
    # Each peer's real host addresses, of its own namespace (aioice's list, IPv4 only).
    aioice.ice.get_host_addresses = netns.ipv4_host_addresses
    # Roster is not started here: media's connection reports to it are retried, and not the point.
    logging.getLogger("svpl.media.reporter").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        directory, keys, turn = Path(tmp), Path(tmp) / "keys", Path(tmp) / "turn"
        keys.mkdir()
        turn.mkdir()
        database = EmbeddedMongo(directory / "db").start()
        keyring = KeyRing.generate()
        keyring.save_current(keys)
        tokens = {name: keyring.issue_service_token(name) for name in ORDER + ["gateway"]}
        cases: list[tuple[str, Callable | None]] = [
            ("loopback (baseline)", None),
            ("behind NAT, UDP open", netns.behind_nat),
            ("TCP 443 only: TURN/TLS", lambda topo: netns.https_only(topo, str(turn), turn_certificate(turn))),
            ("node address only", netns.node_address_only),
            ("weak link 2%/500k/+200ms", netns.weak_link),
        ]
        try:
            print(f"join -> first video frame, {JOINS} joins per network (after one warm-up), same run")
            print(f"{'network':<28}{'p50 ms':>9}{'p95 ms':>9}{'x loopback p50':>16}{'no frame':>10}")
            baseline = None
            for name, build in cases:
                times = await _case(name, build, database, keys, keyring, tokens)
                got = [t for t in times if t is not None]
                if not got:
                    print(f"{name:<28}{'-':>9}{'-':>9}{'-':>16}{len(times):>10}")
                    continue
                p50, p95 = pct(got, 50), pct(got, 95)
                baseline = baseline if baseline is not None else p50
                print(f"{name:<28}{p50:>9.0f}{p95:>9.0f}{p50 / baseline:>16.2f}{len(times) - len(got):>10}")
        finally:
            database.stop()


if __name__ == "__main__":
    asyncio.run(main())
