"""The chart deploys identity with SITHS revocation checking (OCSP) on and refuses to
turn it off, the way it refuses the development login."""

from __future__ import annotations

import helm_python as helm
import pytest

from services.identity.config import IdentitySettings
from tests.charts.conftest import NAMESPACE, RELEASE, merged


def test_identity_checks_siths_revocation_by_ocsp(render):
    config = render().config("identity")
    assert config["SVPL_SITHS_REVOCATION"] == "ocsp"
    assert "SVPL_SITHS_OCSP_URL" not in config  # each card's own responder
    assert {"siths_revocation", "siths_ocsp_url"} <= set(IdentitySettings.model_fields)  # what the env names
    url = "http://ocsp.siths.se/"
    assert render({"identity": {"siths": {"ocspUrl": url}}}).config("identity")["SVPL_SITHS_OCSP_URL"] == url


@pytest.mark.parametrize("overlay, message", [
    ({"identity": {"siths": {"revocation": "off"}}}, "revocation checking cannot be turned off"),
    ({"components": {"identity": {"env": {"SVPL_SITHS_REVOCATION": "off"}}}}, "cannot be turned off"),
    ({"components": {"identity": {"extraEnv": [{"name": "svpl_siths_revocation", "value": "off"}]}}},
     "cannot be turned off"),
])
def test_siths_revocation_cannot_be_turned_off(chart, overlay, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(merged(overlay), name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("siths, message", [
    ({"revocation": "crl"}, "/identity/siths/revocation"),
    ({"ocspUrl": "ldap://x"}, "/identity/siths/ocspUrl"),
    ({"responder": "x"}, "'responder' not allowed"),
])
def test_the_schema_refuses_unknown_siths_values(chart, siths, message):
    with pytest.raises(helm.HelmValuesError, match=message):
        chart.render(merged({"identity": {"siths": siths}}), name=RELEASE, namespace=NAMESPACE)
