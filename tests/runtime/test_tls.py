"""Mutual TLS between the services, with real certificates: the services book a meeting over it,
a caller without a certificate from the services' CA is refused, and rotated files are used by new
connections without a restart."""

from __future__ import annotations

import socket
import ssl

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.pki import make_ca
from services.gateway.app import create_app
from services.runtime import clients
from services.runtime.config import ServiceSettings
from services.runtime.server import Component
from services.runtime.tls import ClientTls, TlsConfigError, TlsFiles, channel_credentials, server_credentials
from tests.gateway.conftest import COORDINATOR, Browser, gateway_settings
from tests.gateway.flow import book_video_meeting, start
from tests.polling import poll
from tests.service_tls import ServicePki, mount, new_pki

SERVICES = ["identity", "media", "roster", "booking"]


@pytest.fixture
def pki(tmp_path) -> ServicePki:
    return new_pki(tmp_path)


async def check(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    return reply.status


async def refused(channel: grpc.aio.Channel) -> bool:
    """The call gets no answer: the connection's handshake failed."""
    try:
        await check(channel)
    except grpc.aio.AioRpcError as exc:
        return exc.code() == grpc.StatusCode.UNAVAILABLE
    return False


def served_certificate(port: int, client: TlsFiles) -> x509.Certificate:
    """The certificate the server presents to a new connection now (a plain TLS handshake, h2)."""
    context = ssl.create_default_context(cafile=str(client.ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der)


@pytest.fixture
async def tls_server(serve, keyring, pki):
    """A service with no bindings of its own (health and reflection) serving mutual TLS."""
    return await serve(Component([]), keyring.keyset(), tls_files=pki.files("probe"))


async def test_services_book_and_start_a_meeting_over_mutual_tls(system_factory, pki):
    """Gateway → identity, booking → roster → identity, roster → media: every hop a TLS connection,
    each side's certificate verified; a coordinator books and starts a meeting through the gateway's
    HTTP API. Media is called at its address and verified by its name (as in the cluster)."""
    overrides = {name: {**pki.settings(name), "tls_media_server_name": "svpl-media"} for name in SERVICES}
    overrides["identity"]["development_login"] = True
    system = await system_factory(SERVICES, overrides=overrides)
    app = create_app(gateway_settings(system, **pki.settings("gateway"), tls_media_server_name="svpl-media"))
    browser = Browser(app)
    try:
        await browser.login(COORDINATOR)
        booking = await book_video_meeting(browser)
        meeting = await start(browser, booking["meeting_id"])
        assert meeting["media_instance"], meeting
    finally:
        await browser.close()
        await app.state.backends.close()


async def test_callers_without_a_certificate_from_the_services_ca_are_refused(tls_server, pki, tmp_path):
    """A plaintext caller, a TLS caller with no certificate, and one whose certificate another CA
    issued (trusting the server's CA all the same) get no answer; a service's certificate does."""
    address = f"localhost:{tls_server.port}"
    assert await check(clients.channel(address, pki.client())) == health_pb2.HealthCheckResponse.SERVING
    ca_only = grpc.ssl_channel_credentials(root_certificates=pki.ca.pem.encode())
    stranger_ca = make_ca("Someone else's CA")
    stranger = mount(tmp_path / "stranger", pki.issue("stranger", stranger_ca), pki.ca)
    attempts = {
        "plaintext": grpc.aio.insecure_channel(address),
        "no client certificate": grpc.aio.secure_channel(address, ca_only),
        "another CA's certificate": grpc.aio.secure_channel(address, channel_credentials(stranger)),
    }
    for what, channel in attempts.items():
        async with channel:
            assert await refused(channel), what


async def test_client_refuses_a_server_whose_name_is_not_in_its_certificate(tls_server, pki):
    channel = clients.channel(f"127.0.0.1:{tls_server.port}", pki.client(), server_name="svpl-roster")
    async with channel:
        assert await refused(channel)
    named = clients.channel(f"127.0.0.1:{tls_server.port}", pki.client(), server_name="svpl-probe")
    async with named:
        assert await check(named) == health_pb2.HealthCheckResponse.SERVING


async def test_rotated_files_are_used_by_new_connections_without_a_restart(serve, keyring, pki, tmp_path):
    """The CA itself is replaced: the server's files first (new callers must bring the new CA's
    certificates), then the client's; the client's channel picks its new files up by itself."""
    server = await serve(Component([]), keyring.keyset(), tls_files=pki.files("probe"))
    address = f"localhost:{server.port}"
    reloading = clients.channel(address, ClientTls(pki.files("caller"), reload_seconds=0.05))
    assert await check(reloading) == health_pb2.HealthCheckResponse.SERVING
    first = served_certificate(server.port, pki.files("observer"))

    new_ca = make_ca("svpl services test CA 2")
    mount(pki.root / "probe", pki.issue("probe", new_ca), new_ca)
    observer = pki.files("observer", new_ca)
    rotated = await poll(lambda: served_certificate(server.port, observer), timeout=10,
                         what="the server presents its new certificate",
                         until=lambda cert: cert.serial_number != first.serial_number)
    assert rotated.issuer != first.issuer
    old_caller = grpc.aio.secure_channel(address, channel_credentials(TlsFiles(
        pki.root / "caller" / "tls.crt", pki.root / "caller" / "tls.key", pki.root / "caller" / "ca.crt")))
    async with old_caller:
        assert await refused(old_caller), "a new connection with the old CA's certificate"

    mount(pki.root / "caller", pki.issue("caller", new_ca), new_ca)

    async def answers() -> bool:
        try:
            return await check(reloading) == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            return False
    await poll(answers, timeout=10, what="the caller's channel uses its new certificate")
    await reloading.close()


def test_a_key_that_is_not_the_certificates_is_refused_at_start(pki, tmp_path):
    files = pki.files("probe")
    other = mount(tmp_path / "other", pki.issue("other"), pki.ca)
    with pytest.raises(TlsConfigError, match="is not the key of"):
        server_credentials(TlsFiles(files.cert, other.key, files.ca))


def test_tls_settings_are_all_three_files_or_none():
    with pytest.raises(ValueError, match="set all three or none"):
        ServiceSettings(service_name="x", mongodb_uri="mongodb://x", tls_cert_file="/a.pem")
    assert ServiceSettings(service_name="x", mongodb_uri="mongodb://x").tls_files is None


async def test_probes_get_health_in_plaintext_on_their_own_port_and_nothing_else(serve, keyring, pki):
    """The kubelet's grpc probes speak no TLS: health alone answers them, on the health port."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    server = await serve(Component([]), keyring.keyset(), tls_files=pki.files("probe"),
                         health_address="127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as probe:
        assert await check(probe) == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(probe).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stream.read()
        assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_files_that_do_not_belong_together_leave_the_previous_certificate_in_use(tls_server, pki):
    """A rotation seen half-way (a certificate with another one's key) is not taken: new connections
    keep getting the previous certificate, until the files belong together again."""
    observer = pki.files("observer")
    first = served_certificate(tls_server.port, observer)
    files = mount(pki.root / "probe", pki.issue("probe"), pki.ca)
    files.key.resolve().write_text(pki.issue("someone-else").key_pem)  # the new version's key replaced
    async with grpc.aio.secure_channel(f"localhost:{tls_server.port}", channel_credentials(observer)) as fresh:
        assert await check(fresh) == health_pb2.HealthCheckResponse.SERVING
    assert served_certificate(tls_server.port, observer).serial_number == first.serial_number
    renewed = pki.issue("probe")
    mount(pki.root / "probe", renewed, pki.ca)
    await poll(lambda: served_certificate(tls_server.port, observer).serial_number, timeout=10,
               what="the renewed certificate served", until=lambda serial: serial == renewed.cert.serial_number)
