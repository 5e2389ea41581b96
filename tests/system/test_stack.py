"""Every service as its own process, as `make run` starts them."""

import signal
import time

import grpc
import httpx
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from svpl.identity.v1 import identity_pb2, identity_pb2_grpc

from devstack.stack import GRPC_SERVICES, Stack
from tests.polling import poll_blocking

SERVICE_NAMES = {
    "identity": "svpl.identity.v1.IdentityService",
    "booking": "svpl.booking.v1.BookingService",
    "roster": "svpl.roster.v1.RosterService",
    "media": "svpl.media.v1.MediaService",
    "support": "svpl.support.v1.SupportService",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack"), extra_env={"SVPL_DB_CHECK_SECONDS": "0.2"})
    started = time.monotonic()
    s.start(timeout=30)
    s.startup_seconds = time.monotonic() - started
    yield s
    s.stop()


def health_status(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def wait_for_status(address: str, service: str, wanted: int, timeout: float = 15.0) -> None:
    def status() -> int | grpc.StatusCode:
        try:
            return health_status(address, service)
        except grpc.RpcError as exc:
            return exc.code()

    poll_blocking(status, timeout, f"{address} {service}: status {wanted}", until=lambda last: last == wanted)


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_every_service_reports_serving(stack, name):
    address = stack.procs[name].address
    assert health_status(address, "") == health_pb2.HealthCheckResponse.SERVING
    assert health_status(address, SERVICE_NAMES[name]) == health_pb2.HealthCheckResponse.SERVING


def test_gateway_answers(stack):
    assert httpx.get(f"http://{stack.procs['gateway'].address}/healthz").status_code == 200


def test_metrics_show_per_method_rpc_counters(stack):
    with grpc.insecure_channel(stack.procs["identity"].address) as channel:
        identity_pb2_grpc.IdentityServiceStub(channel).GetSigningKeys(identity_pb2.GetSigningKeysRequest())
    text = httpx.get(f"http://127.0.0.1:{stack.procs['identity'].metrics_port}/metrics").text
    assert ('svpl_grpc_server_handled_total{grpc_code="OK",grpc_method="GetSigningKeys",'
            'grpc_service="svpl.identity.v1.IdentityService"}') in text
    assert "svpl_grpc_server_handling_seconds_bucket" in text


@pytest.mark.parametrize("name", ["booking", "gateway"])
def test_each_process_exports_when_its_service_token_expires(stack, name):
    """What SvplServiceTokenExpiresSoon watches: the exp claim of the token the process was given."""
    exp = jwt.decode(stack.tokens[name], options={"verify_signature": False})["exp"]
    text = httpx.get(f"http://127.0.0.1:{stack.procs[name].metrics_port}/metrics").text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("svpl_service_token_expiry_timestamp_seconds ")]
    assert float(line.split()[1]) == exp and exp > time.time() + 7 * 86400


def test_service_survives_the_database_restarting_under_it(stack):
    booking = stack.procs["booking"]
    name = SERVICE_NAMES["booking"]
    stack.db.kill()
    wait_for_status(booking.address, name, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert health_status(booking.address, "") == health_pb2.HealthCheckResponse.SERVING  # alive, not ready
    stack.db.start()
    wait_for_status(booking.address, name, health_pb2.HealthCheckResponse.SERVING)
    assert booking.process.poll() is None
    # The stack is shared by the tests that follow: every service back to ready, not only booking.
    for other in GRPC_SERVICES:
        wait_for_status(stack.procs[other].address, SERVICE_NAMES[other], health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_sigterm_turns_the_service_not_serving_then_stops(stack, name):
    proc = stack.procs[name]
    channel = grpc.insecure_channel(proc.address)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAMES[name]))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    proc.process.send_signal(signal.SIGTERM)
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    channel.close()
    assert proc.process.wait(20) == 0  # a clean exit after the graceful stop
    proc.process = None


def test_a_start_that_fails_leaves_nothing_running(tmp_path):
    """One service cannot start (the gateway's settings do not parse): the stack stops every process
    it started, the database included, before it reports the failure."""
    started = []

    class Watched(Stack):
        def start_database(self) -> None:
            super().start_database()
            started.append(self.database.process)

        def start_process(self, name: str) -> None:
            super().start_process(name)
            started.append(self.procs[name].process)

    s = Watched(tmp_path / "stack", extra_env={"SVPL_DEVELOPMENT_PEOPLE": "not a list"})
    try:
        with pytest.raises(RuntimeError, match="gateway"):
            s.start(timeout=30)
        assert len(started) == 1 + len(s.procs)
        assert [p.args for p in started if p.poll() is None] == []
    finally:
        s.stop()  # should this test fail, it leaves nothing behind either
