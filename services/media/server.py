"""Media service assembly: settings → storage → domain → servicer → Component."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import uvloop
from svpl.media.v1 import media_pb2, media_pb2_grpc

from services.media import metrics, ports
from services.media.config import MediaSettings
from services.media.quality import Thresholds
from services.media.reporter import ConnectionReporter
from services.media.rooms import MediaRooms
from services.media.servicer import ACCESS, MediaServicer
from services.media.storage import ClosedRooms, UsedJoinTokens
from services.media.tokens import TokenVerifier
from services.runtime import auth, clients, mongo
from services.runtime.server import Binding, Component, Resources

# The media process runs on uvloop (libuv) instead of asyncio's selector loop: a forwarder's loop wakes for
# every datagram it receives (about 2,000 a second at 16 a room: RTP and RTCP), and uvloop's read callback,
# recvfrom and handle cost less per datagram. Alternating A/B, uvloop against asyncio's loop: 0.93-0.96 of
# the CPU at 1 room x 16, 0.81-0.86 at 1 x 10 (docs/MEDIA-RECEIVE.md). The fast path sends on its socket as on
# asyncio's (rtc_internals.own_socket).
event_loop = uvloop.new_event_loop


@dataclass
class MediaComponent(Component):
    """media's component, with its rooms at hand for in-process tests and the benchmark."""

    rooms: MediaRooms = field(kw_only=True)


async def build(settings: MediaSettings) -> tuple[MediaComponent, auth.KeySet]:
    async with Resources() as opened:
        identity = opened.closing(clients.channel(settings.identity_address, settings.client_tls))
        roster = opened.closing(clients.channel(settings.roster_address, settings.client_tls))
        client = opened.closing(mongo.connect(settings.mongodb_uri, settings.service_name))
        reporter = opened.closing(ConnectionReporter(roster, settings.service_token, settings.instance_id,
                                                     max_backoff=settings.report_retry_max_seconds))
        used_tokens = UsedJoinTokens(client[settings.database_name])
        rooms = MediaRooms(
            instance_id=settings.instance_id,
            capacity=settings.capacity_participants,
            closed=ClosedRooms(client[settings.database_name]),
            used_tokens=used_tokens,
            verifier=TokenVerifier(identity, settings.service_token),
            reporter=reporter,
            thresholds=Thresholds(settings.poor_round_trip_ms, settings.poor_packet_loss, settings.poor_jitter_ms),
            keyframe_interval=settings.keyframe_interval_seconds,
            test_room_seconds=settings.test_room_seconds,
            socket_buffer_bytes=settings.socket_buffer_bytes,
            rtc_ports=settings.rtc_ports,
            test_room_share=settings.test_room_share,
            node_ip=settings.node_ip,
            fastpath=settings.compiled_forwarding,
        )
        opened.closing(rooms, rooms.shutdown)  # everyone still connected is disconnected first
        if settings.rtc_ports is not None:  # ICE host sockets inside SVPL_RTC_PORT_MIN..MAX (ports.py)
            ports.install(asyncio.get_running_loop())
        metrics.bind(rooms)
        binding = Binding(
            media_pb2.DESCRIPTOR.services_by_name["MediaService"],
            MediaServicer(rooms, settings.address),
            media_pb2_grpc.add_MediaServiceServicer_to_server,
            ACCESS,
        )
        background = {}
        if settings.pod_name:  # in Kubernetes: keep the pod-deletion-cost annotation equal to the load
            from services.media.pod_deletion_cost import from_environment

            updater = from_environment(lambda: rooms.participant_count)
            if updater is not None:
                background["svpl-pod-deletion-cost"] = updater.run

        async def start() -> None:
            reporter.start()

        keys = clients.service_keyset(settings, identity)
        component = MediaComponent([binding], resources=opened.pop_all(), indexes=[used_tokens], start=start,
                                   background=background, drain=rooms.drain, mongo=client, rooms=rooms)
        return component, keys
