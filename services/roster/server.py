"""Roster service assembly: settings → storage → domain → servicer → Component."""

from __future__ import annotations

import datetime as dt
import logging

from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from services.roster.config import RosterSettings
from services.roster.inbox1177 import Inbox1177Adapter
from services.roster.meetings import INBOX_1177, PHONE_TASK, Roster
from services.roster.peers import BookingPhoneTasks, Identity, Media
from services.roster.personal_codes import PersonalCodes
from services.roster.servicer import ACCESS, RosterServicer
from services.roster.store import MeetingStore
from services.runtime import auth, clients, mongo
from services.runtime.access_log import AccessLog
from services.runtime.outbox import Backoff, ChannelAdapter, Dispatcher, Outbox
from services.runtime.server import Binding, Component, Resources

log = logging.getLogger("svpl.roster")


async def build(settings: RosterSettings) -> tuple[Component, auth.KeySet]:
    async with Resources() as opened:
        identity_channel = opened.closing(clients.channel(settings.identity_address, settings.client_tls))
        db = opened.closing(mongo.connect(settings.mongodb_uri, settings.service_name))
        # Meeting watches (one change stream per watched meeting) on a pool of their own.
        watch_db = opened.closing(mongo.connect(settings.mongodb_uri, f"{settings.service_name}-watch",
                                                settings.watch_pool_size))
        store = MeetingStore(db, settings.database_name, watch_db)
        access = opened.closing(AccessLog.for_service(settings, db))
        outbox = Outbox(store.db)
        media = opened.closing(Media(settings.media_instances, settings.service_token, settings.media_pods_dns,
                                           settings.client_tls, settings.tls_media_server_name))
        roster = Roster(store, Identity(identity_channel, settings.service_token), media, access, outbox,
                        portal_base_url=settings.portal_base_url, region=settings.region,
                        code_digits=settings.dial_in_code_digits, join_ttl_seconds=settings.join_token_ttl_seconds,
                        media_check_seconds=settings.media_check_seconds,
                        left_room_release_seconds=settings.left_room_release_seconds,
                        personal_codes=PersonalCodes(settings.personal_code_key, settings.personal_code_digits),
                        max_wrong_personal_codes=settings.personal_code_max_wrong_per_meeting)
        booking_channel = opened.closing(clients.channel(settings.booking_address))
        adapters: dict[str, ChannelAdapter] = {PHONE_TASK: BookingPhoneTasks(booking_channel, settings.service_token)}
        if settings.inbox_1177_enabled:
            adapters[INBOX_1177] = roster.with_personal_code(opened.closing(Inbox1177Adapter(
                settings.inbox_1177_url, client_cert=settings.inbox_1177_client_cert_file,
                client_key=settings.inbox_1177_client_key_file, ca_file=settings.inbox_1177_ca_file,
                timeout=settings.inbox_1177_timeout_seconds, logical_address=settings.inbox_1177_logical_address)))
        else:
            log.warning("the 1177 inbox is switched off (SVPL_INBOX_1177_ENABLED=false): next of kin's messages "
                        "stay queued until it is switched on")
        dispatcher = Dispatcher(outbox, adapters, poll_seconds=settings.outbox_poll_seconds, name="roster-outbox",
                                backoff=Backoff(settings.outbox_retry_base_seconds, settings.outbox_retry_cap_seconds),
                                fallbacks={INBOX_1177: Roster.inbox_fallback},
                                unconfigured=[] if INBOX_1177 in adapters else [INBOX_1177])
        opened.closing(dispatcher, dispatcher.stop)
        roster.on_outbox_message = dispatcher.notify
        opened.closing(roster)  # its room releases still running

        async def start() -> None:
            dispatcher.start()  # with no destination it only counts what waits (svpl_outbox_undeliverable_messages)

        binding = Binding(
            roster_pb2.DESCRIPTOR.services_by_name["RosterService"],
            RosterServicer(roster),
            roster_pb2_grpc.add_RosterServiceServicer_to_server,
            ACCESS,
        )
        keys = clients.service_keyset(settings, identity_channel)
        component = Component(
            [binding], resources=opened.pop_all(), indexes=[store, access, outbox], start=start, mongo=db,
            # Every replica runs it; the versioned write lets exactly one close each meeting.
            background={"svpl-roster-auto-close": lambda: roster.run_auto_close(
                dt.timedelta(seconds=settings.auto_close_after_seconds), settings.auto_close_check_seconds)},
        )
        return component, keys
