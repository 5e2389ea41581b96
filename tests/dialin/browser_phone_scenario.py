"""A phone caller in the coordinator's room, in headless Chromium: SIPp dials the devstack's
dial-in service (as `make run` starts it), the coordinator lets the caller in as the patient, and
the room shows a phone tile (icon, the patient's name, no video) and the people panel "Telefon";
after the removal both are gone.

Run inside a private network namespace (see test_phone_browser.py):
`python -m tests.dialin.browser_phone_scenario <artifacts dir>`; exit status 0 = passed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack import sipp
from devstack.sipp import free_udp_port
from devstack.stack import Stack
from tests.dialin.test_phone_caller import NUMBER, enter
from tests.gateway import flow
from tests.gateway.browser_scenario import (
    CAMERAS,
    COORDINATOR,
    assert_no_console_errors,
    browser,
    click,
    confirm,
    dev_login,
    evidence_and_cleanup,
    js,
    wait,
    write_camera,
)
from tests.gateway.replicas_scenario import PageClient

PHONE_TILES = """return [...document.querySelectorAll('#video-grid .tile.phone')].map(t =>
  [t.dataset.name || '', t.querySelector('.label').textContent, t.querySelectorAll('video').length, !t.hidden]);"""
ROSTER_PHONE = """return [...document.querySelectorAll('#roster-connected li')].filter(li => li.querySelector('.by-phone'))
  .map(li => [li.dataset.participant, li.querySelector('.by-phone').textContent.replace('☎', '').trim()]);"""
ON_THE_PHONE = """return [...document.querySelectorAll('#people-names li[data-phone="true"]')].map(li => li.dataset.name);"""


def run(artifacts: Path) -> None:
    artifacts.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="svpl-phone-"))
    stack = Stack(work / "stack", with_dialin=True,
                  extra_env={"SVPL_DEVELOPMENT_LOGIN": "true", "SVPL_SHUTDOWN_GRACE_SECONDS": "0.5"})
    drivers: list = []
    started = time.monotonic()
    caller = None
    with evidence_and_cleanup(artifacts, ("coordinator",), drivers, stack):
        drivers.append(browser(work / "profile", write_camera(work / "camera.y4m", *CAMERAS["Vera Samordnare"])))
        stack.start(timeout=30)
        (coordinator,) = drivers
        base = f"http://{stack.procs['gateway'].address}"
        dev_login(coordinator, base, COORDINATOR)
        page = PageClient(coordinator)
        meeting_id = asyncio.run(flow.book_video_meeting(page))["meeting_id"]  # type: ignore[arg-type]
        asyncio.run(flow.start(page, meeting_id))  # type: ignore[arg-type]
        meeting = page._fetch("GET", f"/api/v1/meetings/{meeting_id}").json()["meeting"]
        patient = next(p for p in page._fetch("GET", f"/api/v1/meetings/{meeting_id}/participants").json()["participants"]
                       if p["role"] == "PARTICIPANT_ROLE_PATIENT")
        # The meeting page shows the coordinator their own personal code, and gives every participant
        # a new one on request (confirmed; the coordinator is never shown the patient's).
        coordinator.get(f"{base}/portal/#/meeting/{meeting_id}")
        own = wait(coordinator, "the coordinator's own personal code",
                   lambda d: js(d, "const c = document.getElementById('personal-code'); return c && c.textContent;"))
        assert len(own) == 8 and own.isdigit(), own
        click(coordinator, f'button.reissue-code[data-participant="{patient["participant_id"]}"]', "Ny personlig kod")
        confirm(coordinator, "a new personal code", f"Ge {patient['full_name']} en ny personlig kod?")
        wait(coordinator, "the new code's confirmation", lambda d: "har fått en ny personlig kod" in js(
            d, "return document.getElementById('meeting-message').textContent;"))
        assert coordinator.page_source.count(own) == 1  # their own, once; nobody else's code is on the page
        sip_port = int(stack.procs["dialin"].env["SVPL_SIP_PORT"])

        # The coordinator dials in with the code their page shows: in the meeting by phone, as
        # themselves, without anyone letting them in. Their browser is then told to hang up first, and
        # they do (15 s after the code: time enough for the browser's join on a loaded machine).
        on_phone = sipp.scenario(work / "own.xml", "0701239956", enter(work, "own", f"{meeting['dial_in_code']}#{own}#")
                                 + [sipp.pause(15000)], expect="hangup")
        own_call = subprocess.Popen([sipp.SIPP, f"127.0.0.1:{sip_port}", "-sf", str(on_phone), "-m", "1",
                                     "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mi", "127.0.0.1",
                                     "-mp", str(free_udp_port()), "-s", "dialin", "-timeout", "90s", "-nostdin"],
                                    cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(coordinator, "the coordinator in the meeting by phone, by their own code", lambda d: [
            c for c in page._fetch("GET", f"/api/v1/meetings/{meeting_id}/reconciliation").json().get("by_phone", [])
            if c["label"] == "Telefon, slutar på …56"], 30)
        coordinator.get(f"{base}/portal/#/room/{meeting_id}")
        click(coordinator, "#join")
        wait(coordinator, "the browser told to hang up the phone first", lambda d: "per telefon" in js(
            d, "return document.getElementById('room-message').textContent;"), 20)
        assert own_call.wait(45) == 0  # hung up
        click(coordinator, "#join", "Försök igen")
        in_room = ("return Boolean(document.getElementById('video-grid')) && "
                   "document.getElementById('people-count').textContent === '1'")
        wait(coordinator, "the coordinator in the room", lambda d: js(d, in_room))

        scenario = sipp.scenario(work / "call.xml", NUMBER, enter(work, "call", meeting["dial_in_code"] + "##"))
        caller = subprocess.Popen([sipp.SIPP, f"127.0.0.1:{sip_port}", "-sf", str(scenario), "-m", "1", "-i", "127.0.0.1",
                                   "-p", str(free_udp_port()), "-mi", "127.0.0.1", "-mp", str(free_udp_port()),
                                   "-s", "dialin", "-timeout", "120s", "-nostdin"], cwd=work,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        waiting = wait(coordinator, "the caller in the lobby", lambda d: page._fetch(
            "GET", f"/api/v1/meetings/{meeting_id}/reconciliation").json().get("connected_not_identified"), 30)
        assert not js(coordinator, PHONE_TILES), "a phone tile before the caller was let in"
        identified = page._fetch("POST", f"/api/v1/meetings/{meeting_id}/identifications", {
            "connection_id": waiting[0]["connection_id"], "participant_id": patient["participant_id"]})
        assert identified.status_code == 200, identified.text

        tiles = wait(coordinator, "the patient's phone tile", lambda d: js(d, PHONE_TILES), 45)
        name = patient["full_name"]
        assert tiles == [[name, f"{name} (telefon)", 0, True]], tiles
        wait(coordinator, "the patient as on the phone in the people panel",
             lambda d: js(d, ON_THE_PHONE) == [name], 30)
        # The coordinator's "Registrerade och anslutna" card marks the patient as on the phone, the
        # number's ending only (as the lobby showed it).
        marked = wait(coordinator, "Telefon in the coordinator's roster card", lambda d: js(d, ROSTER_PHONE), 30)
        assert marked == [[patient["participant_id"], "Telefon, slutar på …12"]], marked
        assert NUMBER not in coordinator.page_source
        # The grid is laid out for two tiles, the phone tile's whole box in the window beside the coordinator's.
        wait(coordinator, "two tiles laid out, the phone tile in the window", lambda d: js(
            d, "scrollTo(0, 0); const t = document.querySelector('#video-grid .tile.phone').getBoundingClientRect();"
               " return document.getElementById('video-grid').dataset.count === '2' && t.bottom <= innerHeight;"))
        coordinator.save_screenshot(str(artifacts / "coordinator-phone-tile.png"))
        print(f"phone tile shown at {time.monotonic() - started:.1f}s", flush=True)

        removed = page._fetch("POST", f"/api/v1/meetings/{meeting_id}/removals",
                              {"participant_id": patient["participant_id"], "reason": "test"})
        assert removed.status_code == 200, removed.text
        wait(coordinator, "the phone tile gone after the removal", lambda d: not js(d, PHONE_TILES), 30)
        wait(coordinator, "nobody on the phone in the people panel", lambda d: js(d, ON_THE_PHONE) == [], 30)
        wait(coordinator, "no Telefon in the roster card", lambda d: js(d, ROSTER_PHONE) == [], 30)
        assert caller.wait(15) == 0  # the service hung up (BYE), and SIPp answered it
        assert_no_console_errors(coordinator, "coordinator")
        print(f"scenario passed in {time.monotonic() - started:.1f}s", flush=True)
    if caller is not None and caller.poll() is None:
        caller.kill()


if __name__ == "__main__":
    run(Path(sys.argv[1]))
