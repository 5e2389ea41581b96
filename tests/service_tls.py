"""Certificates for mutual TLS between the services in tests: a CA, a certificate per service, and
each service's files laid out as the kubelet mounts a Secret (so rotation is what a cluster does)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from devstack.pki import Issued, make_ca, make_leaf
from services.runtime.tls import ClientTls, TlsFiles

# The names a test service's certificate carries: how the tests reach it, and its Service's name.
LOOPBACK = ("localhost", "127.0.0.1")


def mount(directory: Path, cert: Issued, ca: Issued | list[Issued]) -> TlsFiles:
    """Write tls.crt, tls.key and ca.crt into `directory` as Kubernetes mounts a Secret: the files are
    links into `..data`, itself a link to a fresh directory swapped in one rename (AtomicWriter)."""
    directory.mkdir(parents=True, exist_ok=True)
    version = directory / f"..{uuid.uuid4().hex}"
    version.mkdir()
    (version / "tls.crt").write_text(cert.pem)
    (version / "tls.key").write_text(cert.key_pem)
    (version / "ca.crt").write_text("".join(c.pem for c in (ca if isinstance(ca, list) else [ca])))
    staged = directory / "..data_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(version.name)
    os.replace(staged, directory / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    return TlsFiles(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")


@dataclass
class ServicePki:
    """One CA and where each service's files are mounted."""

    root: Path
    ca: Issued

    def issue(self, name: str, ca: Issued | None = None) -> Issued:
        return make_leaf(ca or self.ca, f"svpl-{name}", server_names=[*LOOPBACK, f"svpl-{name}"], mutual=True)

    def files(self, name: str, ca: Issued | None = None) -> TlsFiles:
        """Issue `name` a certificate (from `ca`, default this CA) and mount it with that CA."""
        return mount(self.root / name, self.issue(name, ca), ca or self.ca)

    def settings(self, name: str) -> dict[str, str]:
        """The tls_* settings of a service whose files are mounted (issue them first)."""
        files = self.files(name)
        return {"tls_cert_file": str(files.cert), "tls_key_file": str(files.key), "tls_ca_file": str(files.ca)}

    def client(self, name: str = "test-client", reload_seconds: float = 10.0) -> ClientTls:
        return ClientTls(self.files(name), reload_seconds)


def new_pki(root: Path) -> ServicePki:
    return ServicePki(root, make_ca("svpl services test CA"))
