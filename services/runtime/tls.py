"""Mutual TLS between the services, with certificates that rotate under a running process.

Each service has a certificate, its key and the CA bundle its peers' certificates chain to, as
files (in the chart: a Secret per service, mounted; cert-manager renews it in place). A server
requires and verifies a client certificate from that CA; a client verifies the server's name.

Rotation: Kubernetes swaps a mounted Secret's files atomically (a symlink to a new directory), so a
changed file is seen by its stat (inode, mtime, size). The server side uses gRPC's dynamic server
credentials: the fetcher runs on every new handshake and hands gRPC the new files once they
changed. gRPC Python has no client-side counterpart (grpc/grpc#41124 proposed one; it was closed
unmerged), so a client channel is a `ReloadingChannel`: it checks the files at most every
`reload_seconds`, and on a change opens a new channel with the new certificate for new calls while
the old one finishes the calls it carries. Established connections keep their handshake: a
certificate is checked when a connection is made, and both sides renew well before expiry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("svpl.tls")

Stamp = tuple[tuple[int, int, int], ...]


class TlsConfigError(RuntimeError):
    """The certificate files are missing, unreadable or do not belong together."""


@dataclass(frozen=True)
class TlsFiles:
    """This service's certificate (PEM, may carry the chain), its private key and the CA bundle."""

    cert: Path
    key: Path
    ca: Path

    def stamp(self) -> Stamp:
        """What changes when a file is replaced (a Secret's symlink swap included)."""
        stats = [os.stat(p) for p in (self.cert, self.key, self.ca)]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(key, certificate chain, CA bundle), checked to belong together; raises TlsConfigError."""
        try:
            cert, key, ca = (p.read_bytes() for p in (self.cert, self.key, self.ca))
            leaf = x509.load_pem_x509_certificate(cert)
            private = serialization.load_pem_private_key(key, password=None)
            if not x509.load_pem_x509_certificates(ca):
                raise ValueError(f"{self.ca}: no certificate in the CA bundle")
        except (OSError, ValueError) as exc:
            raise TlsConfigError(f"TLS files unusable: {exc}") from None
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
            raise TlsConfigError(f"TLS files unusable: {self.key} is not the key of {self.cert}")
        return key, cert, ca


@dataclass(frozen=True)
class ClientTls:
    """How this process's channels authenticate: its files, and how often it looks for new ones."""

    files: TlsFiles
    reload_seconds: float = 10.0


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate from the CA and follow file rotation.
    Raises TlsConfigError at start when the files are unusable."""

    def configuration() -> tuple[Stamp, grpc.ServerCertificateConfiguration]:
        stamp = files.stamp()  # before reading: a change during the read is seen on the next handshake
        key, cert, ca = files.read()
        return stamp, grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    loaded, initial = configuration()
    refused: Stamp | None = None  # files found unusable: said once, tried again when they change

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        """gRPC calls this on each new handshake (from its own thread): None keeps the current files."""
        nonlocal loaded, refused
        try:
            now = files.stamp()
        except OSError as exc:  # mid-swap: the next handshake looks again
            log.warning("TLS certificate files unreadable, serving the previous ones: %s", exc)
            return None
        if now in (loaded, refused):
            return None
        try:
            stamp, config = configuration()
        except (OSError, TlsConfigError) as exc:  # half-rotated files: keep serving with the previous ones
            refused = now
            log.warning("TLS certificate not reloaded, serving the previous one: %s", exc)
            return None
        loaded = stamp
        log.info("TLS certificate reloaded", extra={"svpl_tls_cert": str(files.cert)})
        return config

    # The stubs type the fetcher as never returning None, but None is gRPC's "unchanged" (its docstring).
    return grpc.dynamic_ssl_server_credentials(initial, fetch,  # type: ignore[arg-type]  # types-grpcio
                                               require_client_authentication=True)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    key, cert, ca = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


Opener = Callable[[grpc.ChannelCredentials], grpc.aio.Channel]


class _Method:
    """A stub's multicallable that always calls through the ReloadingChannel's current channel."""

    def __init__(self, owner: ReloadingChannel, kind: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        self._owner, self._kind, self._args, self._kwargs = owner, kind, args, kwargs
        self._channel: grpc.aio.Channel | None = None
        self._callable: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        if channel is not self._channel:
            self._channel = channel
            self._callable = getattr(channel, self._kind)(*self._args, **self._kwargs)
        return self._callable(*args, **kwargs)


class ReloadingChannel(grpc.aio.Channel):
    """A client channel whose certificate follows its files (see the module's note for why)."""

    def __init__(self, tls: ClientTls, open_channel: Opener, retire_grace: float = 30.0) -> None:
        self._tls, self._open, self._grace = tls, open_channel, retire_grace
        self._stamp = tls.files.stamp()
        self._channel = open_channel(channel_credentials(tls.files))
        self._next_check = time.monotonic() + tls.reload_seconds
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}

    def current(self) -> grpc.aio.Channel:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._tls.reload_seconds
            self._reload_if_changed()
        return self._channel

    def _reload_if_changed(self) -> None:
        try:
            stamp = self._tls.files.stamp()
            if stamp == self._stamp:
                return
            fresh = self._open(channel_credentials(self._tls.files))
        except (OSError, TlsConfigError) as exc:
            log.warning("TLS client certificate not reloaded, using the previous one: %s", exc)
            return
        old, self._channel, self._stamp = self._channel, fresh, stamp
        log.info("TLS client certificate reloaded", extra={"svpl_tls_cert": str(self._tls.files.cert)})
        task = asyncio.get_running_loop().create_task(old.close(self._grace), name="svpl-tls-retire")
        self._retiring[task] = old
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    def _method(self, kind: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        return _Method(self, kind, args, kwargs)

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._method("unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._method("unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._method("stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._method("stream_stream", args, kwargs)

    async def close(self, grace: float | None = None) -> None:
        """Close the current channel and any still finishing its calls after a rotation."""
        channels = [self._channel, *self._retiring.values()]
        await asyncio.gather(*(c.close(grace) for c in channels))

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
