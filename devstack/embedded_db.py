"""The embedded MongoDB-wire database for development and tests: SecantusDB, run as a
separate process (it is GPL-2.0: we run it, never import it). Production uses a real
MongoDB replica set; application code is plain pymongo and does not know the difference."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pymongo

# Ports are handed to child processes that bind them later. A port the kernel picks with
# bind(0) comes from the ephemeral range, where any outgoing connection made meanwhile
# (a test's client, the database driver) can take it first: CI saw exactly that race.
# So pick below the ephemeral range, never hand the same port out twice in one process,
# and check it is free on every address.
_PORT_RANGE = (20000, 32000)
_handed_out: set[int] = set()
_pick = random.Random(os.getpid() ^ time.time_ns())


def free_port(*, udp: bool = False, span: int = 1) -> int:
    """A port free now for TCP (and with `udp` for UDP too), or the first of `span` consecutive ones,
    from a range below the kernel's ephemeral ports (no outgoing connection takes it meanwhile), never
    handed out twice in this process."""
    kinds = [socket.SOCK_STREAM, socket.SOCK_DGRAM] if udp else [socket.SOCK_STREAM]
    for _ in range(1000):
        port = _pick.randrange(*_PORT_RANGE)
        ports = range(port, port + span)
        if _handed_out.intersection(ports):
            continue
        held: list[socket.socket] = []
        try:
            for p, kind in ((p, kind) for p in ports for kind in kinds):
                held.append(socket.socket(socket.AF_INET, kind))
                held[-1].bind(("", p))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        _handed_out.update(ports)
        return port
    raise RuntimeError(f"no free port in {_PORT_RANGE}")


def _server_binary() -> str:
    candidate = Path(sys.executable).parent / "secantusd-py"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("secantusd-py")
    if not found:
        raise RuntimeError("secantusd-py not found: run `make install` (pip install --pre secantusdb)")
    return found


class EmbeddedMongo:
    def __init__(self, storage: str | Path | None = None, port: int = 0, log_path: str | Path | None = None) -> None:
        self._own_storage = storage is None
        self.storage = Path(storage or tempfile.mkdtemp(prefix="svpl-db-"))
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else self.storage.parent / f"{self.storage.name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        # retryWrites=false: SecantusDB's retryable-write table slows every write after ~10k writes.
        return f"mongodb://127.0.0.1:{self.port}/?retryWrites=false"

    def start(self, timeout: float = 20.0) -> EmbeddedMongo:
        self.storage.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [_server_binary(), "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", str(self.storage),
             "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            self.uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"embedded database exited with {self.process.returncode}; see {self.log_path}")
                try:
                    client.admin.command("ping")
                    return self
                except pymongo.errors.PyMongoError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"embedded database not up within {timeout}s; see {self.log_path}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """kill -9, for fault tests."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        if self._own_storage:
            shutil.rmtree(self.storage, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)
