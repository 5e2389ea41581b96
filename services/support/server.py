"""Support service assembly: settings → routing table → storage → domain → servicer → Component.

The routing table is loaded and validated first: a bad table stops start-up with a
message naming the rule, before anything else is opened.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from svpl.support.v1 import support_pb2, support_pb2_grpc

from services.runtime import auth, clients, mongo
from services.runtime.access_log import AccessLog
from services.runtime.server import Binding, Component, Resources
from services.support import routing_table
from services.support.config import SupportSettings
from services.support.peers import Peers
from services.support.servicer import ACCESS, SupportServicer
from services.support.tickets import Tickets

log = logging.getLogger("svpl.support")


async def build(settings: SupportSettings) -> tuple[Component, auth.KeySet]:
    routing = routing_table.load(routing_table.path_for(settings.region, settings.support_routing_file))
    if routing.region != settings.region:
        raise routing_table.RoutingTableError(
            f"svpl: routing table is for region {routing.region!r} but SVPL_REGION is {settings.region!r}")
    async with Resources() as opened:
        identity = opened.closing(clients.channel(settings.identity_address, settings.client_tls))
        db = opened.closing(mongo.connect(settings.mongodb_uri, settings.service_name))
        peers = opened.closing(Peers(settings.roster_address, settings.booking_address, settings.media_address,
                                     settings.service_token, settings.support_evidence_timeout_seconds,
                                     settings.client_tls, settings.tls_media_server_name))
        access = opened.closing(AccessLog.for_service(settings, db))
        # The desk's live change feed (one change stream, shared by the open desk pages) on a pool of its own.
        watch = opened.closing(mongo.connect(settings.mongodb_uri, f"{settings.service_name}-watch",
                                             settings.watch_pool_size))
        tickets = Tickets(db[settings.database_name], routing, peers, access, settings.support_description_max_chars,
                          watch[settings.database_name])
        # A follow-up younger than this may still be running in a live request.
        settled = dt.timedelta(seconds=3 * settings.support_evidence_timeout_seconds + 5)

        async def housekeeping() -> None:
            """Refresh the open-tickets gauge and finish follow-ups a restart cut short."""
            while True:
                try:
                    await tickets.refresh_gauge()
                    await tickets.sweep(settled)
                except Exception:
                    log.warning("support housekeeping failed; retrying", exc_info=True)
                await asyncio.sleep(settings.support_sweep_seconds)

        binding = Binding(
            support_pb2.DESCRIPTOR.services_by_name["SupportService"],
            SupportServicer(tickets),
            support_pb2_grpc.add_SupportServiceServicer_to_server,
            ACCESS,
        )
        log.info("support routing: region %s, %d queues, %d rules, default %s",
                 routing.region, len(routing.queues), len(routing.rules), routing.default_queue)
        keys = clients.service_keyset(settings, identity)
        component = Component([binding], resources=opened.pop_all(), indexes=[tickets, access], mongo=db,
                              background={"svpl-support-housekeeping": housekeeping})
        return component, keys
