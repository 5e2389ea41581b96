"""Channels and stubs to the services, opened on first use (inside the server's event loop)."""

from __future__ import annotations

import grpc
from svpl.booking.v1 import booking_pb2_grpc
from svpl.identity.v1 import identity_pb2_grpc
from svpl.media.v1 import media_pb2_grpc
from svpl.roster.v1 import roster_pb2_grpc
from svpl.support.v1 import support_pb2_grpc

from services.gateway.config import GatewaySettings
from services.runtime import auth, clients


class Backends:
    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._keys: auth.KeySet | None = None

    def channel(self, address: str, server_name: str = "") -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = clients.channel(address, self._settings.client_tls, server_name=server_name)
        return self._channels[address]

    @property
    def identity(self) -> identity_pb2_grpc.IdentityServiceStub:
        return identity_pb2_grpc.IdentityServiceStub(self.channel(self._settings.identity_address))

    @property
    def roster(self) -> roster_pb2_grpc.RosterServiceStub:
        return roster_pb2_grpc.RosterServiceStub(self.channel(self._settings.roster_address))

    @property
    def booking(self) -> booking_pb2_grpc.BookingServiceStub:
        return booking_pb2_grpc.BookingServiceStub(self.channel(self._settings.booking_address))

    @property
    def support(self) -> support_pb2_grpc.SupportServiceStub:
        return support_pb2_grpc.SupportServiceStub(self.channel(self._settings.support_address))

    def media(self, address: str = "") -> media_pb2_grpc.MediaServiceStub:
        """The media instance at `address` (as roster's Admit named it), or the configured one."""
        # A media instance is called at its pod address: TLS verifies media's own name instead.
        return media_pb2_grpc.MediaServiceStub(
            self.channel(address or self._settings.media_address, self._settings.tls_media_server_name))

    @property
    def keys(self) -> auth.KeySet:
        """Identity's public keys: the gateway verifies session cookies locally."""
        if self._keys is None:
            self._keys = clients.identity_keyset(
                self.channel(self._settings.identity_address), self._settings.service_token,
                poll=self._settings.revocation_poll_seconds,
                max_staleness=self._settings.revocation_max_staleness_seconds)
        return self._keys

    def as_service(self) -> tuple[tuple[str, str], ...]:
        return clients.metadata(self._settings.service_token)

    async def close(self) -> None:
        if self._keys is not None:
            await self._keys.close()
            self._keys = None
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
