"""A real OpenLDAP slapd for the tests and benchmarks: generated slapd.conf with HSA's schema names
(hsa.schema, next to this file), the entries of an HSA export (services/identity/demo/generate.py:
localities, organisations, units, persons, commissions under c=SE) loaded offline with slapadd, then
started on a loopback port (foreground, so the caller owns the process)."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, cast

from devstack.embedded_db import free_port

HERE = Path(__file__).resolve().parent
SCHEMA_DIR = Path("/etc/ldap/schema")
BASE_DN = "c=SE"
READER_DN = f"cn=svpl-identity,ou=services,{BASE_DN}"
READER_PASSWORD = "reader-secret"
MODULE_DIRS = [Path("/usr/lib/ldap"), Path("/usr/lib/x86_64-linux-gnu/ldap"), Path("/usr/lib64/openldap")]


def slapd_available() -> bool:
    return all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in ("slapd", "slapadd"))


def _value(attr: str, value: str) -> str:
    # LDIF (RFC 2849): a value that is not plain ASCII, or starts with space, ':' or '<', is base64.
    if not value.isascii() or value[:1] in (" ", ":", "<") or value.endswith(" "):
        return f"{attr}:: {base64.b64encode(value.encode()).decode()}"
    return f"{attr}: {value}"


def to_ldif(entries: list[dict]) -> str:
    """The base entries and the export's entries (each a `dn` and its attributes) as LDIF."""
    blocks = [
        f"dn: {BASE_DN}\nobjectClass: country\nc: SE",
        f"dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services",
        f"dn: {READER_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: svpl-identity\n"
        f"sn: svpl\nuserPassword: {READER_PASSWORD}",
    ]
    for e in entries:
        lines = [_value("dn", e["dn"])]
        for attr, values in e.items():
            if attr != "dn":
                lines += [_value(attr, v) for v in (values if isinstance(values, list) else [values]) if v != ""]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


class Slapd:
    def __init__(self, workdir: Path, entries: list[dict], tls: tuple[str, str] | None = None) -> None:
        self.workdir = workdir
        self.entries = entries
        self.port = free_port()
        self.tls = tls  # (certificate, key) PEM files: serve ldaps:// instead of ldap://
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'ldaps' if self.tls else 'ldap'}://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        module_dir = next((d for d in MODULE_DIRS if (d / "back_mdb.so").exists()), None)
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = "\n".join([
            *(f"include {SCHEMA_DIR / s}" for s in ("core.schema", "cosine.schema", "inetorgperson.schema")),
            f"include {HERE / 'hsa.schema'}",
            f"pidfile {self.workdir / 'slapd.pid'}",
            *([f"TLSCertificateFile {self.tls[0]}", f"TLSCertificateKeyFile {self.tls[1]}"] if self.tls else []),
            *( [f"modulepath {module_dir}", "moduleload back_mdb"] if module_dir else []),
            "database mdb",
            f"suffix \"{BASE_DN}\"",
            f"rootdn \"cn=admin,{BASE_DN}\"",
            "rootpw admin-secret",
            f"directory {data}",
            "maxsize 67108864",
            "index objectClass eq",
            "index hsaIdentity,hsaCommissionMember eq",
            "index givenName,sn sub,eq",
            # Only bound users read the directory; anonymous may only authenticate.
            "access to attrs=userPassword by anonymous auth by * none",
            "access to * by users read by * none",
            "",
        ])
        path = self.workdir / "slapd.conf"
        path.write_text(conf)
        return path

    def start(self) -> Slapd:
        conf = self._config()
        ldif = self.workdir / "entries.ldif"
        ldif.write_text(to_ldif(self.entries), encoding="utf-8")
        subprocess.run(["slapadd", "-q", "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True)
        self.process = subprocess.Popen(
            ["slapd", "-f", str(conf), "-h", f"{self.url}/", "-d", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = cast(IO[bytes], self.process.stderr)  # stderr=PIPE above
                raise RuntimeError(f"slapd exited: {stderr.read().decode(errors='replace')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("slapd did not start listening within 10 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
