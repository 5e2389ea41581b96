"""The whole svpl system on one machine: the embedded database, a signing key, service
tokens, and every service as its own process on loopback. Used by `make run` and by
tests that need real processes (health after SIGTERM, kill -9 faults)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.embedded_db import EmbeddedMongo, free_port

ROOT = Path(__file__).resolve().parent.parent
GRPC_SERVICES = ["identity", "roster", "media", "booking", "support"]


@dataclass
class Proc:
    name: str
    port: int
    metrics_port: int
    env: dict
    log_path: Path
    process: subprocess.Popen | None = None
    module: str = ""  # the service it runs (services.<module>), when not its name (a second replica)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> subprocess.Popen:
        """The process, from start_process() until it is stopped."""
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process


@dataclass
class Stack:
    workdir: Path
    fixed_ports: bool = False
    extra_env: dict = field(default_factory=dict)
    # The phone dial-in service too (`make run`): SIP on loopback, the trunk is this machine.
    with_dialin: bool = False
    db: EmbeddedMongo | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def _port(self, fixed: int) -> int:
        return fixed if self.fixed_ports else free_port()

    @property
    def database(self) -> EmbeddedMongo:
        """The embedded database, once start_database() has run."""
        if self.db is None:
            raise RuntimeError("the database is not started")
        return self.db

    @property
    def keys_dir(self) -> Path:
        return self.workdir / "keys"

    def start_database(self) -> None:
        self.db = EmbeddedMongo(self.workdir / "db", port=self._port(27018), log_path=self.workdir / "db.log").start()

    def prepare_keys(self) -> None:
        from services.identity.tokens import KeyRing

        if not list(self.keys_dir.glob("*.pem")):
            KeyRing.generate().save_current(self.keys_dir)
        ring = KeyRing.load(self.keys_dir)
        self.tokens = {name: ring.issue_service_token(name) for name in GRPC_SERVICES + ["gateway", "dialin"]}

    def _base_env(self, name: str) -> dict:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
                "PYTHONUNBUFFERED": "1",
                "SVPL_MONGODB_URI": self.database.uri,
                "SVPL_SERVICE_TOKEN": self.tokens[name],
                "SVPL_SIGNING_KEYS_DIR": str(self.keys_dir),
                "SVPL_SHUTDOWN_GRACE_SECONDS": "3",
            }
        )
        for other, proc in self.procs.items():
            env[f"SVPL_{other.upper()}_ADDRESS"] = proc.address
        # No outside systems on one machine: each is switched off explicitly (the services refuse to
        # start with one neither configured nor switched off); extra_env may point one at a test server.
        env.update({"SVPL_COSMIC_LINK_ENABLED": "false", "SVPL_INBOX_1177_ENABLED": "false",
                    "SVPL_SITHS_ENABLED": "false"})
        if "SVPL_DEVELOPMENT_LOGIN" not in self.extra_env:  # (with it: the bundled demo directory)
            env["SVPL_DIRECTORY_EXPORT_FILE"] = str(ROOT / "services" / "identity" / "demo" / "directory.jsonl")
        env.update(self.extra_env)
        return env

    def plan(self) -> None:
        fixed = {"identity": 50051, "booking": 50052, "roster": 50053, "media": 50054, "support": 50055}
        for i, name in enumerate(GRPC_SERVICES):
            self.procs[name] = Proc(name, self._port(fixed[name]), self._port(9101 + i), {}, self.workdir / f"{name}.log")
        self.procs["gateway"] = Proc("gateway", self._port(8080), self._port(9106), {}, self.workdir / "gateway.log")
        if self.with_dialin:
            self.procs["dialin"] = Proc("dialin", self._port(50056), self._port(9107), {}, self.workdir / "dialin.log")
        for name, proc in self.procs.items():
            proc.env = self._base_env(name)
            proc.env["SVPL_GRPC_PORT"] = str(proc.port)
            proc.env["SVPL_METRICS_PORT"] = str(proc.metrics_port)
            if name == "gateway":
                proc.env["SVPL_HTTP_PORT"] = str(proc.port)
            # Invitations and meetings link to this gateway's portal.
            proc.env.setdefault("SVPL_PORTAL_BASE_URL", f"http://{self.procs['gateway'].address}")
        if self.with_dialin:
            self.procs["dialin"].env.update(self.dialin_env())
            # Personal dial-in codes (meeting ID + code enters as that person): a key made for this run.
            self.procs["roster"].env.setdefault("SVPL_PERSONAL_CODE_KEY", secrets.token_hex(24))

    def dialin_env(self) -> dict:
        """SIP on loopback (5060 with fixed ports), RTP ports above media's, this machine as the only
        trunk, and a connection key made for this run."""
        from devstack.sipp import free_udp_port

        return {"SVPL_SIP_HOST": "127.0.0.1", "SVPL_SIP_PORT": str(5060 if self.fixed_ports else free_udp_port()),
                "SVPL_RTP_PORT_MIN": "21000", "SVPL_RTP_PORT_MAX": "21099", "SVPL_TRUNK_NETWORKS": '["127.0.0.1/32"]',
                "SVPL_CONNECTION_KEY": secrets.token_hex(24)}

    @property
    def sip_address(self) -> str:
        """Where a SIP client (SIPp, baresip) calls the dial-in service; "" without it."""
        proc = self.procs.get("dialin")
        return f"sip:dialin@127.0.0.1:{proc.env['SVPL_SIP_PORT']}" if proc else ""

    def start_process(self, name: str) -> None:
        proc = self.procs[name]
        log = open(proc.log_path, "ab")
        proc.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{proc.module or name}"], env=proc.env, cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def wait_healthy(self, name: str, timeout: float = 15.0, service: str = "") -> None:
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        if (proc.module or name) == "gateway":
            import httpx

            while True:
                self._check_alive(proc)
                try:
                    if httpx.get(f"http://{proc.address}/healthz", timeout=0.5).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gateway not healthy within {timeout}s; see {proc.log_path}")
                time.sleep(0.05)
        with grpc.insecure_channel(proc.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                self._check_alive(proc)
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=0.5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not SERVING within {timeout}s; see {proc.log_path}")
                time.sleep(0.05)

    @staticmethod
    def _check_alive(proc: Proc) -> None:
        if proc.process is None or proc.process.poll() is not None:
            tail = proc.log_path.read_text(errors="replace")[-2000:] if proc.log_path.exists() else ""
            raise RuntimeError(f"{proc.name} exited early:\n{tail}")

    def start(self, names: list[str] | None = None, timeout: float = 15.0) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_database()
            self.prepare_keys()
            self.plan()
            names = names or list(self.procs)
            for name in names:
                self.start_process(name)
            for name in names:
                self.wait_healthy(name, timeout)
        except BaseException:
            self.stop()  # a start that fails leaves nothing running, the database included
            raise
        return self

    def add_replica(self, name: str, of: str, **env: str) -> Proc:
        """One more process of service `of` (its environment, its own ports and log), started."""
        original = self.procs[of]
        proc = Proc(name, free_port(), free_port(), {**original.env, **env}, self.workdir / f"{name}.log", module=of)
        proc.env.update({"SVPL_GRPC_PORT": str(proc.port), "SVPL_METRICS_PORT": str(proc.metrics_port)})
        if of == "gateway":
            proc.env["SVPL_HTTP_PORT"] = str(proc.port)
        self.procs[name] = proc
        self.start_process(name)
        self.wait_healthy(name)
        return proc

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        proc = self.procs[name]
        if proc.process is None:
            return None
        if proc.process.poll() is None:
            proc.process.send_signal(sig)
            try:
                proc.process.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()
        code = proc.process.returncode
        proc.process = None
        return code

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop_process(name)
        if self.db:
            self.db.stop()
