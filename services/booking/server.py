"""Booking service assembly: settings → options → storage → use cases → servicer → Component.

The outbox dispatcher runs from Component.start until the component closes; it delivers
invitations (secure messaging) and retries room creation when roster was down.
"""

from __future__ import annotations

import logging

from svpl.booking.v1 import booking_pb2, booking_pb2_grpc

from services.booking import messaging
from services.booking.bookings import MEETING_CHANNEL, Bookings, MeetingChannel
from services.booking.config import BookingSettings
from services.booking.options import load_options
from services.booking.peers import IdentityValidator, RosterMeetings
from services.booking.servicer import ACCESS, BookingServicer
from services.runtime import auth, clients, mongo
from services.runtime.access_log import AccessLog
from services.runtime.outbox import Backoff, ChannelAdapter, Dispatcher, Outbox
from services.runtime.server import Binding, Component, Resources

log = logging.getLogger("svpl.booking")


async def build(settings: BookingSettings) -> tuple[Component, auth.KeySet]:
    options = load_options(settings.booking_options_file)
    async with Resources() as opened:
        identity = opened.closing(clients.channel(settings.identity_address, settings.client_tls))
        roster = opened.closing(clients.channel(settings.roster_address, settings.client_tls))
        client = opened.closing(mongo.connect(settings.mongodb_uri, settings.service_name))
        access = opened.closing(AccessLog.for_service(settings, client))
        db = client[settings.database_name]
        outbox = Outbox(db)
        bookings = Bookings(
            db, client, access, outbox, options,
            IdentityValidator(identity, settings.service_token, settings.call_timeout_seconds),
            RosterMeetings(roster, settings.service_token, settings.call_timeout_seconds),
            meeting_retry_delay=settings.meeting_retry_delay_seconds,
        )
        adapters: dict[str, ChannelAdapter] = {MEETING_CHANNEL: MeetingChannel(bookings)}
        secure = None
        if settings.cosmic_link_enabled:
            secure = opened.closing(messaging.HttpSecureMessaging(
                settings.cosmic_link_url, settings.cosmic_link_token, settings.cosmic_link_timeout_seconds))
            adapters[messaging.CHANNEL] = messaging.SecureMessagingChannel(secure)
        dispatcher = Dispatcher(
            outbox, adapters, lease_seconds=settings.outbox_lease_seconds, poll_seconds=settings.outbox_poll_seconds,
            backoff=Backoff(settings.outbox_backoff_base_seconds, settings.outbox_backoff_cap_seconds),
            name="booking", unconfigured=[] if secure else [messaging.CHANNEL],
        )
        opened.closing(dispatcher, dispatcher.stop)
        bookings.notify = dispatcher.notify

        async def start() -> None:
            if secure is None:
                log.warning("Cosmic Link is switched off (SVPL_COSMIC_LINK_ENABLED=false): secure-messaging "
                            "invitations stay in the outbox")
            dispatcher.start()

        binding = Binding(
            booking_pb2.DESCRIPTOR.services_by_name["BookingService"],
            BookingServicer(bookings, options),
            booking_pb2_grpc.add_BookingServiceServicer_to_server,
            ACCESS,
        )
        keys = clients.service_keyset(settings, identity)
        component = Component([binding], resources=opened.pop_all(), indexes=[bookings, outbox, access],
                              start=start, mongo=client)
        return component, keys
