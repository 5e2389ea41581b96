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
NAMESPACE_SETUP = "ip link set lo up && ip addr add 127.0.0.2/8 dev lo"


@pytest.mark.slow
def test_a_whole_meeting_in_three_browsers():
    for tool in ("unshare", "ip", "/usr/bin/chromium", "/usr/bin/chromedriver"):
        assert shutil.which(tool), f"{tool} is needed (make system-deps)"
    env = {**os.environ, "SE_OFFLINE": "true", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}"}
    script = f"{NAMESPACE_SETUP} && exec {sys.executable} -m tests.gateway.browser_scenario {ARTIFACTS}"
    result = subprocess.run(["unshare", "-rn", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=170)
    assert result.returncode == 0, f"scenario failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    for shot in ("coordinator-meeting.png", "coordinator-after-removal.png", "coordinator-ended.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000
