"""The SITHS login path end to end, as a cluster runs it: the card's certificate is verified by the
TLS terminator in front of the gateway (a real nginx on loopback, configured with the directives
ingress-nginx generates for the chart's Ingress annotations: ssl_verify_client optional against the
SITHS CA bundle, the verified certificate forwarded URL-encoded in ssl-client-cert and the outcome in
ssl-client-verify), then by identity (chain, HSA-id, OCSP). The same headers sent by anyone but the
terminator are refused."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import urllib.parse

import httpx
import pytest

from devstack.embedded_db import free_port
from devstack.pki import PERSON_HSA_ID_CA, SITHS_SETTINGS, make_ca, make_leaf
from services.gateway.app import create_app
from tests.gateway.conftest import COORDINATOR, gateway_settings, serving
from tests.identity.ocsp_responder import OcspTestResponder
from tests.polling import poll

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TERMINATOR = "127.0.0.2"  # nginx connects to the gateway from this address (Linux routes all of 127/8 to lo)
CSRF = {"cookie": "svpl_csrf=t", "x-csrf-token": "t"}

# What ingress-nginx renders for auth-tls-verify-client: optional, auth-tls-secret (ca.crt),
# auth-tls-verify-depth and auth-tls-pass-certificate-to-upstream: "true" (its nginx.tmpl).
NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {server_cert};
    ssl_certificate_key {server_key};
    ssl_client_certificate {ca_bundle};
    ssl_verify_client optional;
    ssl_verify_depth 3;
    location / {{
      proxy_bind {terminator};
      proxy_pass http://{gateway};
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header ssl-client-verify $ssl_client_verify;
      proxy_set_header ssl-client-cert $ssl_client_escaped_cert;
    }}
  }}
}}
"""


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
async def test_a_siths_card_logs_in_through_a_verifying_tls_terminator_and_its_headers_from_elsewhere_are_refused(
        system_factory, tmp_path, tls_files):
    assert os.path.exists(NGINX), "nginx is needed (make system-deps)"
    root = make_ca("SITHS Root CA v1 Test")
    issuing = make_ca(PERSON_HSA_ID_CA, issuer=root)  # a card's HSA-id certificate comes from one
    # One bundle for both: the ingress's auth-tls-secret (ca.crt) and identity's SVPL_SITHS_CA_FILES.
    # It holds the issuing CAs too: nginx forwards the card's own certificate only, not its chain.
    bundle = tmp_path / "ca.crt"
    bundle.write_text(root.pem + issuing.pem)
    ocsp = await OcspTestResponder(free_port(), issuing).start()
    system = await system_factory(["identity"], overrides={"identity": {
        "siths_ca_files": str(bundle), "development_login": True, "siths_ocsp_url": ocsp.url, **SITHS_SETTINGS}})
    app = create_app(gateway_settings(system, trusted_proxies=[TERMINATOR]))
    card_cert, card_key = make_leaf(issuing, "Vera Samordnare", serial_number=COORDINATOR).write(tmp_path, "card")
    fake_cert, fake_key = make_leaf(make_ca("Not SITHS"), "Eve", serial_number=COORDINATOR).write(tmp_path, "fake")
    port = free_port()
    nginx = None
    try:
        async with serving(app) as gateway:
            (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(
                work=tmp_path, port=port, server_cert=tls_files["server_cert"], server_key=tls_files["server_key"],
                ca_bundle=bundle, terminator=TERMINATOR, gateway=gateway))
            nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            await poll(lambda: listening(port) or nginx.poll() is not None, 10, what="nginx listening")
            assert nginx.poll() is None, nginx.stderr.read().decode() if nginx.stderr else ""

            def through_nginx(cert=None) -> httpx.AsyncClient:
                context = ssl.create_default_context(cafile=tls_files["server_ca"])
                if cert:
                    context.load_cert_chain(*cert)
                return httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=context)

            async with through_nginx((card_cert, card_key)) as card:
                answer = await card.post("/api/v1/auth/siths", headers=CSRF)
                assert answer.status_code == 200, answer.text
                assert answer.json()["id"] == COORDINATOR and answer.json()["method"] == "siths"
                assert "svpl_session" in answer.headers.get("set-cookie", "")
            async with through_nginx() as no_card:
                missing = await no_card.post("/api/v1/auth/siths", headers=CSRF)
                assert missing.status_code == 401 and missing.json()["reason"] == "NO_CLIENT_CERTIFICATE", missing.text
                # A client cannot put the headers in itself: nginx sets both on every request.
                smuggled = await no_card.post("/api/v1/auth/siths", headers={
                    **CSRF, "ssl-client-verify": "SUCCESS", "ssl-client-cert": urllib.parse.quote(open(card_cert).read())})
                assert smuggled.status_code == 401 and smuggled.json()["reason"] == "NO_CLIENT_CERTIFICATE"
                # BankID and 1177 users have no card: the portal is open to them behind the same terminator.
                assert (await no_card.get("/healthz")).status_code == 200
            async with through_nginx((fake_cert, fake_key)) as fake:
                refused = await fake.post("/api/v1/auth/siths", headers=CSRF)
                assert refused.status_code == 400, refused.text  # nginx: the certificate is not a SITHS one

            # The very headers nginx sends, sent straight to the gateway from another address.
            async with httpx.AsyncClient(base_url=f"http://{gateway}") as direct:
                forged = await direct.post("/api/v1/auth/siths", headers={
                    **CSRF, "ssl-client-verify": "SUCCESS", "ssl-client-cert": urllib.parse.quote(open(card_cert).read())})
                assert forged.status_code == 403 and forged.json()["reason"] == "UNTRUSTED_PROXY", forged.text
                assert "svpl_session" not in forged.headers.get("set-cookie", "")
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        await app.state.backends.close()
        await ocsp.stop()
