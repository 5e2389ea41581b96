"""Dial-in service assembly: settings → peers → call flow → SIP endpoint → Component.

On SIGTERM the instance stops taking calls (new INVITEs get 503, so the trunk tries another
instance) and keeps the calls it has until they end, within the grace period."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

from svpl.dialin.v1 import dialin_pb2, dialin_pb2_grpc

from services.dialin import entry
from services.dialin.audio import Prompts
from services.dialin.calls import Dialin, Limits
from services.dialin.config import DialinSettings
from services.dialin.peers import Media, Roster
from services.dialin.servicer import ACCESS, DialinServicer
from services.dialin.sip import DigestCheck, Endpoint, MediaPolicy, ServerTls
from services.runtime import auth, clients
from services.runtime.server import Binding, Component, Resources


@dataclass
class DialinComponent(Component):
    """dialin's component, with its call flow and SIP endpoint at hand for in-process tests and the benchmark."""

    dialin: Dialin = field(kw_only=True)
    endpoint: Endpoint = field(kw_only=True)


def make_dialin(settings: DialinSettings, roster: Roster, media: Media) -> Dialin:
    limits = Limits(
        max_entries_per_call=settings.max_entries_per_call, entry_timeout_seconds=settings.entry_timeout_seconds,
        lobby_timeout_seconds=settings.lobby_timeout_seconds, lobby_repeat_seconds=settings.lobby_repeat_seconds,
        recheck_seconds=settings.recheck_seconds, max_calls=settings.max_calls, audio_slots=settings.audio_slots,
        join_timeout_seconds=settings.join_timeout_seconds)
    rate = entry.RateLimit(settings.entries_per_number_per_hour, 3600.0, settings.entries_per_minute_total, 60.0)
    digest = DigestCheck(settings.trunk_realm, settings.trunk_username, settings.trunk_password,
                         settings.connection_key.encode()) if settings.trunk_username else None
    return Dialin(roster, media, Prompts(), limits, rate, settings.trunks, settings.connection_key.encode(), digest)


async def build(settings: DialinSettings) -> tuple[Component, auth.KeySet]:
    async with Resources() as opened:
        identity_channel = opened.closing(clients.channel(settings.identity_address))
        roster_channel = opened.closing(clients.channel(settings.roster_address))
        media = opened.closing(Media(settings.service_token))
        dialin = make_dialin(settings, Roster(roster_channel, settings.service_token), media)
        tls = (settings.sip_tls_port, ServerTls(settings.sip_tls_cert_file, settings.sip_tls_key_file,
                                                settings.sip_tls_client_ca_file)) if settings.sip_tls_port else None
        policy = MediaPolicy(tuple(settings.codecs), settings.require_srtp, settings.sdes_over_insecure)
        endpoint = Endpoint(settings.sip_host, settings.sip_port, (settings.rtp_port_min, settings.rtp_port_max),
                            dialin.handle, settings.advertised_ip, policy, tls)
        opened.closing(endpoint, endpoint.stop)

        async def drain(grace: float) -> None:
            dialin.accepting = False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(dialin.idle.wait(), grace)

        binding = Binding(dialin_pb2.DESCRIPTOR.services_by_name["DialinService"],
                          DialinServicer(dialin, socket.gethostname()),
                          dialin_pb2_grpc.add_DialinServiceServicer_to_server, ACCESS)
        component = DialinComponent([binding], resources=opened.pop_all(), start=endpoint.start, drain=drain,
                                    dialin=dialin, endpoint=endpoint)
        # Only services call it (no person's session to check against revocations): identity's keys alone.
        return component, clients.identity_keyset(identity_channel)
