"""The Helm chart, without a cluster: lint, render for several value sets, validate every
manifest against the Kubernetes 1.30 schemas (strict), and check the properties the
deployment depends on (hardened pods, differing probes, media autoscaling and draining,
secrets by reference, network paths of ARCHITECTURE.md, development login refused)."""

from __future__ import annotations

import json
import re

import helm_python as helm
import kubernetes_validate
import promql_parser
import pytest

from tests.charts.conftest import CHART, NAMESPACE, RELEASE, ROOT, SERVICES, merged

KUBE_VERSION = "1.30.0"
GRPC = [s for s in SERVICES if s != "gateway"]
FULL = f"{RELEASE}-svpl"

VALUE_SETS = {
    "defaults": {},
    "autoscaling-off": {"components": {"media": {"autoscaling": {"enabled": False}, "replicas": 3}}},
    "metrics-on": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
                               "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus"}}}},
    "turn-off": {"turn": {"enabled": False}},
    "everything-on": {
        "metrics": {"serviceMonitor": {"enabled": True}},
        "media": {"admissionPolicy": {"enabled": True}},
        "mongodb": {"auditUriSecret": {"name": "svpl-audit-mongodb", "key": "uri"}},
        "components": {"identity": {"extraEgress": [{"to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}],
                                                     "ports": [{"port": 636, "protocol": "TCP"}]}]}},
    },
    "minimal": {
        "networkPolicy": {"enabled": False},
        "dashboards": {"enabled": False},
        "media": {"podDeletionCost": {"enabled": False}},
        "componentDefaults": {"pdb": {"enabled": False}},
        "components": {"media": {"pdb": {"enabled": False}}},
    },
}


def contract_name(service: str) -> str:
    """The service's full gRPC name, read from the generated contract (not from the chart)."""
    module = __import__(f"svpl.{service}.v1.{service}_pb2", fromlist=["DESCRIPTOR"])
    (name,) = [s.full_name for s in module.DESCRIPTOR.services_by_name.values() if s.name.endswith("Service")]
    return name


def pod_specs(r):
    """(owner, pod spec) for every pod the release creates: Deployments and the test Pod."""
    for d in r.of_kind("Deployment"):
        yield d["metadata"]["name"], d["spec"]["template"]["spec"]
    for p in r.of_kind("Pod"):
        yield p["metadata"]["name"], p["spec"]


# ---------------------------------------------------------------- lint + schema validity


@pytest.mark.parametrize("value_set", ["defaults", "turn-off", "everything-on"])
def test_chart_lints_without_findings(value_set):
    report = helm.lint(str(CHART), merged(VALUE_SETS[value_set]), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def check_service_monitor(m: dict, r) -> None:
    """kubernetes-validate has no CRD schemas: the ServiceMonitor fields we use, by hand."""
    assert m["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(m) == {"apiVersion", "kind", "metadata", "spec"}
    spec = m["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    wanted = spec["selector"]["matchLabels"]
    services = [s for s in r.of_kind("Service") if wanted.items() <= s["metadata"]["labels"].items()]
    assert len(services) == 1, f"{m['metadata']['name']} selects {len(services)} services"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])


def check_prometheus_rule(m: dict) -> None:
    """kubernetes-validate has no CRD schemas: the PrometheusRule fields we use, by hand; every
    expression must parse as PromQL."""
    assert m["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(m) == {"apiVersion", "kind", "metadata", "spec"} and set(m["spec"]) == {"groups"}
    for group in m["spec"]["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Svpl[A-Za-z]+", rule["alert"])
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert "for" not in rule or re.fullmatch(r"\d+[smh]", rule["for"])
            promql_parser.parse(rule["expr"])  # raises ValueError naming what is wrong


_validated: set[str] = set()  # manifests identical across value sets are validated once


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_manifest_is_valid_for_kubernetes_1_30(render, value_set):
    r = render(VALUE_SETS[value_set])
    assert r.manifests
    for m in r.manifests:
        if m["kind"] == "ServiceMonitor":
            check_service_monitor(m, r)
            continue
        if m["kind"] == "PrometheusRule":
            check_prometheus_rule(m)
            continue
        key = json.dumps(m, sort_keys=True)
        if key not in _validated:
            kubernetes_validate.validate(m, KUBE_VERSION, strict=True)
            _validated.add(key)


def test_values_schema_refuses_unknown_keys(chart):
    for bad, named in [
        ({"replica": 3}, "at '': additional properties 'replica' not allowed"),
        ({"components": {"media": {"replica": 3}}}, "at '/components/media': additional properties 'replica'"),
        ({"components": {"pager": {}}}, "at '/components': additional properties 'pager'"),
        ({"components": {"media": {"env": {"MEDIA_DEBUG": "1"}}}}, "'MEDIA_DEBUG' does not match pattern"),
    ]:
        with pytest.raises(helm.HelmValuesError) as refused:
            chart.render(merged(bad), name=RELEASE, namespace=NAMESPACE)
        assert named in str(refused.value)


def test_every_component_has_the_same_value_keys():
    schema = json.loads((CHART / "values.schema.json").read_text())
    component = schema["definitions"]["component"]
    assert component["additionalProperties"] is False
    assert {"image", "replicas", "resources", "probes", "securityContext", "env", "extraEnv",
            "extraVolumes", "extraVolumeMounts"} <= set(component["properties"])
    components = schema["properties"]["components"]
    assert components["additionalProperties"] is False
    assert {name: ref["$ref"] for name, ref in components["properties"].items()} == {
        s: "#/definitions/component" for s in SERVICES}
    assert schema["additionalProperties"] is False


# ---------------------------------------------------------------- hardened pods


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_pod_runs_non_root_read_only_without_capabilities(render, value_set):
    r = render(VALUE_SETS[value_set])
    specs = list(pod_specs(r))
    assert len(specs) >= len(SERVICES) + 1  # the services and the helm test pod
    for owner, spec in specs:
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, owner
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, owner
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc.get("runAsUser", pod.get("runAsUser")) not in (None, 0), owner
            assert sc["allowPrivilegeEscalation"] is False, owner
            assert sc["readOnlyRootFilesystem"] is True, owner
            assert sc["capabilities"] == {"drop": ["ALL"]}, owner
            assert sc.get("privileged", False) is False, owner
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), owner


def test_only_media_mounts_a_service_account_token(render):
    r = render()
    mounted = {owner for owner, spec in pod_specs(r) if spec.get("automountServiceAccountToken") is not False}
    assert mounted == {f"{FULL}-media"}
    assert all(sa["automountServiceAccountToken"] is False for sa in r.of_kind("ServiceAccount"))
    off = render({"media": {"podDeletionCost": {"enabled": False}}})
    assert {o for o, s in pod_specs(off) if s.get("automountServiceAccountToken") is not False} == set()


# ---------------------------------------------------------------- probes


def test_grpc_liveness_and_readiness_ask_different_health_names(render):
    r = render()
    for service in GRPC:
        c = r.container(service)
        # The plaintext health-only port: the service's own port speaks mutual TLS (serviceTls).
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == "health")
        assert c["livenessProbe"]["grpc"] == {"port": port, "service": ""}
        assert c["startupProbe"]["grpc"] == {"port": port, "service": ""}
        assert c["readinessProbe"]["grpc"] == {"port": port, "service": contract_name(service)}
        assert c["livenessProbe"] != c["readinessProbe"]


def test_gateway_probes_differ(render):
    c = render().container("gateway")
    assert c["livenessProbe"] != c["readinessProbe"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_probe_timing_comes_from_values(render):
    r = render({"components": {"roster": {"probes": {"readiness": {"periodSeconds": 7, "failureThreshold": 4}}}}})
    probe = r.container("roster")["readinessProbe"]
    assert (probe["periodSeconds"], probe["failureThreshold"]) == (7, 4)
    assert r.container("booking")["readinessProbe"]["periodSeconds"] == 5


# ---------------------------------------------------------------- media: autoscaling, draining, disruption


def test_media_hpa_scales_the_media_deployment_on_load_and_cpu_and_scales_down_slowly(render):
    r = render()
    hpa = r.get("HorizontalPodAutoscaler", f"{FULL}-media")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{FULL}-media"}
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "svpl_media_participants"
    assert metrics["Pods"]["pods"]["target"]["type"] == "AverageValue"
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 600
    assert all(p["type"] == "Pods" and p["value"] == 1 and p["periodSeconds"] >= 300 for p in down["policies"])


def test_replicas_are_left_to_the_hpa_when_it_is_on(render):
    on = render()
    assert "replicas" not in on.deployment("media")["spec"]
    assert all("replicas" in on.deployment(s)["spec"] for s in SERVICES if s != "media")
    off = render(VALUE_SETS["autoscaling-off"])
    assert f"{FULL}-media" not in off.names("HorizontalPodAutoscaler")
    assert off.deployment("media")["spec"]["replicas"] == 3


def test_every_deployment_has_a_disruption_budget_selecting_its_pods(render):
    r = render()
    budgets = {p["metadata"]["name"]: p for p in r.of_kind("PodDisruptionBudget")}
    for d in r.of_kind("Deployment"):
        pdb = budgets[d["metadata"]["name"]]
        assert pdb["spec"]["selector"] == d["spec"]["selector"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    assert budgets[f"{FULL}-media"]["spec"]["maxUnavailable"] == 1


def test_media_lets_meetings_finish_before_it_is_killed(render):
    r = render()
    media = r.deployment("media")["spec"]["template"]["spec"]
    assert media["terminationGracePeriodSeconds"] >= 3600
    for service in SERVICES:
        grace = r.deployment(service)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        # The service stops by itself before the kubelet's SIGKILL.
        assert 0 < float(r.config(service)["SVPL_SHUTDOWN_GRACE_SECONDS"]) < grace


def test_roster_places_rooms_on_ready_media_pods_found_through_the_headless_service(render):
    r = render()
    host, port = r.config("roster")["SVPL_MEDIA_PODS_DNS"].split(":")
    headless = r.get("Service", host)
    assert headless["spec"]["clusterIP"] == "None" and not headless["spec"].get("publishNotReadyAddresses")
    assert headless["spec"]["selector"] == r.deployment("media")["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in headless["spec"]["ports"]] == [int(port)] == [50054]


def test_media_advertises_its_own_pod_address(render):
    env = [e["name"] for e in render().container("media")["env"]]
    advertised = next(e for e in render().container("media")["env"] if e["name"] == "SVPL_ADVERTISED_ADDRESS")
    assert advertised["value"] == "$(SVPL_POD_IP):50054"
    assert env.index("SVPL_POD_IP") < env.index("SVPL_ADVERTISED_ADDRESS")  # dependent variables come after


def test_media_pods_keep_their_deletion_cost_with_a_role_that_only_gets_and_patches_pods(render):
    r = render()
    env = {e["name"]: e for e in r.container("media")["env"]}
    assert env["SVPL_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SVPL_POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    (role,) = r.of_kind("Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]
    (binding,) = r.of_kind("RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULL}-media", "namespace": NAMESPACE}]
    assert r.deployment("media")["spec"]["template"]["spec"]["serviceAccountName"] == f"{FULL}-media"
    assert not any("SVPL_POD_NAME" == e["name"] for s in SERVICES if s != "media" for e in r.container(s)["env"])

    policy = render(VALUE_SETS["everything-on"]).of_kind("ValidatingAdmissionPolicy")
    assert len(policy) == 1
    assert f"system:serviceaccount:{NAMESPACE}:{FULL}-media" in policy[0]["spec"]["matchConditions"][0]["expression"]

    off = render({"media": {"podDeletionCost": {"enabled": False}}})
    assert off.of_kind("Role") == [] and off.of_kind("RoleBinding") == []
    assert "SVPL_POD_NAME" not in {e["name"] for e in off.container("media")["env"]}


# ---------------------------------------------------------------- media networking: TURN or hostPort


def test_turn_on_coturn_is_the_single_public_entry_and_media_publishes_nothing(render):
    r = render()
    turn = r.get("Service", f"{FULL}-turn")
    assert turn["spec"]["type"] == "LoadBalancer"
    assert {(p["port"], p["protocol"]) for p in turn["spec"]["ports"]} == {(3478, "UDP"), (3478, "TCP"), (443, "TCP")}
    public = [s for s in r.of_kind("Service") if s["spec"].get("type", "ClusterIP") != "ClusterIP"]
    assert [s["metadata"]["name"] for s in public] == [f"{FULL}-turn"]
    assert all("hostPort" not in p for p in r.container("media")["ports"])
    coturn = r.get("Deployment", f"{FULL}-turn")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in coturn["env"]}
    assert env["TURN_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "svpl-turn", "key": "secret"}
    assert "--use-auth-secret" in coturn["args"] and "--static-auth-secret=$(TURN_SECRET)" in coturn["args"]
    # The gateway hands browsers the TURN address and short-lived credentials from the secret.
    assert r.config("gateway")["SVPL_TURN_URLS"].startswith("turn:turn.svpl.example.org:3478")
    secret = {e["name"]: e for e in r.container("gateway")["env"]}["SVPL_TURN_SECRET"]
    assert secret["valueFrom"]["secretKeyRef"]["name"] == "svpl-turn"
    assert "SVPL_RTC_PORT_MIN" not in r.config("media")


def test_turn_off_media_publishes_its_udp_range_on_the_node(render):
    r = render(VALUE_SETS["turn-off"])
    assert r.of_kind("Deployment") and f"{FULL}-turn" not in r.names("Deployment") | r.names("Service")
    udp = [p for p in r.container("media")["ports"] if p["protocol"] == "UDP"]
    assert [p["containerPort"] for p in udp] == list(range(40000, 40100))
    assert all(p["hostPort"] == p["containerPort"] for p in udp)
    config = r.config("media")
    # The range media binds its ICE sockets in (services/media/ports.py): a port for each participant.
    assert (config["SVPL_RTC_PORT_MIN"], config["SVPL_RTC_PORT_MAX"]) == ("40000", "40099")
    assert int(config["SVPL_CAPACITY_PARTICIPANTS"]) <= 100
    assert "SVPL_TURN_URLS" not in config and "SVPL_TURN_URLS" not in r.config("gateway")


def test_turn_off_needs_a_port_range_as_large_as_media_capacity(chart, render):
    def refused(overlay: dict, match: str) -> None:
        with pytest.raises(helm.HelmRenderError, match=match):
            chart.render(merged(overlay), name=RELEASE, namespace=NAMESPACE)

    off = {"turn": {"enabled": False}}
    refused({**off, "media": {"rtcPorts": {"min": 40000, "max": 40031}}},
            r"media.rtcPorts: 40000-40031 holds 32 ports, fewer than media.capacityParticipants \(60\)")
    refused({**off, "media": {"capacityParticipants": 101}},
            r"40000-40099 holds 100 ports, fewer than media.capacityParticipants \(101\)")
    # Exactly as many ports as participants renders, and media is told both.
    config = render({**off, "media": {"capacityParticipants": 20, "rtcPorts": {"min": 41000, "max": 41019}}}).config("media")
    assert (config["SVPL_CAPACITY_PARTICIPANTS"], config["SVPL_RTC_PORT_MIN"], config["SVPL_RTC_PORT_MAX"]) == (
        "20", "41000", "41019")
    # Behind TURN the range is not published (nor passed), so it is not checked against the capacity.
    config = render({"media": {"rtcPorts": {"min": 40000, "max": 40001}}}).config("media")
    assert config["SVPL_CAPACITY_PARTICIPANTS"] == "60" and "SVPL_RTC_PORT_MAX" not in config
    # The capacity and the range are set in one place, where the chart checks them against each other.
    for env in ({"env": {"SVPL_CAPACITY_PARTICIPANTS": "500"}},
                {"extraEnv": [{"name": "SVPL_RTC_PORT_MAX", "value": "40010"}]}):
        refused({**off, "components": {"media": env}}, "set media.capacityParticipants / media.rtcPorts")
    with pytest.raises(helm.HelmValuesError, match="capacityParticipants"):
        chart.render(merged({"media": {"capacityParticipants": 0}}), name=RELEASE, namespace=NAMESPACE)


def test_turn_needs_its_secret_only_when_on(chart):
    values = merged()
    values["turn"]["authSecret"]["name"] = ""
    with pytest.raises(helm.HelmRenderError, match="turn.authSecret.name is required"):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    values["turn"]["enabled"] = False
    chart.render(values, name=RELEASE, namespace=NAMESPACE)


# ---------------------------------------------------------------- configuration and secrets


def test_development_login_cannot_be_enabled(chart):
    for overlay in [
        {"developmentLogin": True},
        {"components": {"gateway": {"env": {"SVPL_DEVELOPMENT_LOGIN": "true"}}}},
        {"components": {"gateway": {"extraEnv": [{"name": "SVPL_DEVELOPMENT_LOGIN", "value": "1"}]}}},
    ]:
        with pytest.raises(helm.HelmRenderError, match="development login cannot be enabled"):
            chart.render(merged(overlay), name=RELEASE, namespace=NAMESPACE)


def test_identity_and_gateway_config_turn_the_development_login_off(render):
    r = render()
    assert r.config("gateway")["SVPL_DEVELOPMENT_LOGIN"] == r.config("identity")["SVPL_DEVELOPMENT_LOGIN"] == "false"


@pytest.mark.parametrize("overlay", [
    {"components": {"identity": {"env": {"SVPL_LDAP_BIND_PASSWORD": "hunter2"}}}},
    {"components": {"booking": {"extraEnv": [{"name": "SVPL_COSMIC_LINK_TOKEN", "value": "t0k3n"}]}}},
])
def test_a_secret_written_into_values_is_refused(chart, overlay):
    with pytest.raises(helm.HelmRenderError, match="never inlined"):
        chart.render(merged(overlay), name=RELEASE, namespace=NAMESPACE)


def test_extra_secrets_and_files_come_from_references(render):
    r = render({"components": {"identity": {
        "extraEnv": [{"name": "SVPL_LDAP_BIND_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "svpl-hsa", "key": "password"}}}],
        "extraVolumes": [{"name": "bankid", "secret": {"secretName": "svpl-bankid-rp"}}],
        "extraVolumeMounts": [{"name": "bankid", "mountPath": "/var/run/svpl/bankid", "readOnly": True}],
    }}})
    identity = r.deployment("identity")["spec"]["template"]["spec"]
    assert {"name": "bankid", "secret": {"secretName": "svpl-bankid-rp"}} in identity["volumes"]
    assert {"name": "bankid", "mountPath": "/var/run/svpl/bankid", "readOnly": True} in identity["containers"][0]["volumeMounts"]
    password = {e["name"]: e for e in identity["containers"][0]["env"]}["SVPL_LDAP_BIND_PASSWORD"]
    assert password == {"name": "SVPL_LDAP_BIND_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "svpl-hsa", "key": "password"}}}
    for deployment in r.of_kind("Deployment"):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("missing, message", [
    ({"mongodb": {"uriSecret": {"name": ""}}}, "mongodb.uriSecret.name is required"),
    ({"serviceTokens": {"secretName": ""}}, "serviceTokens.secretName is required"),
    ({"identity": {"signingKeysSecret": ""}}, "identity.signingKeysSecret is required"),
])
def test_required_secret_references_must_be_set(chart, missing, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(merged(missing), name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_secrets_are_referenced_never_inlined(render, value_set):
    r = render(VALUE_SETS[value_set])
    assert r.of_kind("Secret") == []
    sensitive = re.compile(r"TOKEN|SECRET|MONGODB_URI|PASSWORD|KEY$")
    for cm in r.of_kind("ConfigMap"):
        if cm["metadata"]["name"].endswith("-dashboards"):
            continue
        assert not [k for k in cm["data"] if sensitive.search(k)], cm["metadata"]["name"]
    for owner, spec in pod_specs(r):
        for c in spec["containers"]:
            for e in c.get("env", []):
                if sensitive.search(e["name"]):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], (owner, e["name"])
    for service in SERVICES:
        env = {e["name"]: e for e in r.container(service)["env"]}
        assert env["SVPL_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "svpl-service-tokens", "key": service}
        if service != "gateway":
            assert env["SVPL_MONGODB_URI"]["valueFrom"]["secretKeyRef"] == {"name": "svpl-mongodb", "key": "uri"}
    identity = r.deployment("identity")["spec"]["template"]["spec"]
    keys = next(v for v in identity["volumes"] if v["name"] == "signing-keys")
    assert keys["secret"]["secretName"] == "svpl-signing-keys"
    mount = next(m for m in identity["containers"][0]["volumeMounts"] if m["name"] == "signing-keys")
    assert mount["readOnly"] is True and r.config("identity")["SVPL_SIGNING_KEYS_DIR"] == mount["mountPath"]


def test_config_checksum_changes_with_that_components_config_only(render):
    def checksums(r):
        return {s: r.deployment(s)["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for s in SERVICES}

    base = render()
    changed = render({"components": {"booking": {"env": {"SVPL_RPC_TIMEOUT_SECONDS": "5"}}}})
    before, after = checksums(base), checksums(changed)
    assert before["booking"] != after["booking"]
    assert {s: v for s, v in before.items() if s != "booking"} == {s: v for s, v in after.items() if s != "booking"}
    assert changed.config("booking")["SVPL_RPC_TIMEOUT_SECONDS"] == "5"
    for s in SERVICES:
        assert re.fullmatch(r"[0-9a-f]{64}", before[s])
        assert {"configMapRef": {"name": f"{FULL}-{s}"}} in base.container(s)["envFrom"]


def test_services_listen_on_all_interfaces_and_find_each_other_by_service_name(render):
    r = render()
    services = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in r.of_kind("Service")}
    for s in SERVICES:
        config = r.config(s)
        host_key = "SVPL_GRPC_HOST" if s != "gateway" else "SVPL_HTTP_HOST"
        assert config[host_key] == "0.0.0.0"
        for key, address in config.items():
            if key.endswith("_ADDRESS") and not key.endswith("_LOGICAL_ADDRESS"):  # that one is RIV-TA's, not a host
                host, port = address.rsplit(":", 1)
                assert int(port) in services[host], (s, key, address)


# ---------------------------------------------------------------- network paths

# ARCHITECTURE.md "Who calls whom" (and every service verifies tokens with identity's keys;
# support asks booking for a rebook when a connection fails before a meeting).
EXPECTED_CALLS = {
    ("gateway", "identity"), ("gateway", "booking"), ("gateway", "roster"), ("gateway", "media"),
    ("gateway", "support"),
    ("booking", "roster"), ("booking", "identity"),
    ("roster", "identity"), ("roster", "media"), ("roster", "booking"),  # booking: phone tasks for parked 1177 messages
    ("media", "roster"), ("media", "identity"),
    ("support", "identity"), ("support", "roster"), ("support", "media"), ("support", "booking"),
}


def _component_of(peer: dict) -> str | None:
    name = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name", "")
    return name.removeprefix("svpl-") if name.startswith("svpl-") and "namespaceSelector" not in peer else None


def test_network_policies_deny_by_default_and_open_only_the_architecture_paths(render):
    r = render()
    policies = {p["metadata"]["name"]: p for p in r.of_kind("NetworkPolicy")}
    deny = policies[f"{FULL}-default-deny"]["spec"]
    assert deny["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny

    ports = {s: next(p["containerPort"] for p in r.container(s)["ports"] if p["name"] in ("grpc", "http")) for s in SERVICES}
    ingress, egress = set(), set()
    for callee in SERVICES:
        spec = policies[f"{FULL}-{callee}"]["spec"]
        for rule in spec["ingress"]:
            for peer in rule.get("from", []):
                caller = _component_of(peer)
                if caller and any(p["port"] == ports[callee] for p in rule["ports"]):
                    ingress.add((caller, callee))
        for rule in spec["egress"]:
            for peer in rule.get("to", []):
                target = _component_of(peer)
                if target in ports and any(p["port"] == ports[target] for p in rule["ports"]):
                    egress.add((callee, target))
    assert ingress == EXPECTED_CALLS | {("test", "gateway")}  # and the `helm test` pod
    assert egress == EXPECTED_CALLS


def test_network_policies_let_in_only_the_ingress_controller_prometheus_and_turn(render):
    r = render()
    for p in r.of_kind("NetworkPolicy"):
        name = p["metadata"]["name"]
        for rule in p["spec"].get("ingress", []):
            if name == f"{FULL}-turn" and "from" not in rule:  # the single public entry
                assert {(x["port"], x["protocol"]) for x in rule["ports"]} == {(3478, "UDP"), (3478, "TCP"), (5349, "TCP")}
                continue
            assert rule["from"], name
            assert all("ipBlock" not in peer for peer in rule["from"]), name
    media_in = r.get("NetworkPolicy", f"{FULL}-media")["spec"]["ingress"]
    udp = [rule for rule in media_in if rule["ports"][0]["protocol"] == "UDP"]
    assert udp == [{"from": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "svpl-turn", "app.kubernetes.io/instance": RELEASE}}}],
        "ports": [{"port": 1024, "endPort": 65535, "protocol": "UDP"}]}]
    published = render(VALUE_SETS["turn-off"]).get("NetworkPolicy", f"{FULL}-media")["spec"]["ingress"]
    udp = [rule for rule in published if rule["ports"][0]["protocol"] == "UDP"]
    assert udp == [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                    "ports": [{"port": 40000, "endPort": 40099, "protocol": "UDP"}]}]


def test_every_address_a_service_reads_is_an_allowed_path():
    """The code decides whom a service calls (settings.<callee>_address): each such call must be
    one the policies allow, or the service would be cut off in the cluster."""
    for caller in SERVICES:
        for source in (ROOT / "services" / caller).rglob("*.py"):
            for callee in re.findall(r"settings\.([a-z]+)_address", source.read_text()):
                assert (caller, callee) in EXPECTED_CALLS, f"{source.relative_to(ROOT)} calls {callee}"


def is_dns(rule: dict) -> bool:
    return {p["port"] for p in rule.get("ports", [])} == {53}


def test_only_media_reaches_the_api_server_and_only_while_it_keeps_its_deletion_cost(render, chart):
    r = render()
    for s in SERVICES:
        egress = r.get("NetworkPolicy", f"{FULL}-{s}")["spec"]["egress"]
        to_api = [rule for rule in egress if any("ipBlock" in peer for peer in rule["to"]) and not is_dns(rule)]
        if s == "media":
            assert to_api == [{"to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}],
                               "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}]
        else:
            assert to_api == [], s
    off = render({"media": {"podDeletionCost": {"enabled": False}}}).get("NetworkPolicy", f"{FULL}-media")
    assert not [rule for rule in off["spec"]["egress"] if any("ipBlock" in peer for peer in rule["to"]) and not is_dns(rule)]
    values = merged()
    values["networkPolicy"]["apiServer"]["cidrs"] = []
    with pytest.raises(helm.HelmRenderError, match="networkPolicy.apiServer.cidrs is required"):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_databases_are_reached_only_by_services_that_own_one(render):
    r = render()
    for s in SERVICES:
        egress = r.get("NetworkPolicy", f"{FULL}-{s}")["spec"]["egress"]
        to_mongo = any(p["port"] == 27017 for rule in egress for p in rule["ports"])
        assert to_mongo == (s != "gateway"), s


# ---------------------------------------------------------------- monitoring, dashboards, helm test


def test_service_monitors_only_when_enabled(render):
    assert render().of_kind("ServiceMonitor") == []
    r = render(VALUE_SETS["metrics-on"])
    monitors = r.of_kind("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {f"{FULL}-{s}" for s in SERVICES}
    for m in monitors:
        check_service_monitor(m, r)
        assert m["metadata"]["labels"]["release"] == "kube-prometheus"


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboards_ship_in_a_configmap_for_the_grafana_sidecar(render):
    r = render()
    cm = r.get("ConfigMap", f"{FULL}-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (dashboard,) = [json.loads(text) for text in cm["data"].values()]
    exprs = "\n".join(_exprs(dashboard))
    for metric in ("svpl_grpc_server_handled_total", "svpl_grpc_server_handling_seconds_bucket",
                   "svpl_media_forwarded_streams", "svpl_media_participants",
                   "kube_horizontalpodautoscaler_status_current_replicas", "svpl_support_open_tickets",
                   "svpl_media_rooms", "svpl_roster_admissions_total", "svpl_media_quality_warnings_total",
                   "svpl_http_requests_total", "svpl_http_request_seconds_bucket",
                   # The support desk's dashboard (issue #19): open per queue, the oldest waiting,
                   # time to first response, escalations.
                   "svpl_support_oldest_open_ticket_age_seconds", "svpl_support_first_response_seconds_bucket",
                   "svpl_support_escalations_total",
                   # Media holding video to the weakest subscriber (issue #20).
                   "svpl_media_capped_video_publications", "svpl_media_video_cap_bps_bucket",
                   "svpl_media_subscriber_estimates_total"):
        assert metric in exprs, metric
    assert "by (grpc_service, grpc_method)" in exprs
    assert render({"dashboards": {"enabled": False}}).of_kind("ConfigMap") == [
        m for m in r.of_kind("ConfigMap") if not m["metadata"]["name"].endswith("-dashboards")]


DASHBOARD = json.loads((CHART / "dashboards" / "svpl-overview.json").read_text())


def test_no_two_dashboard_panels_cover_the_same_cells():
    """Grafana pushes overlapping panels around on load: each panel has its own cells on the 24-column grid."""
    taken: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])):
            assert cell not in taken, f"{panel['title']!r} covers {taken[cell]!r} at {cell}"
            taken[cell] = panel["title"]
# Metrics the dashboard shows that come from outside svpl (kube-state-metrics, cAdvisor).
EXTERNAL_METRICS = {"kube_horizontalpodautoscaler_status_current_replicas",
                    "kube_horizontalpodautoscaler_status_desired_replicas",
                    "kube_horizontalpodautoscaler_spec_max_replicas", "container_cpu_usage_seconds_total"}
DASHBOARD_METRICS = sorted({
    re.sub(r"_(bucket|sum|count)$", "", name)
    for expr in _exprs(DASHBOARD) for name in re.findall(r"\b([a-z_]+)\{", expr)} - EXTERNAL_METRICS)


def test_prometheus_rule_only_when_enabled_and_its_alerts_parse(render):
    assert render().of_kind("PrometheusRule") == []
    (rule,) = render(VALUE_SETS["metrics-on"]).of_kind("PrometheusRule")
    check_prometheus_rule(rule)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"SvplServerFaults", "SvplServiceUnavailable", "SvplSithsRevocationUnchecked",
            "SvplOutboxDeliveriesFailing", "SvplMediaAtMaxReplicas", "SvplSupportSlowFirstResponse",
            "SvplServiceTokenExpiresSoon", "SvplServiceTokenExpired"} <= set(alerts)
    assert "svpl_service_token_expiry_timestamp_seconds" in alerts["SvplServiceTokenExpiresSoon"]["expr"]
    # Scoped to this release's namespace and media autoscaler, whatever the release is called.
    assert all(f'namespace="{NAMESPACE}"' in r["expr"] for r in alerts.values())
    hpa = _hpa_name(render(VALUE_SETS["metrics-on"]))
    assert alerts["SvplMediaAtMaxReplicas"]["expr"].count(f'horizontalpodautoscaler="{hpa}"') == 2


def test_dashboard_expressions_parse_as_promql():
    # Grafana fills in its variables before Prometheus sees the query.
    for expr in _exprs(DASHBOARD):
        promql_parser.parse(expr.replace("$namespace", "svpl").replace("$__rate_interval", "1m"))


def _hpa_name(r) -> str:
    (hpa,) = [h for h in r.of_kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == f"{FULL}-media"]
    return hpa["metadata"]["name"]


def _alert_metrics() -> set[str]:
    rules = (CHART / "templates" / "prometheusrules.yaml").read_text()
    return set(re.findall(r"\b(svpl_[a-z_]+?)(?:_bucket)?\{", rules))


@pytest.mark.parametrize("metric", sorted(set(DASHBOARD_METRICS) | _alert_metrics()))
def test_every_svpl_metric_on_the_dashboard_and_in_alerts_is_exported_by_a_service(metric):
    """Every svpl_* series the dashboard or an alert queries is declared by a service (prometheus_client)."""
    assert metric.startswith("svpl_"), metric
    # A Counter may be declared with or without "_total" (prometheus_client adds it).
    name = re.escape(metric.removesuffix("_total")) + r"(_total)?"
    declared = re.compile(r"(Counter|Gauge|Histogram|Summary)\(\s*[\"']" + name + r"[\"']")
    assert any(declared.search(p.read_text()) for p in (ROOT / "services").rglob("*.py")), metric


def test_helm_test_pod_checks_that_the_gateway_answers(render):
    r = render()
    (pod,) = r.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["image"] == r.container("gateway")["image"]
    script = container["command"][-1]
    assert f"http://{FULL}-gateway:8080/healthz" in script
    compile(script, "helm-test", "exec")  # the probe script is valid Python


def test_gateway_believes_forwarded_headers_only_from_the_configured_proxies(chart, render):
    """Issue #14: the gateway's trusted proxies are networks the chart passes as SVPL_TRUSTED_PROXIES
    (none by default), in a form the gateway's settings parse; a host name or "*" is refused."""
    import os
    from unittest import mock

    from services.gateway.config import GatewaySettings

    default = render().config("gateway")
    assert json.loads(default["SVPL_TRUSTED_PROXIES"]) == []
    config = render({"gateway": {"trustedProxies": ["10.42.0.0/16", "fd00::/8"],
                                 "publicUrl": "https://vardmote.example.se"}}).config("gateway")
    with mock.patch.dict(os.environ, {k: v for k, v in config.items() if k.startswith("SVPL_")}):
        settings = GatewaySettings(service_token="t")
    assert settings.trusted_proxies == ["10.42.0.0/16", "fd00::/8"]
    assert settings.public_url == "https://vardmote.example.se"
    for bad in (["*"], ["ingress.example.se"], "10.0.0.0/8"):
        with pytest.raises((helm.HelmRenderError, helm.HelmValuesError)):
            chart.render(merged({"gateway": {"trustedProxies": bad}}), name=RELEASE, namespace=NAMESPACE)
