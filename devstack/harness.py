"""The whole gRPC system in-process, on the real database: every service built by its own
`build(settings)` exactly as `python -m services.<name>` does, on pre-picked loopback ports,
each with fresh databases. Tests and benchmarks call it through the contracts."""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from devstack.embedded_db import free_port
from services.runtime import auth, clients
from services.runtime.server import RunningServer, health_address, start_server
from services.runtime.tls import ClientTls

ORDER = ["identity", "media", "roster", "booking", "support"]
# Started only when named: they need settings of their own (dialin: its SIP port, the trunk's networks).
OPTIONAL = ["dialin"]
SETTINGS = {
    "identity": ("services.identity.config", "IdentitySettings"),
    "booking": ("services.booking.config", "BookingSettings"),
    "roster": ("services.roster.config", "RosterSettings"),
    "media": ("services.media.config", "MediaSettings"),
    "support": ("services.support.config", "SupportSettings"),
    "dialin": ("services.dialin.config", "DialinSettings"),
}

DEMO_DIRECTORY = Path(__file__).resolve().parent.parent / "services" / "identity" / "demo" / "directory.jsonl"
# Each outside system's switch and the setting that points at it (services/*/config.py).
INTEGRATIONS = {"cosmic_link_enabled": "cosmic_link_url", "inbox_1177_enabled": "inbox_1177_url",
                "siths_enabled": "siths_ca_files"}


@dataclass
class System:
    mongo_uri: str
    keys_dir: Path
    tokens: dict[str, str]
    prefix: str = field(default_factory=lambda: "t" + uuid.uuid4().hex[:8])
    ports: dict[str, int] = field(default_factory=dict)
    running: dict[str, RunningServer] = field(default_factory=dict)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    overrides: dict[str, dict] = field(default_factory=dict)
    # With mutual TLS (each service's tls_* files in `overrides`): the certificate the test's own
    # channels present.
    client_tls: ClientTls | None = None

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    async def access_records(self, query: dict) -> list[dict]:
        """The access records (this system's audit database) matching `query`, oldest first."""
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.mongo_uri)
        try:
            return await client[f"{self.prefix}_audit"]["access_records"].find(query).sort("at", 1).to_list()
        finally:
            await client.close()

    def settings(self, name: str, **extra):
        module, cls = SETTINGS[name]
        settings_cls = getattr(importlib.import_module(module), cls)
        values = dict(
            mongodb_uri=self.mongo_uri,
            mongodb_database=f"{self.prefix}_{name}",
            audit_database=f"{self.prefix}_audit",
            grpc_port=self.ports[name],
            metrics_port=0,
            service_token=self.tokens[name],
            signing_keys_dir=str(self.keys_dir),
            shutdown_grace_seconds=0.5,
            db_check_seconds=0.2,
            **{f"{other}_address": self.address(other) for other in self.ports},
        )
        values.update(self.overrides.get(name, {}))
        values.update(extra)
        # Outside systems are switched off unless a test points one at its own test server (a
        # service refuses to start with one neither configured nor switched off).
        for switch, setting in INTEGRATIONS.items():
            values.setdefault(switch, bool(values.get(setting)))
        values.setdefault("portal_base_url", "https://portal.svpl.test")
        if values.get("directory_backend", "local") == "local" and not values.get("development_login"):
            values.setdefault("directory_export_file", str(DEMO_DIRECTORY))  # the demo HSA export
        return settings_cls(**values)

    async def start(self, names: list[str] | None = None) -> System:
        names = names or ORDER
        for name in ORDER + [n for n in OPTIONAL if n in names]:
            self.ports.setdefault(name, free_port())
        for name in [n for n in ORDER + OPTIONAL if n in names]:
            await self.start_service(name)
        return self

    async def start_service(self, name: str, **extra) -> RunningServer:
        build = importlib.import_module(f"services.{name}.server").build
        settings = self.settings(name, **extra)
        component, keys = await build(settings)
        running = await start_server(component, keys, self.address(name), settings.max_message_bytes,
                                     settings.db_check_seconds, settings.tls_files, health_address(settings))
        self.running[name] = running
        return running

    async def stop_service(self, name: str, grace: float = 0.0) -> None:
        running = self.running.pop(name, None)
        if running:
            await running.stop(grace)

    def channel(self, name: str) -> grpc.aio.Channel:
        if name not in self.channels:
            self.channels[name] = clients.channel(self.address(name), self.client_tls)
        return self.channels[name]

    def stub(self, name: str):
        module = importlib.import_module(f"svpl.{name}.v1.{name}_pb2_grpc")
        return getattr(module, f"{name.capitalize()}ServiceStub")(self.channel(name))

    async def stop(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        for name in reversed(list(self.running)):
            await self.stop_service(name)


def as_token(token: str) -> tuple[tuple[str, str], ...]:
    return auth.bearer(token)
