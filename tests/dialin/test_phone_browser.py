"""The phone caller as the coordinator's browser shows them: headless Chromium in a private network
namespace (as tests/gateway/test_browser.py), the dial-in service as `make run` starts it, SIPp as
the phone (tests/dialin/browser_phone_scenario.py)."""

from __future__ import annotations

import pytest

from tests.gateway.test_browser import ROOT, run_scenario


@pytest.mark.slow
def test_a_caller_let_in_gets_a_phone_tile_and_telefon_in_the_people_panel_in_chromium():
    artifacts = ROOT / "test-artifacts" / "dialin-browser"
    out = run_scenario("tests.dialin.browser_phone_scenario", artifacts)
    assert "scenario passed" in out, out
    assert (artifacts / "coordinator-phone-tile.png").stat().st_size > 0
