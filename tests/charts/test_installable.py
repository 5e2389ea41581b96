"""Issue #16 in the chart: the portal's Ingress with SITHS client-certificate verification, the
outside systems each required or switched off, the alert for messages waiting on a switched-off
destination, scheduling knobs per component and DNS egress that works with NodeLocal DNSCache.
Rendered offline, validated strictly (Kubernetes 1.30 schemas), and the services' own settings
parsed from what the chart gives them."""

from __future__ import annotations

import os
from unittest import mock

import helm_python as helm
import kubernetes_validate
import pytest

from tests.charts.conftest import NAMESPACE, RELEASE, SERVICES, merged

FULL = f"{RELEASE}-svpl"
KUBE_VERSION = "1.30.0"
NGINX = "nginx.ingress.kubernetes.io/"


def refused(chart, values: dict) -> str:
    with pytest.raises((helm.HelmRenderError, helm.HelmValuesError)) as error:
        chart.render(merged(values), name=RELEASE, namespace=NAMESPACE)
    return str(error.value)


def settings_from(config: dict, cls, **env: str):
    """The service's settings as it would load them from the chart's ConfigMap (and its Secrets)."""
    from services.runtime.config import load_settings

    values = {k: v for k, v in config.items() if k.startswith("SVPL_")}
    with mock.patch.dict(os.environ, {**values, "SVPL_MONGODB_URI": "mongodb://db:27017", **env}, clear=True):
        return load_settings(cls)


# ---------------------------------------------------------------- Ingress and SITHS


def test_the_ingress_verifies_siths_cards_and_passes_the_certificate_to_the_gateway(render):
    r = render()
    ingress = r.get("Ingress", f"{FULL}-portal")
    kubernetes_validate.validate(ingress, KUBE_VERSION, strict=True)
    a = ingress["metadata"]["annotations"]
    # Optional: BankID and 1177 users have no card; a presented card must verify against the bundle.
    assert a[NGINX + "auth-tls-verify-client"] == "optional"
    assert a[NGINX + "auth-tls-secret"] == f"{NAMESPACE}/svpl-siths-ca"
    assert a[NGINX + "auth-tls-verify-depth"] == "3"
    assert a[NGINX + "auth-tls-pass-certificate-to-upstream"] == "true"
    # The meeting events WebSocket lives for a meeting; TLS only.
    assert a[NGINX + "proxy-read-timeout"] == a[NGINX + "proxy-send-timeout"] == "3600"
    assert a[NGINX + "force-ssl-redirect"] == "true"
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["vardmote.example.se"], "secretName": "svpl-portal-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "vardmote.example.se"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": f"{FULL}-gateway", "port": {"name": "http"}}
    gateway_ports = {p["name"] for p in r.get("Service", f"{FULL}-gateway")["spec"]["ports"]}
    assert "http" in gateway_ports
    # Identity checks the chain again against the very same Secret.
    identity = r.deployment("identity")["spec"]["template"]["spec"]
    volume = next(v for v in identity["volumes"] if v["name"] == "siths-ca")
    assert volume["secret"]["secretName"] == "svpl-siths-ca"
    assert r.config("identity")["SVPL_SITHS_CA_FILES"] == "/var/run/svpl/siths/ca.crt"
    mount = next(m for m in r.container("identity")["volumeMounts"] if m["name"] == "siths-ca")
    assert mount["mountPath"] == "/var/run/svpl/siths" and mount["readOnly"] is True


def test_the_gateway_reads_the_headers_ingress_nginx_sets_from_the_controllers_addresses_only(render):
    from services.gateway.config import GatewaySettings

    config = render({"gateway": {"trustedProxies": ["10.42.0.0/16"], "headerReadTimeoutSeconds": 5}}).config("gateway")
    settings = settings_from(config, GatewaySettings, SVPL_SERVICE_TOKEN="t")
    assert settings.trusted_proxies == ["10.42.0.0/16"]
    assert (settings.siths_certificate_header, settings.siths_verify_header) == ("ssl-client-cert", "ssl-client-verify")
    assert settings.header_read_timeout_seconds == 5
    assert settings.public_url == "https://vardmote.example.se"


def test_the_siths_annotations_cannot_be_overridden_and_more_can_be_added(render):
    a = render({"ingress": {"annotations": {NGINX + "auth-tls-verify-client": "off",
                                            NGINX + "limit-rps": "20"}}}).get("Ingress", f"{FULL}-portal")
    assert a["metadata"]["annotations"][NGINX + "auth-tls-verify-client"] == "optional"
    assert a["metadata"]["annotations"][NGINX + "limit-rps"] == "20"


def test_cert_manager_can_issue_the_portal_certificate(render):
    ingress = render({"ingress": {"tls": {"secretName": "", "certManager": {"issuer": "letsencrypt"}}}}).get(
        "Ingress", f"{FULL}-portal")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["tls"][0]["secretName"] == f"{FULL}-portal-tls"
    namespaced = render({"ingress": {"tls": {"secretName": "", "certManager": {"issuer": "ca", "issuerKind": "Issuer"}}}})
    assert namespaced.get("Ingress", f"{FULL}-portal")["metadata"]["annotations"]["cert-manager.io/issuer"] == "ca"


def test_the_ingress_needs_a_certificate_and_the_siths_bundle(chart):
    assert "ingress.tls: set secretName" in refused(chart, {"ingress": {"tls": {"secretName": ""}}})
    assert "caSecret" in refused(chart, {"identity": {"siths": {"caSecret": ""}}})


def test_siths_switched_off_asks_for_no_card_and_identity_refuses_siths_logins(render):
    from services.identity.config import IdentitySettings

    r = render({"identity": {"siths": {"enabled": False, "caSecret": ""}}})
    annotations = r.get("Ingress", f"{FULL}-portal")["metadata"]["annotations"]
    assert not [k for k in annotations if "auth-tls" in k]
    assert "siths-ca" not in {v["name"] for v in r.deployment("identity")["spec"]["template"]["spec"]["volumes"]}
    settings = settings_from(r.config("identity"), IdentitySettings)
    assert settings.siths_enabled is False and settings.siths_ca_files == ""


def test_no_ingress_when_switched_off(render):
    assert not render({"ingress": {"enabled": False}}).of_kind("Ingress")


# ---------------------------------------------------------------- outside systems


@pytest.mark.parametrize(("missing", "named"), [
    ({"gateway": {"publicUrl": ""}}, "/gateway/publicUrl"),
    ({"gateway": {"publicUrl": "http://vardmote.example.se"}}, "/gateway/publicUrl"),
    ({"booking": {"cosmicLink": {"url": ""}}}, "/booking/cosmicLink/url"),
    ({"roster": {"inbox1177": {"url": ""}}}, "/roster/inbox1177/url"),
    ({"identity": {"directory": {"ldap": {"url": ""}}}}, "/identity/directory/ldap/url"),
    ({"identity": {"directory": {"ldap": {"baseDn": ""}}}}, "/identity/directory/ldap/baseDn"),
    ({"identity": {"siths": {"caSecret": ""}}}, "/identity/siths/caSecret"),
])
def test_an_outside_system_neither_set_nor_switched_off_is_refused_by_the_schema(chart, missing, named):
    with pytest.raises(helm.HelmValuesError) as error:
        chart.render(merged(missing), name=RELEASE, namespace=NAMESPACE)
    assert named in str(error.value)


def test_each_service_starts_with_what_the_chart_gives_it(render):
    """The services' own start checks (services/*/config.py) accept the rendered settings."""
    from services.booking.config import BookingSettings
    from services.identity.config import IdentitySettings
    from services.roster.config import RosterSettings

    r = render({"booking": {"cosmicLink": {"tokenSecret": {"name": "svpl-cosmic"}}},
                "identity": {"directory": {"ldap": {"bindDn": "cn=svpl,o=Region", "bindPasswordSecret": {
                    "name": "svpl-hsa"}}}}})
    booking = settings_from(r.config("booking"), BookingSettings)
    assert booking.cosmic_link_enabled and booking.cosmic_link_url == "https://cosmic-bridge.example.se/messages"
    roster = settings_from(r.config("roster"), RosterSettings)
    assert roster.portal_base_url == "https://vardmote.example.se"
    assert roster.inbox_1177_enabled and roster.inbox_1177_url == "https://inbox.1177.example.se/api"
    identity = settings_from(r.config("identity"), IdentitySettings, SVPL_SIGNING_KEYS_DIR="/k")
    assert (identity.directory_backend, identity.ldap_url, identity.ldap_base_dn, identity.ldap_bind_dn) == (
        "ldap", "ldaps://hsa.example.se:636", "c=SE", "cn=svpl,o=Region")
    # The secrets by reference, into the services that use them.
    for service, variable, secret, key in [("booking", "SVPL_COSMIC_LINK_TOKEN", "svpl-cosmic", "token"),
                                           ("identity", "SVPL_LDAP_BIND_PASSWORD", "svpl-hsa", "password")]:
        env = {e["name"]: e for e in r.container(service)["env"]}
        assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}
        for other in set(SERVICES) - {service}:
            assert variable not in {e["name"] for e in r.container(other)["env"]}


def test_an_outside_system_switched_off_is_said_so_and_its_address_not_needed(render):
    from services.booking.config import BookingSettings
    from services.roster.config import RosterSettings

    r = render({"booking": {"cosmicLink": {"enabled": False, "url": ""}},
                "roster": {"inbox1177": {"enabled": False, "url": "", "clientCertSecret": ""}}})
    assert r.config("booking")["SVPL_COSMIC_LINK_ENABLED"] == "false"
    assert "SVPL_COSMIC_LINK_URL" not in r.config("booking")
    assert not settings_from(r.config("booking"), BookingSettings).cosmic_link_enabled
    assert not settings_from(r.config("roster"), RosterSettings).inbox_1177_enabled


def test_an_alert_fires_while_messages_wait_for_a_switched_off_destination(render):
    rule = render({"metrics": {"prometheusRule": {"enabled": True}}}).of_kind("PrometheusRule")[0]
    alerts = {a["alert"]: a for g in rule["spec"]["groups"] for a in g["rules"]}
    alert = alerts["SvplOutboxDestinationNotConfigured"]
    assert "svpl_outbox_undeliverable_messages" in alert["expr"] and f'namespace="{NAMESPACE}"' in alert["expr"]
    assert alert["labels"]["severity"] == "warning"


# ---------------------------------------------------------------- scheduling and DNS


def test_scheduling_knobs_per_component_and_from_the_defaults(render):
    toleration = {"key": "dedicated", "operator": "Equal", "value": "media", "effect": "NoSchedule"}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "svpl.io/media", "operator": "In", "values": ["true"]}]}]}}}
    r = render({"componentDefaults": {"priorityClassName": "svpl", "podAnnotations": {"team": "vardmote"}},
                "components": {"media": {"nodeSelector": {"svpl.io/media": "true"}, "tolerations": [toleration],
                                         "affinity": affinity, "priorityClassName": "svpl-media",
                                         "podAnnotations": {"mesh/inject": "false"}}}})
    media = r.deployment("media")["spec"]["template"]
    assert media["spec"]["nodeSelector"] == {"svpl.io/media": "true"}
    assert media["spec"]["tolerations"] == [toleration]
    assert media["spec"]["affinity"] == affinity
    assert media["spec"]["priorityClassName"] == "svpl-media"
    assert media["metadata"]["annotations"]["mesh/inject"] == "false"
    assert "checksum/config" in media["metadata"]["annotations"]
    booking = r.deployment("booking")["spec"]["template"]
    assert booking["spec"]["priorityClassName"] == "svpl"
    assert booking["metadata"]["annotations"]["team"] == "vardmote"
    assert "nodeSelector" not in booking["spec"] and "tolerations" not in booking["spec"]
    for d in r.of_kind("Deployment"):
        kubernetes_validate.validate(d, KUBE_VERSION, strict=True)


def test_media_pods_spread_over_nodes_and_zones_by_default_and_a_spread_of_ones_own_replaces_it(render):
    spread = render().deployment("media")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    selector = {"matchLabels": {"app.kubernetes.io/name": "svpl-media", "app.kubernetes.io/instance": RELEASE}}
    assert {(t["topologyKey"], t["maxSkew"]) for t in spread} == {("kubernetes.io/hostname", 1),
                                                                  ("topology.kubernetes.io/zone", 1)}
    assert all(t["labelSelector"] == selector for t in spread)
    own = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}
    mine = render({"components": {"media": {"topologySpreadConstraints": [own]}}}).deployment("media")
    assert mine["spec"]["template"]["spec"]["topologySpreadConstraints"] == [{**own, "labelSelector": selector}]


def test_the_schema_refuses_scheduling_knobs_it_does_not_know(chart):
    assert "tolerations" in refused(chart, {"components": {"media": {"tolerations": [{"effect": "Sometimes"}]}}})
    assert "affinity" in refused(chart, {"components": {"media": {"affinity": {"nodeAfinity": {}}}}})
    assert "topologySpreadConstraints" in refused(
        chart, {"components": {"media": {"topologySpreadConstraints": [{"maxSkew": 1}]}}})


def test_dns_egress_reaches_nodelocal_dnscache_as_well_as_kube_dns(render):
    r = render()
    for name in [f"{FULL}-{s}" for s in SERVICES] + [f"{FULL}-test"]:
        (dns,) = [rule for rule in r.get("NetworkPolicy", name)["spec"]["egress"]
                  if {p["port"] for p in rule["ports"]} == {53}]
        assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in dns["to"], name
        assert any("podSelector" in peer for peer in dns["to"]), name  # and kube-dns / CoreDNS
    without = render({"networkPolicy": {"dns": {"nodeLocalCache": []}}}).get("NetworkPolicy", f"{FULL}-gateway")
    (dns,) = [rule for rule in without["spec"]["egress"] if {p["port"] for p in rule["ports"]} == {53}]
    assert not [peer for peer in dns["to"] if "ipBlock" in peer]


def test_on_cilium_media_reaches_the_api_server_as_the_kube_apiserver_entity(render, chart):
    r = render({"networkPolicy": {"apiServer": {"cidrs": [], "ciliumEntity": True}}})
    (policy,) = r.of_kind("CiliumNetworkPolicy")
    assert policy["apiVersion"] == "cilium.io/v2"
    assert set(policy["spec"]) == {"endpointSelector", "egress"}
    assert policy["spec"]["endpointSelector"]["matchLabels"]["app.kubernetes.io/name"] == "svpl-media"
    assert policy["spec"]["egress"] == [{"toEntities": ["kube-apiserver"], "toPorts": [{"ports": [
        {"port": "443", "protocol": "TCP"}, {"port": "6443", "protocol": "TCP"}]}]}]
    media = r.get("NetworkPolicy", f"{FULL}-media")["spec"]["egress"]
    assert not [rule for rule in media if any("ipBlock" in p for p in rule["to"]) and 443 in {
        p["port"] for p in rule["ports"]}]
    assert not render().of_kind("CiliumNetworkPolicy")
    assert "ciliumEntity" in refused(chart, {"networkPolicy": {"apiServer": {"cidrs": []}}})
