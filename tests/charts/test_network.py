"""The chart's media networking and availability (docs/NETWORK.md): TURN over TLS on 443, coturn
sized from media, an autoscaler that is fed by default or refused, and grace periods that let the
longest bookable meeting end before a pod is killed."""

from __future__ import annotations

import math

import helm_python as helm
import pytest
import yaml

from services.booking.model import MAX_DURATION_MINUTES
from tests.charts.conftest import NAMESPACE, RELEASE, ROOT, merged
from tests.charts.test_chart import VALUE_SETS, check_prometheus_rule

FULL = f"{RELEASE}-svpl"
LONGEST = MAX_DURATION_MINUTES * 60


def refused(chart, overlay: dict, match: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=match):
        chart.render(merged(overlay), name=RELEASE, namespace=NAMESPACE)


def pod_spec(r, name: str) -> dict:
    return r.get("Deployment", name)["spec"]["template"]["spec"]


# ---------------------------------------------------------------- never cut a meeting


def test_media_and_coturn_keep_the_longest_bookable_meeting_before_they_are_killed(render):
    r = render()
    media = pod_spec(r, f"{FULL}-media")["terminationGracePeriodSeconds"]
    coturn = pod_spec(r, f"{FULL}-turn")["terminationGracePeriodSeconds"]
    assert media >= LONGEST + 600 and coturn >= LONGEST + 600
    # Media drains by itself (its rooms until they end) before the kubelet's SIGKILL.
    assert LONGEST <= float(r.config("media")["SVPL_SHUTDOWN_GRACE_SECONDS"]) < media


def test_a_media_grace_shorter_than_the_longest_booking_is_refused(chart, render):
    refused(chart, {"components": {"media": {"terminationGracePeriodSeconds": 7200}}},
            rf"components.media.terminationGracePeriodSeconds: 7200 is shorter than the longest meeting"
            rf" a booking can have \({LONGEST} s\)")
    refused(chart, {"components": {"media": {"terminationGracePeriodSeconds": LONGEST}}}, "at least")
    longer = render({"components": {"media": {"terminationGracePeriodSeconds": LONGEST + 3600}}})
    assert pod_spec(longer, f"{FULL}-media")["terminationGracePeriodSeconds"] == LONGEST + 3600


# ---------------------------------------------------------------- TURN over TLS on 443


def test_turn_listens_for_tls_on_443_with_the_certificate_from_its_secret(render):
    r = render()
    service = r.get("Service", f"{FULL}-turn")
    tls = next(p for p in service["spec"]["ports"] if p["port"] == 443)
    assert (tls["protocol"], tls["targetPort"]) == ("TCP", "turns-tcp")
    spec = pod_spec(r, f"{FULL}-turn")
    coturn = spec["containers"][0]
    assert {"name": "turns-tcp", "containerPort": 5349, "protocol": "TCP"} in coturn["ports"]
    args = coturn["args"]
    assert {"--tls-listening-port=5349", "--cert=/etc/coturn/tls/tls.crt", "--pkey=/etc/coturn/tls/tls.key",
            "--no-tlsv1", "--no-tlsv1_1", "--no-dtls"} <= set(args) and "--no-tls" not in args
    volume = next(v for v in spec["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "svpl-turn-tls"
    assert {"name": "tls", "mountPath": "/etc/coturn/tls", "readOnly": True} in coturn["volumeMounts"]
    # coturn runs unprivileged: 443 is the Service's port, not the container's.
    assert coturn["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    urls = r.config("gateway")["SVPL_TURN_URLS"].split(",")
    assert urls[-1] == "turns:turn.svpl.example.org:443?transport=tcp"
    ingress = r.get("NetworkPolicy", f"{FULL}-turn")["spec"]["ingress"]
    assert {"port": 5349, "protocol": "TCP"} in next(rule for rule in ingress if "from" not in rule)["ports"]


def test_turn_tls_needs_its_certificate_secret_and_can_be_turned_off(chart, render):
    values = merged()
    values["turn"]["tls"]["secretName"] = ""
    with pytest.raises(helm.HelmRenderError, match="turn.tls.secretName is required"):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    off = render({"turn": {"tls": {"enabled": False}}})
    assert "--no-tls" in pod_spec(off, f"{FULL}-turn")["containers"][0]["args"]
    assert 443 not in {p["port"] for p in off.get("Service", f"{FULL}-turn")["spec"]["ports"]}
    assert "turns:" not in off.config("gateway")["SVPL_TURN_URLS"]


# ---------------------------------------------------------------- coturn sized from media


def test_coturn_scales_up_to_what_media_at_its_largest_relays(render):
    r = render()
    hpa = r.get("HorizontalPodAutoscaler", f"{FULL}-turn")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULL}-turn"
    assert "replicas" not in r.get("Deployment", f"{FULL}-turn")["spec"]
    # media: 20 pods x 60 participants, 200 relayed participants per coturn replica.
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, math.ceil(20 * 60 / 200))
    bigger = render({"components": {"media": {"autoscaling": {"maxReplicas": 50}}}})
    assert bigger.get("HorizontalPodAutoscaler", f"{FULL}-turn")["spec"]["maxReplicas"] == 15
    fixed = render({"turn": {"autoscaling": {"enabled": False}}})
    assert f"{FULL}-turn" not in fixed.names("HorizontalPodAutoscaler")
    assert fixed.get("Deployment", f"{FULL}-turn")["spec"]["replicas"] == 2


def test_relay_ports_are_the_ones_the_network_policy_opens_and_bound_the_replica_size(chart, render):
    r = render({"turn": {"relayPorts": {"min": 50000, "max": 50499}, "autoscaling": {"participantsPerReplica": 500}}})
    args = pod_spec(r, f"{FULL}-turn")["containers"][0]["args"]
    assert {"--min-port=50000", "--max-port=50499"} <= set(args)
    from_media = next(rule for rule in r.get("NetworkPolicy", f"{FULL}-turn")["spec"]["ingress"] if "from" in rule)
    assert from_media["ports"] == [{"port": 50000, "endPort": 50499, "protocol": "UDP"}]
    media_out = r.get("NetworkPolicy", f"{FULL}-media")["spec"]["egress"]
    assert any(rule["ports"] == [{"port": 50000, "endPort": 50499, "protocol": "UDP"}] for rule in media_out)
    refused(chart, {"turn": {"autoscaling": {"participantsPerReplica": 300}}},
            r"turn.autoscaling.participantsPerReplica: 300 is more than the 256 relay ports")


# ---------------------------------------------------------------- the autoscaler is fed or refused


def test_media_autoscaling_on_participants_is_fed_by_default(render):
    r = render()
    annotations = r.deployment("media")["spec"]["template"]["metadata"]["annotations"]
    metrics_port = next(p for p in r.container("media")["ports"] if p["name"] == "metrics")["containerPort"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"],
            annotations["prometheus.io/path"]) == ("true", str(metrics_port), "/metrics")


def test_media_autoscaling_on_participants_without_scraping_is_refused(chart, render):
    nothing = {"metrics": {"scrapeAnnotations": False}}
    refused(chart, nothing, r"components.media.autoscaling.loadMetric \(svpl_media_participants\) is fed by"
                            r" Prometheus scraping media: set metrics.serviceMonitor.enabled=true")
    monitored = render({"metrics": {"scrapeAnnotations": False, "serviceMonitor": {"enabled": True}}})
    assert f"{FULL}-media" in monitored.names("ServiceMonitor")
    assert "prometheus.io/scrape" not in monitored.deployment("media")["spec"]["template"]["metadata"]["annotations"]
    cpu_only = render({**nothing, "components": {"media": {"autoscaling": {"loadMetric": None}}}})
    metrics = cpu_only.get("HorizontalPodAutoscaler", f"{FULL}-media")["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Resource"]


def test_an_alert_fires_when_the_autoscalers_metric_is_absent(render):
    (rule,) = render(VALUE_SETS["metrics-on"]).of_kind("PrometheusRule")
    check_prometheus_rule(rule)
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    absent = alerts["SvplMediaLoadMetricAbsent"]
    assert absent["expr"] == f'absent(svpl_media_participants{{namespace="{NAMESPACE}"}})'
    assert absent["labels"]["severity"] == "critical"
    cpu_only = render({**VALUE_SETS["metrics-on"], "components": {"media": {"autoscaling": {"loadMetric": None}}}})
    (rule,) = cpu_only.of_kind("PrometheusRule")
    assert "SvplMediaLoadMetricAbsent" not in {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}


def test_the_prometheus_adapter_rule_serves_the_metric_the_hpa_asks_for(render):
    adapter = yaml.safe_load((ROOT / "charts" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    hpa = render().get("HorizontalPodAutoscaler", f"{FULL}-media")
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert rule["name"]["as"] == pods["metric"]["name"]
    assert rule["seriesQuery"].startswith("svpl_media_participants{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert '"svpl_media_participants"' in (ROOT / "services" / "media" / "metrics.py").read_text()  # media exports it


# ---------------------------------------------------------------- TURN off: the node's address


def test_turn_off_media_is_told_its_nodes_address_to_advertise(render):
    r = render(VALUE_SETS["turn-off"])
    env = {e["name"]: e for e in r.container("media")["env"]}
    # services/media/ports.py advertise_node_address: answers carry it next to the pod's address.
    assert env["SVPL_NODE_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert "SVPL_NODE_IP" not in {e["name"] for e in render().container("media")["env"]}


def test_the_install_notes_name_what_the_network_must_provide(render):
    assert "TLS on TCP 443" in render().notes and "turn.svpl.example.org" in render().notes
    off = render(VALUE_SETS["turn-off"]).notes
    assert 'Pod Security "privileged"' in off and "one media pod fits per" in off
