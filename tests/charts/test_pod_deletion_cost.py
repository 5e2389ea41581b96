"""The media pod's deletion-cost updater against a local HTTPS endpoint that stands in for
the Kubernetes API server: in-cluster configuration (token + CA files, KUBERNETES_SERVICE_*),
and exactly one JSON merge patch of exactly its two annotations of exactly this pod: the deletion
cost, and the cluster autoscaler's safe-to-evict mark while anyone is connected."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client.exceptions import ApiException

from services.media import pod_deletion_cost
from services.media.pod_deletion_cost import ANNOTATION, SAFE_TO_EVICT, from_environment

POD, NAMESPACE, TOKEN = "svpl-media-7d9f-abcde", "care", "sa-token-for-media"


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def _scheme_lowered(value: str) -> str:
    scheme, _, credentials = value.partition(" ")
    return f"{scheme.lower()} {credentials}"


class FakeApiServer:
    """Records every request; answers PATCH of the one pod like the API server does."""

    def __init__(self, cert_path, key_path):
        self.requests: list[dict] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append({
                    "method": self.command, "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    # The auth scheme is case-insensitive (RFC 9110 11.1); the client sends "bearer".
                    "authorization": _scheme_lowered(self.headers.get("Authorization") or ""),
                    "body": json.loads(body) if body else None,
                })
                if outer.status != 200:
                    payload = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "Forbidden", "code": outer.status}
                else:
                    annotations = (json.loads(body).get("metadata", {}).get("annotations", {}) if body else {})
                    # A merge patch's null removes the key: the pod the API server returns lacks it.
                    annotations = {k: v for k, v in annotations.items() if v is not None}
                    payload = {"kind": "Pod", "apiVersion": "v1",
                               "metadata": {"name": POD, "namespace": NAMESPACE, "annotations": annotations}}
                data = json.dumps(payload).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_PATCH = do_GET = do_POST = do_PUT = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api_server(tmp_path, monkeypatch):
    cert_path, key_path = _self_signed(tmp_path)
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(TOKEN)
    (sa / "ca.crt").write_bytes(cert_path.read_bytes())
    (sa / "namespace").write_text(NAMESPACE + "\n")
    with FakeApiServer(cert_path, key_path) as server:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        monkeypatch.setenv("SVPL_POD_NAME", POD)
        monkeypatch.delenv("SVPL_POD_NAMESPACE", raising=False)
        server.sa_dir = str(sa)
        yield server


def test_updater_is_off_outside_kubernetes(monkeypatch):
    monkeypatch.delenv("SVPL_POD_NAME", raising=False)
    assert from_environment(lambda: 0) is None


def test_patches_only_its_own_pods_deletion_cost_annotation_with_a_merge_patch(api_server):
    load = {"participants": 7}
    updater = from_environment(lambda: load["participants"], service_account_dir=api_server.sa_dir)

    assert updater.update() is True

    assert api_server.requests == [{
        "method": "PATCH",
        "path": f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}",
        "content_type": "application/merge-patch+json",
        "authorization": f"bearer {TOKEN}",
        "body": {"metadata": {"annotations": {ANNOTATION: "7", SAFE_TO_EVICT: "false"}}},
    }]


def test_unchanged_load_sends_nothing_and_a_new_load_sends_the_new_value(api_server):
    load = {"participants": 4}
    updater = from_environment(lambda: load["participants"], service_account_dir=api_server.sa_dir)
    updater.update()
    assert updater.update() is False
    load["participants"] = 0
    assert updater.update() is True

    assert [r["body"]["metadata"]["annotations"][ANNOTATION] for r in api_server.requests] == ["4", "0"]
    assert updater.published == 0
    # Not safe to evict while anyone is connected; the mark is removed (merge patch null) once empty.
    assert [r["body"]["metadata"]["annotations"][SAFE_TO_EVICT] for r in api_server.requests] == ["false", None]


def test_a_refused_patch_is_not_taken_as_published(api_server):
    api_server.status = 403
    updater = from_environment(lambda: 5, service_account_dir=api_server.sa_dir)
    with pytest.raises(ApiException) as refused:
        updater.update()
    assert refused.value.status == 403
    assert updater.published is None
    api_server.status = 200
    assert updater.update() is True
    assert updater.published == 5


async def test_run_keeps_publishing_through_api_errors(api_server):
    load = {"participants": 2}
    api_server.status = 500
    updater = from_environment(lambda: load["participants"], service_account_dir=api_server.sa_dir,
                               interval_seconds=0.05)
    task = asyncio.create_task(updater.run())
    try:
        async def published(value):
            while updater.published != value:
                await asyncio.sleep(0.02)

        while not api_server.requests:
            await asyncio.sleep(0.02)
        api_server.status = 200
        await asyncio.wait_for(published(2), 10)
        load["participants"] = 9
        await asyncio.wait_for(published(9), 10)
    finally:
        task.cancel()
    bodies = [r["body"] for r in api_server.requests]
    assert bodies[-1] == {"metadata": {"annotations": {ANNOTATION: "9", SAFE_TO_EVICT: "false"}}}
    assert all(r["path"] == f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}" for r in api_server.requests)


def test_load_outside_int32_is_clamped():
    sent = []

    class Api:
        def patch_namespaced_pod(self, name, namespace, body, _content_type):
            sent.append(body)

    pod_deletion_cost.PodDeletionCost(Api(), POD, NAMESPACE, lambda: 2**40).update()
    assert sent == [{"metadata": {"annotations": {ANNOTATION: str(2**31 - 1), SAFE_TO_EVICT: "false"}}}]
