"""The portal's side of a media instance killed mid-meeting: two headless Chromium browsers in a
live meeting on one of two media instances (every service its own process, as `make run`); the
hosting instance gets SIGKILL; each page notices, re-admits, renegotiates, and plays the other's
video again. Run inside a private network namespace (see test_media_instance_killed.py):
`python -m tests.faults.browser_media_killed <artifacts dir>`; exit status 0 = passed."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from selenium.webdriver.common.by import By
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from devstack.embedded_db import free_port
from devstack.samples import COORDINATOR_HSA, create_request
from devstack.stack import ROOT, Proc, Stack
from services.identity.tokens import KeyRing
from services.runtime import auth
from tests.gateway.browser_scenario import (
    Failed,
    assert_no_console_errors,
    browser,
    click,
    dev_login,
    js,
    outcome,
    playing_remote_videos,
    quit_quietly,
    save_failure_evidence,
    wait,
    wait_for_others_playing,
)

STAFF = ("SE2321000057-2001", "Rita Region")
RECOVERY_SECONDS = 10.0


def reconnects(driver) -> int:
    return int(js(driver, "const m = document.getElementById('room-message');"
                          "return Number((m && m.dataset.reconnects) || 0)"))


def live_meeting(stack: Stack) -> str:
    """Through roster's contract: a meeting with the coordinator and one region staff member, live."""
    ring = KeyRing.load(stack.keys_dir)
    coordinator = ring.issue_session_token(
        person_id=COORDINATOR_HSA, id_kind="hsa_id", name="Vera Samordnare", method="siths", assurance="high",
        roles=[auth.ROLE_STAFF, auth.ROLE_REGION_STAFF, auth.ROLE_COORDINATOR])[0]
    as_coordinator = auth.bearer(coordinator)
    with grpc.insecure_channel(stack.procs["roster"].address) as channel:
        roster = roster_pb2_grpc.RosterServiceStub(channel)
        m = roster.CreateMeeting(create_request("browser-media-killed"), metadata=auth.bearer(stack.tokens["booking"]),
                                 timeout=10).meeting
        roster.RegisterParticipant(roster_pb2.RegisterParticipantRequest(
            meeting_id=m.meeting_id, full_name=STAFF[1], role=roster_pb2.PARTICIPANT_ROLE_REGION_STAFF,
            person=common_pb2.PersonRef(id_kind=common_pb2.ID_KIND_HSA_ID, id=STAFF[0])),
            metadata=as_coordinator, timeout=10)
        roster.OpenMeeting(roster_pb2.OpenMeetingRequest(meeting_id=m.meeting_id), metadata=as_coordinator, timeout=10)
        roster.StartMeeting(roster_pb2.StartMeetingRequest(meeting_id=m.meeting_id), metadata=as_coordinator, timeout=10)
    return m.meeting_id


def hosting_instance(stack: Stack, meeting_id: str) -> str:
    with grpc.insecure_channel(stack.procs["roster"].address) as channel:
        return roster_pb2_grpc.RosterServiceStub(channel).GetMeeting(
            roster_pb2.GetMeetingRequest(meeting_id=meeting_id), metadata=auth.bearer(stack.tokens["booking"]),
            timeout=10).meeting.media_instance


def start_stack(work: Path) -> Stack:
    """The devstack, plus a second media instance; roster places rooms on either."""
    stack = Stack(work / "stack", extra_env={"SVPL_DEVELOPMENT_LOGIN": "true", "SVPL_SHUTDOWN_GRACE_SECONDS": "0.5"})
    try:
        stack.workdir.mkdir(parents=True, exist_ok=True)
        stack.start_database()
        stack.prepare_keys()
        stack.plan()
        first = stack.procs["media"]
        first.env["SVPL_INSTANCE_ID"] = "media-1"
        second = Proc("media-2", free_port(), free_port(), dict(first.env), work / "media-2.log")
        second.env.update(SVPL_GRPC_PORT=str(second.port), SVPL_METRICS_PORT=str(second.metrics_port),
                          SVPL_INSTANCE_ID="media-2")
        stack.procs["roster"].env["SVPL_MEDIA_ADDRESSES"] = json.dumps([first.address, second.address])
        stack.procs["media-2"] = second
        for name in stack.procs:
            if name == "media-2":
                with open(second.log_path, "ab") as log:
                    second.process = subprocess.Popen([sys.executable, "-m", "services.media"], env=second.env, cwd=ROOT,
                                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            else:
                stack.start_process(name)
        for name in stack.procs:
            stack.wait_healthy(name, 30)
    except BaseException:
        stack.stop()  # a start that fails leaves nothing running
        raise
    return stack


def first_join_fails_twice(driver) -> None:
    """The first join meets a network that does not answer: the page says so and lets the person
    try again. Then the negotiation fails once: the page admits again and negotiates on its own.
    (Chrome's DevTools blocks the requests, as a dropped network would fail them.)"""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/admission"]})
    click(driver, "#join")
    wait(driver, "the page saying the meeting cannot be reached now", lambda d: outcome(d)[0] == "unavailable")
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/negotiation"]})
    click(driver, "#join", "the join button, enabled again to try again")
    wait(driver, "the failed negotiation handled as a lost connection", lambda d: outcome(d)[0] == "reconnecting")
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})


def run(artifacts: Path) -> None:
    artifacts.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="svpl-media-killed-"))
    drivers = []
    stack = None
    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            launching = [pool.submit(browser, work / f"profile-{i}") for i in range(2)]
            stack = start_stack(work)
            drivers = [f.result() for f in launching]
        base = f"http://{stack.procs['gateway'].address}"
        meeting_id = live_meeting(stack)
        coordinator, staff = drivers
        for driver, person in ((coordinator, COORDINATOR_HSA), (staff, STAFF[0])):
            dev_login(driver, base, person)
            driver.get(f"{base}/portal/#/room/{meeting_id}")
        click(coordinator, "#join")
        first_join_fails_twice(staff)
        pages = ((coordinator, "coordinator"), (staff, STAFF[1]))
        for driver, who in pages:
            wait_for_others_playing(driver, who, count=1)
        print(f"both pages play the other's video at {time.monotonic() - started:.1f}s", flush=True)

        doomed = {"media-1": "media", "media-2": "media-2"}[hosting_instance(stack, meeting_id)]
        before = {who: reconnects(driver) for driver, who in pages}  # a loaded machine may have moved the room once already
        os.kill(stack.procs[doomed].running.pid, signal.SIGKILL)  # kill -9: no goodbye to anyone
        stack.procs[doomed].running.wait()
        killed_at = time.monotonic()
        recovered = {}
        for driver, who in pages:
            wait(driver, f"{who} reconnected and playing the other's video again",
                 lambda d, who=who: reconnects(d) > before[who] and any(f > 5 for f in playing_remote_videos(d)),
                 RECOVERY_SECONDS - (time.monotonic() - killed_at))
            recovered[who] = time.monotonic() - killed_at
        print(f"killed {doomed} -> both pages playing again: {recovered}", flush=True)
        for driver, who in pages:
            wait_for_others_playing(driver, who, count=1)  # and it keeps playing
            if driver.find_element(By.ID, "room-message").is_displayed():
                raise Failed(f"{who}'s page still shows a message after reconnecting")
            assert_no_console_errors(driver, who)
        moved_to = hosting_instance(stack, meeting_id)
        if moved_to == {"media": "media-1", "media-2": "media-2"}[doomed]:
            raise Failed("the meeting still names the killed instance")
        print(f"scenario passed in {time.monotonic() - started:.1f}s", flush=True)
    except Exception:
        save_failure_evidence(artifacts, zip(("coordinator", "staff"), drivers), stack)
        raise
    finally:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            pool.map(quit_quietly, drivers)
        print(f"browsers closed at {time.monotonic() - started:.1f}s", flush=True)
        if stack:
            for name in reversed(list(stack.procs)):
                t = time.monotonic()
                stack.stop_process(name)
                print(f"stop {name}: {time.monotonic() - t:.1f}s", flush=True)
            stack.stop()
        print(f"stack stopped at {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("SE_OFFLINE", "true")
    run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("test-artifacts/faults"))
