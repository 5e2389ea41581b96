"""The chart's mutual TLS between the services (serviceTls) and tracing (tracing) values: each
component mounts its own Secret and is told where the files are, the probes ask the plaintext
health port, cert-manager Certificates name each Service, plaintext is refused, and the OTLP
endpoint reaches every component with a path through the network policies."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate
import pytest

from tests.charts.conftest import NAMESPACE, RELEASE, SERVICES, merged
from tests.charts.test_chart import FULL, GRPC, KUBE_VERSION

CERT_MANAGER = {"serviceTls": {"certManager": {"enabled": True, "issuerRef": {"name": "svpl-services-ca"}}}}
TRACING = {"tracing": {"otlpEndpoint": "http://otel-collector.observability:4317", "sampleRatio": 0.25,
                       "collectorTo": [{"namespaceSelector": {"matchLabels": {
                           "kubernetes.io/metadata.name": "observability"}}}]}}


def test_every_component_mounts_its_own_tls_secret_and_reads_its_files_from_it(render):
    r = render({"serviceTls": {"secretNames": {"media": "media-from-vault"}}})
    for s in SERVICES:
        spec = r.deployment(s)["spec"]["template"]["spec"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "service-tls"]
        assert volume["secret"]["secretName"] == ("media-from-vault" if s == "media" else f"{FULL}-{s}-tls")
        (mount,) = [m for m in r.container(s)["volumeMounts"] if m["name"] == "service-tls"]
        assert mount == {"name": "service-tls", "mountPath": "/var/run/svpl/tls", "readOnly": True}
        config = r.config(s)
        assert (config["SVPL_TLS_CERT_FILE"], config["SVPL_TLS_KEY_FILE"], config["SVPL_TLS_CA_FILE"]) == (
            "/var/run/svpl/tls/tls.crt", "/var/run/svpl/tls/tls.key", "/var/run/svpl/tls/ca.crt")
        assert config["SVPL_TLS_MEDIA_SERVER_NAME"] == f"{FULL}-media"
        assert "SVPL_OTLP_ENDPOINT" not in config  # tracing is off by default


def test_grpc_probes_ask_the_plaintext_health_port_not_the_tls_port(render):
    r = render({"serviceTls": {"healthPort": 9555}})
    for s in GRPC:
        c = r.container(s)
        assert {"name": "health", "containerPort": 9555, "protocol": "TCP"} in c["ports"]
        assert r.config(s)["SVPL_HEALTH_PORT"] == "9555"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["grpc"]["port"] == 9555


def test_cert_manager_certificates_name_each_service_and_fill_its_secret(render):
    r = render(CERT_MANAGER)
    certificates = {c["metadata"]["name"]: c for c in r.of_kind("Certificate")}
    assert set(certificates) == {f"{FULL}-{s}-tls" for s in SERVICES}
    for s in SERVICES:
        spec = certificates[f"{FULL}-{s}-tls"]["spec"]
        assert spec["secretName"] == f"{FULL}-{s}-tls"
        assert {f"{FULL}-{s}", f"{FULL}-{s}.{NAMESPACE}.svc"} <= set(spec["dnsNames"])
        assert set(spec["usages"]) == {"digital signature", "server auth", "client auth"}
        assert spec["issuerRef"] == {"name": "svpl-services-ca", "kind": "Issuer", "group": "cert-manager.io"}
        assert spec["privateKey"]["rotationPolicy"] == "Always"
        assert spec["renewBefore"] == "240h" and spec["duration"] == "720h"
    # The name media's callers verify (they call its pods by address) is in media's certificate.
    assert r.config("roster")["SVPL_TLS_MEDIA_SERVER_NAME"] in certificates[f"{FULL}-media-tls"]["spec"]["dnsNames"]
    assert render().of_kind("Certificate") == []


def test_every_manifest_with_tls_and_tracing_is_valid(render):
    for m in render(CERT_MANAGER, TRACING).manifests:
        if m["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/")):
            continue  # CRDs: checked by hand above
        kubernetes_validate.validate(m, KUBE_VERSION, strict=True)


def test_plaintext_between_services_is_refused_unless_a_mesh_does_mutual_tls(chart):
    with pytest.raises(helm.HelmRenderError, match="serviceTls.enabled: the services' gRPC cannot be plaintext"):
        chart.render(merged({"serviceTls": {"enabled": False}}), name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm.HelmRenderError, match="serviceTls.certManager.issuerRef.name is required"):
        chart.render(merged({"serviceTls": {"certManager": {"enabled": True}}}), name=RELEASE, namespace=NAMESPACE)
    meshed = chart.render(merged({"serviceTls": {"enabled": False, "meshMutualTls": True}}), name=RELEASE,
                          namespace=NAMESPACE)
    assert "SVPL_TLS_CERT_FILE" not in "".join(meshed.values())


def test_a_component_cannot_turn_its_tls_off_through_its_environment(chart):
    for overlay in ({"components": {"booking": {"env": {"SVPL_TLS_CERT_FILE": ""}}}},
                    {"components": {"roster": {"extraEnv": [{"name": "SVPL_TLS_CA_FILE", "value": "/tmp/any.pem"}]}}}):
        with pytest.raises(helm.HelmRenderError, match="is set by serviceTls"):
            chart.render(merged(overlay), name=RELEASE, namespace=NAMESPACE)


def test_tracing_reaches_every_component_and_the_collector_through_the_policies(render):
    r = render(TRACING)
    for s in SERVICES:
        config = r.config(s)
        assert config["SVPL_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert config["SVPL_TRACE_SAMPLE_RATIO"] == "0.25"
        egress = r.get("NetworkPolicy", f"{FULL}-{s}")["spec"]["egress"]
        assert {"to": TRACING["tracing"]["collectorTo"], "ports": [{"port": 4317, "protocol": "TCP"}]} in egress


def test_values_schema_refuses_a_bad_otlp_endpoint_and_unknown_tls_keys(chart):
    for bad in ({"tracing": {"otlpEndpoint": "otel-collector:4317"}},
                {"serviceTls": {"secretNames": {"pager": "x"}}},
                {"serviceTls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca", "kind": "Vault"}}}}):
        with pytest.raises(helm.HelmValuesError):
            chart.render(merged(bad), name=RELEASE, namespace=NAMESPACE)
