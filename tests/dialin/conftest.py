"""Dial-in test set-up: identity + media + roster + dialin in-process on the real database, the
dial-in service's SIP port on loopback (the trunk's network, 127.0.0.1/32), and SIPp as the caller."""

from __future__ import annotations

import itertools

import pytest
from svpl.roster.v1 import roster_pb2

from devstack.sipp import free_udp_port
from tests.roster.conftest import World

MEDIA_INSTANCE = "media-dialin-test"
_ports = itertools.count(0)


class DialinWorld(World):
    def __init__(self, system, person_token, service_token, sip_port: int) -> None:
        super().__init__(system, person_token, service_token)
        self.sip = ("127.0.0.1", sip_port)
        self.component = system.running["dialin"].component

    async def reconciliation(self, meeting_id: str) -> roster_pb2.GetReconciliationResponse:
        return await self.roster.GetReconciliation(roster_pb2.GetReconciliationRequest(meeting_id=meeting_id),
                                                   metadata=self.who("coordinator"))


def dialin_settings(sip_port: int, rtp_base: int, **extra) -> dict:
    return {"sip_host": "127.0.0.1", "sip_port": sip_port, "rtp_port_min": rtp_base, "rtp_port_max": rtp_base + 98,
            "trunk_networks": ["127.0.0.1/32"], "connection_key": "k" * 40, "entry_timeout_seconds": 4.0,
            "recheck_seconds": 1.0, "lobby_repeat_seconds": 20.0, **extra}


@pytest.fixture
async def dialin_factory(system_factory, person_token, service_token):
    """dialin_factory(**settings): the system with the dial-in service's settings changed (and
    roster's, with roster={...})."""

    async def make(roster: dict | None = None, **extra) -> DialinWorld:
        sip_port = free_udp_port()
        rtp_base = 30000 + 100 * (next(_ports) % 50)
        system = await system_factory(["identity", "media", "roster", "dialin"],
                                      overrides={"media": {"instance_id": MEDIA_INSTANCE},
                                                 "dialin": dialin_settings(sip_port, rtp_base, **extra),
                                                 "roster": roster or {}})
        return DialinWorld(system, person_token, service_token, sip_port)

    return make


@pytest.fixture
async def dialin_world(dialin_factory):
    return await dialin_factory()
