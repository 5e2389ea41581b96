"""Roster service assembly: settings → storage → domain → servicer → Component."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from services.roster.config import RosterSettings
from services.roster.inbox1177 import Inbox1177Adapter
from services.roster.meetings import INBOX_1177, Roster
from services.roster.peers import Identity, Media
from services.roster.servicer import ACCESS, RosterServicer
from services.roster.store import MeetingStore
from services.runtime import auth, clients, mongo
from services.runtime.access_log import AccessLog
from services.runtime.outbox import Backoff, Dispatcher, Outbox
from services.runtime.server import Binding, Component

log = logging.getLogger("svpl.roster")


async def build(settings: RosterSettings) -> tuple[Component, auth.KeySet]:
    identity_channel = clients.channel(settings.identity_address)
    db = mongo.connect(settings.mongodb_uri, settings.service_name)
    # Meeting watches (one change stream per watched meeting) on a pool of their own.
    watch_db = mongo.connect(settings.mongodb_uri, f"{settings.service_name}-watch", settings.watch_pool_size)
    store = MeetingStore(db, settings.database_name, watch_db)
    access = AccessLog.for_service(settings, db)
    outbox = Outbox(store.db)
    media = Media(settings.media_instances, settings.service_token, settings.media_pods_dns)
    roster = Roster(store, Identity(identity_channel, settings.service_token), media, access, outbox,
                    portal_base_url=settings.portal_base_url, region=settings.region,
                    code_digits=settings.dial_in_code_digits, join_ttl_seconds=settings.join_token_ttl_seconds,
                    media_check_seconds=settings.media_check_seconds,
                    left_room_release_seconds=settings.left_room_release_seconds)
    adapters = {}
    if settings.inbox_1177_url:
        adapters[INBOX_1177] = Inbox1177Adapter(settings.inbox_1177_url, settings.inbox_1177_api_key,
                                                settings.inbox_1177_timeout_seconds)
    else:
        log.warning("SVPL_INBOX_1177_URL is not set: 1177 inbox messages stay queued until it is")
    dispatcher = Dispatcher(outbox, adapters, poll_seconds=settings.outbox_poll_seconds, name="roster-outbox",
                            backoff=Backoff(settings.outbox_retry_base_seconds, settings.outbox_retry_cap_seconds))
    roster.on_outbox_message = dispatcher.notify
    tasks: list[asyncio.Task] = []

    async def start() -> None:
        await store.ensure_indexes()
        await access.ensure_indexes()
        await outbox.ensure_indexes()
        if adapters:
            dispatcher.start()
        # Every replica runs it; the versioned write lets exactly one close each meeting.
        tasks.append(asyncio.create_task(
            roster.run_auto_close(dt.timedelta(seconds=settings.auto_close_after_seconds),
                                  settings.auto_close_check_seconds), name="svpl-roster-auto-close"))

    async def close() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await roster.close()
        await dispatcher.stop()
        for adapter in adapters.values():
            await adapter.close()
        await media.close()
        await identity_channel.close()
        await access.close()
        await watch_db.close()

    binding = Binding(
        roster_pb2.DESCRIPTOR.services_by_name["RosterService"],
        RosterServicer(roster),
        roster_pb2_grpc.add_RosterServiceServicer_to_server,
        ACCESS,
    )
    return Component([binding], start=start, close=close, mongo=db), clients.service_keyset(settings, identity_channel)
