"""`make run` starts the dial-in service as its own process too (devstack's Stack with_dialin), and
the SIP address it prints answers a call: SIPp from this machine (the devstack's trunk) is answered
with G.711, hangs up itself, and the service forgets the call."""

from __future__ import annotations

import subprocess

import pytest

from devstack import sipp
from devstack.sipp import free_udp_port
from devstack.stack import Stack
from tests.polling import poll_blocking


@pytest.mark.slow
def test_make_runs_stack_starts_the_dial_in_service_and_its_sip_address_answers(tmp_path):
    stack = Stack(tmp_path / "stack", with_dialin=True)
    try:
        stack.start(["identity", "roster", "media", "dialin"], timeout=30)
        address = stack.sip_address
        assert address.startswith("sip:dialin@127.0.0.1:"), address
        port = int(address.rsplit(":", 1)[1])
        # Answered, then the caller hangs up.
        scenario = sipp.scenario(tmp_path / "hello.xml", "0701234599", [sipp.pause(500)], expect="hangup")
        done = subprocess.run([sipp.SIPP, f"127.0.0.1:{port}", "-sf", str(scenario), "-m", "1", "-i", "127.0.0.1",
                               "-p", str(free_udp_port()), "-mi", "127.0.0.1", "-mp", str(free_udp_port()),
                               "-s", "dialin", "-timeout", "20s", "-nostdin"], cwd=tmp_path, capture_output=True,
                              timeout=30, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        log = stack.procs["dialin"].log_path
        poll_blocking(lambda: "ended" in log.read_text(errors="replace"), 10,
                      lambda: "the call's end in the log: " + log.read_text(errors="replace")[-2000:])
        assert "0701234599" not in log.read_text(errors="replace")  # the number is masked in the log
    finally:
        stack.stop()
