"""The whole meeting in headless Chromium (three browsers) against the real system, inside a
private network namespace where only loopback exists, so WebRTC connects over it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "gateway"

# aioice never offers 127.0.0.1 as a host candidate: a second loopback address gives the media
# service one inside the namespace (Chromium, with --allow-loopback-in-peer-connection, uses either).
IP = shutil.which("ip") or "/usr/sbin/ip"
NAMESPACE_SETUP = f"{IP} link set lo up && {IP} addr add 127.0.0.2/8 dev lo"


def run_scenario(module: str, artifacts: Path) -> str:
    """Run a scenario module in a private network namespace; its output when it passed."""
    for tool in ("unshare", IP, "/usr/bin/chromium", "/usr/bin/chromedriver"):
        assert shutil.which(tool), f"{tool} is needed (make system-deps)"
    shutil.rmtree(artifacts, ignore_errors=True)  # only this run's screenshots count
    env = {**os.environ, "SE_OFFLINE": "true", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}"}
    script = f"{NAMESPACE_SETUP} && exec {sys.executable} -m {module} {artifacts}"
    result = subprocess.run(["unshare", "-rn", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, f"scenario failed:\n{result.stdout[-8000:]}\n{result.stderr[-6000:]}"
    return result.stdout


@pytest.mark.slow
def test_a_whole_join_alternating_between_two_gateway_processes():
    """Two gateway processes behind a round-robin proxy: admission, negotiation, tiles, quality, the
    events WebSocket and a reconnect each served by both, in two real browsers, none refused."""
    out = run_scenario("tests.gateway.replicas_scenario", ROOT / "test-artifacts" / "gateway-replicas")
    assert "scenario passed" in out, out


@pytest.mark.slow
def test_a_whole_meeting_in_three_browsers():
    """The coordinator books a SIP video meeting, registers two staff found in the HSA directory,
    records the confidentiality assessment, starts and joins; both log in and join; every page
    plays the other two's video in tiles named after whom they show (each camera has its own picture
    shape) and shows 3 connected with their names; an unidentified phone
    connection is highlighted and removed; the agenda moves on every page; a removed participant
    is told and refused on rejoin; the coordinator's red button ends the meeting, every page says
    so and rejoining is refused; a fault report says where it went; the test room echoes.
    Since #18 it also walks every coordinator task (tests/gateway/browser_scenario.py: link and
    invitation text, invitations, phone confirmation and tasks, reschedule, rebook request handled,
    corrected registration, presence, delegation, assessment and the question without one, caller
    identified, the agenda's opening steps and summary), Swedish refusals, confirmations, the
    control bar, 3-6 tiles filling a 1280×720 window with none below the fold, 360 px, the demo
    login page and the test room's sound, level and result; axe-core checks every page state it
    reaches."""
    run_scenario("tests.gateway.browser_scenario", ARTIFACTS)
    for shot in ("coordinator-tasks.png", "coordinator-meeting.png", "coordinator-unidentified.png",
                 "coordinator-after-removal.png", "coordinator-ended.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000


@pytest.mark.slow
def test_cancelling_a_booking_and_lists_longer_than_a_page_in_the_browser():
    """The coordinator has one meeting more than a page of the API holds: the meeting list, the
    meeting page's phone tasks and the report form's dial-in ID lookup reach the second page. Then
    "Avboka mötet" asks first, the meeting page says "Inställt" and the registered participant's join
    is refused; that participant, logged in, can neither cancel it nor read the coordinator's calls
    (tests/gateway/cancel_scenario.py)."""
    artifacts = ROOT / "test-artifacts" / "gateway-cancel"
    out = run_scenario("tests.gateway.cancel_scenario", artifacts)
    assert "scenario passed" in out, out
    assert (artifacts / "coordinator-cancelled.png").stat().st_size > 10_000
