"""The dial-in service's part of the chart (templates/dialin.yaml), rendered offline."""

from __future__ import annotations

import re

import helm_python as helm
import kubernetes_validate
import pytest

from tests.charts.conftest import NAMESPACE, RELEASE, ROOT, merged

DIALIN = {"dialin": {"enabled": True, "trunkNetworks": ["192.0.2.0/28", "198.51.100.7/32"],
                     "connectionKeySecret": {"name": "svpl-dialin", "key": "connection-key"},
                     "autoscaling": {"enabled": True}}}
NAME = f"{RELEASE}-svpl-dialin"


def test_off_by_default(render):
    assert not [m for m in render().manifests if "dialin" in m["metadata"]["name"]]


@pytest.mark.parametrize(("change", "message"), [
    ({"trunkNetworks": []}, "dialin.trunkNetworks is required"),
    ({"connectionKeySecret": {"name": "", "key": "k"}}, "dialin.connectionKeySecret.name is required"),
])
def test_it_refuses_to_render_without_the_trunk_or_the_key(chart, change, message):
    values = merged(DIALIN, {"dialin": change})
    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_sip_and_rtp_only_from_the_trunk_and_the_pod_hardened_and_draining_calls(render):
    r = render(DIALIN)
    for m in r.manifests:
        if "dialin" in m["metadata"]["name"]:
            kubernetes_validate.validate(m, "1.30.0", strict=True)
    deployment = r.get("Deployment", NAME)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "replicas" not in deployment["spec"]  # the HPA decides
    assert container["securityContext"]["readOnlyRootFilesystem"] and container["securityContext"][
        "capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"]
    udp = [p for p in container["ports"] if p["protocol"] == "UDP"]
    assert {p["containerPort"] for p in udp} == {5060} | set(range(21000, 21100))
    assert all(p["hostPort"] == p["containerPort"] for p in udp)
    env = {e["name"]: e for e in container["env"]}
    assert env["SVPL_TRUNK_NETWORKS"]["value"] == '["192.0.2.0/28","198.51.100.7/32"]'
    assert env["SVPL_ADVERTISED_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert env["SVPL_CONNECTION_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "svpl-dialin", "key": "connection-key"}
    # Calls are kept while the pod drains, nearly the whole grace period.
    assert pod["terminationGracePeriodSeconds"] == 7200 and env["SVPL_SHUTDOWN_GRACE_SECONDS"]["value"] == "7190"
    assert container["readinessProbe"]["grpc"]["service"] == "svpl.dialin.v1.DialinService"
    assert container["livenessProbe"]["grpc"]["service"] == ""

    sip = r.get("Service", f"{NAME}-sip")
    assert sip["spec"]["ports"] == [{"name": "sip-udp", "port": 5060, "targetPort": "sip-udp", "protocol": "UDP"}]
    assert sip["spec"]["loadBalancerSourceRanges"] == ["192.0.2.0/28", "198.51.100.7/32"]

    policy = r.get("NetworkPolicy", NAME)
    trunk_rule = policy["spec"]["ingress"][0]
    assert [p["ipBlock"]["cidr"] for p in trunk_rule["from"]] == ["192.0.2.0/28", "198.51.100.7/32"]
    assert {(p["protocol"], p["port"]) for p in trunk_rule["ports"]} == {("UDP", 5060), ("UDP", 21000)}
    assert all("ipBlock" not in peer for rule in policy["spec"]["ingress"][1:] for peer in rule["from"])

    hpa = r.get("HorizontalPodAutoscaler", NAME)
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "svpl_dialin_active_calls"


def test_its_metrics_are_scraped_and_alerted_on(render):
    from tests.charts.test_chart import check_prometheus_rule

    r = render(DIALIN, {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}})
    assert r.get("ServiceMonitor", NAME)["spec"]["endpoints"][0]["port"] == "metrics"
    rule = r.get("PrometheusRule", NAME)
    check_prometheus_rule(rule)  # every expression parses as PromQL
    assert {a["alert"] for a in rule["spec"]["groups"][0]["rules"]} == {
        "SvplDialinGuessing", "SvplDialinCallersTurnedAway", "SvplDialinUntrustedInvites",
        "SvplDialinBadTrunkCredentials"}
    # Every series they query (and the HPA's) is one the service declares.
    metrics = (ROOT / "services" / "dialin" / "metrics.py").read_text()
    queried = {m for a in rule["spec"]["groups"][0]["rules"] for m in re.findall(r"\b(svpl_[a-z_]+?)\{", a["expr"])}
    for metric in queried | {"svpl_dialin_active_calls"}:
        assert f'"{metric}"' in metrics or f'"{metric.removesuffix("_total")}"' in metrics, metric


def test_trunk_digest_credentials_come_from_their_secret_only_when_named(render):
    env = {e["name"]: e for e in render(DIALIN).get("Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "SVPL_TRUNK_USERNAME" not in env and "SVPL_TRUNK_PASSWORD" not in env
    r = render(DIALIN, {"dialin": {"trunkAuthSecret": {"name": "svpl-trunk", "usernameKey": "user"}}})
    deployment = r.get("Deployment", NAME)
    kubernetes_validate.validate(deployment, "1.30.0", strict=True)
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SVPL_TRUNK_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "svpl-trunk", "key": "user"}
    assert env["SVPL_TRUNK_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "svpl-trunk", "key": "password"}
    assert "value" not in env["SVPL_TRUNK_PASSWORD"]  # never in the manifest itself


def test_the_dashboard_shows_calls_and_failed_entries_in_promql_that_parses():
    import promql_parser

    from tests.charts.test_chart import DASHBOARD, _exprs

    exprs = [e for e in _exprs(DASHBOARD) if "svpl_dialin_" in e]
    for expr in exprs:
        promql_parser.parse(expr.replace("$namespace", "svpl").replace("$__rate_interval", "1m"))
    joined = "\n".join(exprs)
    for series in ("svpl_dialin_calls_total", "svpl_dialin_entries_total", "svpl_dialin_active_calls",
                   "svpl_dialin_bridged_calls", "svpl_dialin_digest_checks_total"):
        assert series in joined, series
    assert 'result!="found"' in joined and "by (outcome)" in joined


def test_call_quality_has_an_alert_and_a_dashboard_panel_on_series_the_service_declares(render):
    import promql_parser

    from tests.charts.test_chart import DASHBOARD, check_prometheus_rule

    r = render(DIALIN, {"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}}}})
    rule = r.get("PrometheusRule", f"{NAME}-quality")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    check_prometheus_rule(rule)
    (alert,) = rule["spec"]["groups"][0]["rules"]
    assert alert["alert"] == "SvplDialinPoorCallQuality"
    assert alert["expr"].count(f'{{namespace="{NAMESPACE}"') == alert["expr"].count("{")  # every selector
    (panel,) = [p for p in DASHBOARD["panels"] if p["title"].startswith("Phone call quality")]
    exprs = [t["expr"] for t in panel["targets"]]
    for expr in exprs:
        promql_parser.parse(expr.replace("$namespace", "svpl").replace("$__rate_interval", "1m"))
    metrics = (ROOT / "services" / "dialin" / "metrics.py").read_text()
    queried = set(re.findall(r"\b(svpl_[a-z_]+?)(?:_bucket|_count)?\{", alert["expr"] + "\n".join(exprs)))
    assert queried == {"svpl_dialin_call_packet_loss_ratio", "svpl_dialin_call_jitter_seconds",
                       "svpl_dialin_poor_quality_calls"}
    for metric in queried:
        assert f'"{metric}"' in metrics, metric
    # The personal codes' guessing alerts, on roster's counter (its results: "wrong" and the refusals' reasons).
    assert [g["name"] for g in rule["spec"]["groups"]] == ["svpl.dialin.quality", "svpl.dialin.personal-codes"]
    codes = rule["spec"]["groups"][1]["rules"]
    assert [a["alert"] for a in codes] == ["SvplDialinPersonalCodesLocked", "SvplDialinPersonalCodeGuessing"]
    roster_metrics = (ROOT / "services" / "roster" / "metrics.py").read_text()
    assert '"svpl_roster_personal_code_entries_total"' in roster_metrics
    assert all("svpl_roster_personal_code_entries_total{" in a["expr"] for a in codes)
    assert 'result="PERSONAL_CODES_LOCKED"' in codes[0]["expr"] and 'result="wrong"' in codes[1]["expr"]
    # Off without the dial-in service, or without Prometheus rules.
    assert not [m for m in render({"metrics": {"prometheusRule": {"enabled": True}}}).manifests
                if m["metadata"]["name"].endswith("-dialin-quality")]


def test_roster_gets_the_personal_code_key_from_its_secret_only_when_named(render):
    roster = f"{RELEASE}-svpl-roster"

    def env(values) -> dict:
        deployment = render(*values).get("Deployment", roster)
        return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert "SVPL_PERSONAL_CODE_KEY" not in env([DIALIN])
    named = {"dialin": {"personalCodeKeySecret": {"name": "svpl-codes"}}}
    key = env([DIALIN, named])["SVPL_PERSONAL_CODE_KEY"]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "svpl-codes", "key": "personal-code-key"} and "value" not in key
    assert "SVPL_PERSONAL_CODE_KEY" not in env([named])  # no dial-in service: no codes

TLS = {"dialin": {"tls": {"enabled": True, "secretName": "svpl-dialin-sip-tls", "clientCaSecret": "region-sbc-ca"},
                  "requireSrtp": True, "codecs": ["G722", "PCMA"]}}


@pytest.mark.parametrize(("change", "message"), [
    ({"tls": {"enabled": True, "secretName": ""}}, "dialin.tls.secretName is required"),
    ({"tls": {"enabled": True, "secretName": "s", "port": 5060}}, "dialin.tls.port must differ"),
    ({"requireSrtp": True}, "dialin.requireSrtp needs dialin.tls.enabled"),
])
def test_tls_without_its_secret_and_srtp_without_tls_refuse_to_render(chart, change, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(merged(DIALIN, {"dialin": change}), name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("codecs", [["G729"], ["PCMA", "PCMA"], []])
def test_only_the_codecs_the_service_speaks_are_accepted(chart, codecs):
    with pytest.raises(helm.HelmValuesError, match="/dialin/codecs"):  # the values schema
        chart.render(merged(DIALIN, {"dialin": {"codecs": codecs}}), name=RELEASE, namespace=NAMESPACE)


def test_sip_over_tls_srtp_and_codecs_reach_the_pod_and_only_the_trunk_reaches_5061(render):
    plain = render(DIALIN).get("Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]
    plain_env = {e["name"]: e.get("value") for e in plain["env"]}
    assert "SVPL_SIP_TLS_PORT" not in plain_env and plain_env["SVPL_REQUIRE_SRTP"] == "false"
    assert plain_env["SVPL_CODECS"] == '["opus","G722","PCMA","PCMU"]'

    r = render(DIALIN, TLS)
    for m in r.manifests:
        if "dialin" in m["metadata"]["name"]:
            kubernetes_validate.validate(m, "1.30.0", strict=True)
    pod = r.get("Deployment", NAME)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SVPL_SIP_TLS_PORT"] == "5061" and env["SVPL_REQUIRE_SRTP"] == "true"
    assert env["SVPL_CODECS"] == '["G722","PCMA"]' and env["SVPL_SDES_OVER_INSECURE"] == "false"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["SVPL_SIP_TLS_CERT_FILE"] == mounts["sip-tls"] + "/tls.crt"
    assert env["SVPL_SIP_TLS_KEY_FILE"] == mounts["sip-tls"] + "/tls.key"
    assert env["SVPL_SIP_TLS_CLIENT_CA_FILE"] == mounts["sip-trunk-ca"] + "/ca.crt"
    volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert volumes == {"sip-tls": "svpl-dialin-sip-tls", "sip-trunk-ca": "region-sbc-ca"}
    assert {"name": "sip-tls", "containerPort": 5061, "hostPort": 5061, "protocol": "TCP"} in container["ports"]

    sip = r.get("Service", f"{NAME}-sip")
    assert {"name": "sip-tls", "port": 5061, "targetPort": "sip-tls", "protocol": "TCP"} in sip["spec"]["ports"]
    trunk_rule = r.get("NetworkPolicy", NAME)["spec"]["ingress"][0]
    assert ("TCP", 5061) in {(p["protocol"], p["port"]) for p in trunk_rule["ports"]}
    assert [p["ipBlock"]["cidr"] for p in trunk_rule["from"]] == ["192.0.2.0/28", "198.51.100.7/32"]
    # Only the trunk's rule opens 5061.
    assert all(p.get("port") != 5061 for rule in r.get("NetworkPolicy", NAME)["spec"]["ingress"][1:]
               for p in rule["ports"])


def test_tls_refusals_and_srtp_failures_are_alerted_on_in_their_own_rule(render):
    from tests.charts.test_chart import check_prometheus_rule

    assert not [m for m in render(DIALIN).manifests if m["metadata"]["name"].endswith("dialin-trunk-security")]
    r = render(DIALIN, TLS, {"metrics": {"prometheusRule": {"enabled": True}}})
    rule = r.get("PrometheusRule", f"{NAME}-trunk-security")
    check_prometheus_rule(rule)
    assert {a["alert"] for a in rule["spec"]["groups"][0]["rules"]} == {
        "SvplDialinTlsHandshakesRefused", "SvplDialinSrtpAuthenticationFailures"}
    metrics = (ROOT / "services" / "dialin" / "metrics.py").read_text()
    for a in rule["spec"]["groups"][0]["rules"]:
        for metric in re.findall(r"\b(svpl_[a-z_]+?)\{", a["expr"]):
            assert f'"{metric}"' in metrics, metric
