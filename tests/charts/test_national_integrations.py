"""The chart's settings for the national integrations (issue #22): the 1177 inbox over the national
service platform with its client-certificate Secret, the Inera test-environment flag, and SITHS
assurance policies; each value reaches the setting the service reads."""

from __future__ import annotations

import helm_python as helm
import pytest

from services.identity.config import IdentitySettings
from services.roster.config import RosterSettings
from tests.charts.conftest import NAMESPACE, RELEASE, merged

INBOX = {"roster": {"inbox1177": {"url": "https://ntjp.example.se/vp/AddMessage/2/rivtabp21",
                                  "clientCertSecret": "svpl-ntjp-function-cert"}}}


def test_the_inbox_client_certificate_comes_from_its_secret(render):
    r = render(INBOX)
    config = r.config("roster")
    assert config["SVPL_INBOX_1177_URL"] == INBOX["roster"]["inbox1177"]["url"]
    assert config["SVPL_INBOX_1177_LOGICAL_ADDRESS"] == "5565594230"
    assert config["SVPL_INBOX_1177_CLIENT_CERT_FILE"] == "/var/run/svpl/inbox-1177/tls.crt"
    assert {k.removeprefix("SVPL_").lower() for k in config if "INBOX" in k} <= set(RosterSettings.model_fields)
    pod = r.deployment("roster")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "inbox-1177-client")
    assert volume["secret"]["secretName"] == "svpl-ntjp-function-cert"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "inbox-1177-client")
    assert (mount["mountPath"], mount["readOnly"]) == ("/var/run/svpl/inbox-1177", True)
    off = render({"roster": {"inbox1177": {"enabled": False, "url": "", "clientCertSecret": ""}}})
    assert "SVPL_INBOX_1177_URL" not in off.config("roster")  # switched off: no address, no certificate
    assert "inbox-1177-client" not in {v["name"] for v in off.deployment("roster")["spec"]["template"]["spec"]["volumes"]}


def test_an_inbox_without_a_client_certificate_is_refused(chart):
    with pytest.raises(helm.HelmValuesError, match="/roster/inbox1177/clientCertSecret"):
        chart.render(merged({"roster": {"inbox1177": {"clientCertSecret": ""}}}), name=RELEASE, namespace=NAMESPACE)


def test_identity_gets_the_test_environment_flag_and_siths_policies(render):
    config = render().config("identity")
    assert config["SVPL_TEST_ENVIRONMENT"] == "false"
    config = render({"testEnvironment": True, "identity": {"siths": {"loa3PolicyOids": "1.2.3.4",
                                                                     "loa2PolicyOids": "1.2.3.5"}}}).config("identity")
    assert (config["SVPL_TEST_ENVIRONMENT"], config["SVPL_SITHS_LOA3_POLICY_OIDS"],
            config["SVPL_SITHS_LOA2_POLICY_OIDS"]) == ("true", "1.2.3.4", "1.2.3.5")
    assert {"test_environment", "siths_loa3_policy_oids", "siths_loa2_policy_oids"} <= set(IdentitySettings.model_fields)


def test_identity_gets_the_1177_protocol_and_minimum_assurance(render):
    config = render().config("identity")
    assert (config["SVPL_E_SERVICES_1177_PROTOCOL"], config["SVPL_E_SERVICES_1177_MIN_LOA"]) == ("oidc", "3")
    config = render({"identity": {"e1177": {"protocol": "saml", "minLoa": 4}}}).config("identity")
    assert (config["SVPL_E_SERVICES_1177_PROTOCOL"], config["SVPL_E_SERVICES_1177_MIN_LOA"]) == ("saml", "4")
    assert {"e_services_1177_protocol", "e_services_1177_min_loa"} <= set(IdentitySettings.model_fields)


@pytest.mark.parametrize("overlay, message", [
    ({"roster": {"inbox1177": {"url": "http://plain.example"}}}, "/roster/inbox1177/url"),
    ({"identity": {"siths": {"loa3PolicyOids": "not an oid"}}}, "/identity/siths/loa3PolicyOids"),
    ({"identity": {"e1177": {"minLoa": 1}}}, "/identity/e1177/minLoa"),
    ({"identity": {"e1177": {"protocol": "wsfed"}}}, "/identity/e1177/protocol"),
])
def test_the_schema_refuses_bad_values(chart, overlay, message):
    with pytest.raises(helm.HelmValuesError, match=message):
        chart.render(merged(overlay), name=RELEASE, namespace=NAMESPACE)
