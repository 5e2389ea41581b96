"""A whole SIP meeting in three headless Chromium browsers against the real system (every
service as its own process, as `make run` starts them).

Run inside a private network namespace (see test_browser.py): only loopback exists, so WebRTC
connects over it. `python -m tests.gateway.browser_scenario <artifacts dir>`; exit status 0 = passed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from devstack.stack import Stack
from tests.gateway import axe

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,900",
]
COORDINATOR = "SE2321000057-1001"
STAFF = ("SE2321000057-2001", "Rita Region")
MUNICIPALITY = ("SE2120000829-3001", "Mona Kommun")
UNIT = "SE2321000057-0001"
PATIENT = "191212121212"


class Failed(AssertionError):
    pass


# Each browser's camera: a picture of its own shape, so a tile's video shows whom it carries.
CAMERAS = {"Vera Samordnare": (320, 240), STAFF[1]: (320, 180), MUNICIPALITY[1]: (240, 240)}


def write_camera(path: Path, width: int, height: int, frames: int = 30, noisy_rows: int = 0) -> Path:
    """A looping Y4M clip (the format Chromium's file-backed fake camera reads): a moving luma ramp.
    `noisy_rows`: that many rows at the top are new noise in every frame, which costs the encoder
    bits as a real camera's picture does (the ramp alone needs a few dozen kbit/s)."""
    noise = random.Random(width * height)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n".encode())
        chroma = bytes([128]) * ((width // 2) * (height // 2) * 2)
        for n in range(frames):
            row = bytes((x + 8 * n) % 256 for x in range(width))
            out.write(b"FRAME\n" + noise.randbytes(width * noisy_rows) + row * (height - noisy_rows) + chroma)
    return path


def browser(profile: Path, camera: Path | None = None, service: Service | None = None) -> webdriver.Chrome:
    """Headless Chromium driven by chromedriver (`service`: another way to start it, e.g. in a network
    namespace)."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    if camera is not None:
        options.add_argument(f"--use-file-for-fake-video-capture={camera}")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=service or Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(10)
    return driver


def save_failure_evidence(artifacts: Path, named_drivers, stack) -> None:
    """Best-effort evidence of a failed scenario: each page's screenshot, console and text, each
    service's log, in `artifacts`; and a short digest on stdout (all a CI log keeps): each page's
    last console lines and each service's last warnings."""
    for name, driver in named_drivers:
        try:
            driver.save_screenshot(str(artifacts / f"failure-{name}.png"))
            logs = driver.get_log("browser")
            page = driver.execute_script("return location.href + '\\n' + document.body.innerText")
            (artifacts / f"failure-{name}-console.txt").write_text("\n".join(str(e) for e in logs) + "\n" + page)
            print(f"--- {name}'s console, last lines:", *(e.get("message", "")[:200] for e in logs[-6:]),
                  sep="\n  ", flush=True)
        except Exception:  # noqa: BLE001 - best effort evidence
            pass
    for proc in (stack.procs.values() if stack else ()):
        if proc.log_path.exists():
            text = proc.log_path.read_text(errors="replace")
            (artifacts / f"failure-{proc.name}.log").write_text(text[-20000:])
            warnings = [line[:300] for line in text.splitlines() if '"level": "WARNING"' in line or
                        '"level": "ERROR"' in line][-4:]
            if warnings:
                print(f"--- {proc.name}'s last warnings:", *warnings, sep="\n  ", flush=True)


@contextlib.contextmanager
def evidence_and_cleanup(artifacts: Path, names: tuple[str, ...], drivers: list, stack: Stack):
    """Around a scenario: on a failure each page's and service's evidence (save_failure_evidence);
    always the browsers quit and the stack stopped."""
    try:
        yield
    except Exception:
        save_failure_evidence(artifacts, zip(names, drivers), stack)
        raise
    finally:
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            pool.map(quit_quietly, drivers)
        stack.stop()


def wait(driver, what: str, check, timeout: float = 45.0):
    """Poll `check(driver)` until it returns something truthy; fail naming `what`. The bounds are
    generous: three Chromiums and every service share two cores, and a loaded machine is slow,
    not wrong (a passing run never waits for them)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check(driver)
            if value:
                return value
        except WebDriverException as exc:
            last_error = exc
        time.sleep(0.1)
    message = driver.execute_script(
        "const m = document.getElementById('room-message') || document.querySelector('.message.error');"
        "return m ? m.textContent : ''") if driver else ""
    raise Failed(f"timed out waiting for: {what} (page says: {message!r}; {last_error or ''})")


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def click(driver, css: str, what: str = "") -> None:
    element = wait(driver, what or css, lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, css)
                                                        if e.is_displayed() and e.is_enabled()), None))
    element.click()


def type_into(driver, css: str, text: str) -> None:
    element = wait(driver, css, lambda d: d.find_element(By.CSS_SELECTOR, css))
    element.clear()
    element.send_keys(text)


def dev_login(driver, base: str, person_id: str) -> None:
    driver.get(f"{base}/auth/rjl/login")
    wait(driver, "the development login list", lambda d: d.find_elements(By.CSS_SELECTOR, "button.dev-login"))
    if not driver.find_elements(By.CSS_SELECTOR, "body[data-checked]"):
        login_page_says_what_is_not_configured(driver)
    assert_accessible_form_controls(driver, "login page")
    click(driver, f'button.dev-login[data-person="{person_id}"]', f"the development login button for {person_id}")
    wait(driver, "the portal after login", lambda d: "/portal/" in d.current_url and d.find_element(By.ID, "whoami").text)


DEMO_PEOPLE = {"SE2321000057-1001": "LOGIN_METHOD_SITHS", "SE2321000057-4001": "LOGIN_METHOD_SITHS",
               "SE2120000829-4002": "LOGIN_METHOD_SITHS", "191212121212": "LOGIN_METHOD_BANKID",
               "198112289874": "LOGIN_METHOD_E_SERVICES_1177"}


def login_page_says_what_is_not_configured(driver) -> None:
    """`make run`'s login page: every demo person (the support desks too) with the method the routine
    gives them (a next of kin: 1177); BankID and 1177, not configured there, say so in Swedish."""
    listed = {b.get_attribute("data-person"): b.get_attribute("data-method")
              for b in driver.find_elements(By.CSS_SELECTOR, "button.dev-login")}
    if any(listed.get(k) != v for k, v in DEMO_PEOPLE.items()):
        raise Failed(f"the demo people listed are {listed}")
    for button, words in (("#bankid-start", "BankID är inte konfigurerad"), ("#e1177-login", "1177 är inte konfigurerad")):
        click(driver, button)
        wait(driver, f"{button} says it is not configured",
             lambda d, words=words: words in d.find_element(By.ID, "login-message").text)
        if "/auth/rjl/login" not in driver.current_url:
            raise Failed(f"{button} left the login page for {driver.current_url}")
    js(driver, "document.body.dataset.checked = 'yes'")


def playing_remote_videos(driver) -> list[int]:
    """Frame counts of the remote video tiles that are showing someone."""
    return js(driver, "return [...document.querySelectorAll('#video-grid .tile.remote:not([hidden]) video')]"
                      ".map(v => Number(v.dataset.frames))")


def wait_for_others_playing(driver, who: str, count: int = 2) -> None:
    first = wait(driver, f"{who} sees {count} others' video", lambda d: (lambda f: f if len(f) >= count and
                                                                         min(f) > 5 else None)(playing_remote_videos(d)), 75)
    # Playing means frames keep coming, not one frozen picture.
    wait(driver, f"{who}'s remote videos keep playing", lambda d: (lambda f: len(f) >= count and sorted(f)[-count] >
                                                                   sorted(first)[-count] + 10)(playing_remote_videos(d)))


def named_tiles(driver) -> list[tuple[str, float]]:
    """(label, width / height of the video) of each remote tile that is showing someone."""
    return sorted((label, round(ratio, 2)) for label, ratio in js(driver, """
        return [...document.querySelectorAll('#video-grid .tile.remote:not([hidden])')].map(t => {
          const v = t.querySelector('video');
          return [t.querySelector('.label').textContent, v.videoHeight ? v.videoWidth / v.videoHeight : 0]; });"""))


def wait_for_named_tiles(driver, who: str, names: list[str]) -> None:
    """Each playing remote tile carries the name of the person whose camera it plays (the picture's
    shape tells whose it is), and together they are exactly `names`."""
    wanted = sorted((name, round(CAMERAS[name][0] / CAMERAS[name][1], 2)) for name in names)
    wait(driver, f"{who}'s tiles named {wanted}", lambda d: named_tiles(d) == wanted)


def connected_people(driver) -> tuple[str, list[str]]:
    count = driver.find_element(By.ID, "people-count").text
    button = driver.find_element(By.ID, "people-button")
    if button.get_attribute("aria-expanded") != "true":
        button.click()
    names = sorted(li.get_attribute("data-name") for li in driver.find_elements(By.CSS_SELECTOR, "#people-names li")
                   if li.is_displayed())
    return count, names


def wait_for_people(driver, who: str, names: list[str]) -> None:
    wanted = (str(len(names)), sorted(names))
    wait(driver, f"{who}'s person icon shows {wanted}", lambda d: connected_people(d) == wanted)
    driver.find_element(By.ID, "people-button").click()  # close the list again


def assert_accessible_form_controls(driver, page: str) -> None:
    """axe-core finds no WCAG 2.1 AA violation on the page as it is now; and, by hand, every visible
    form control has a label (or an aria-label), every button a name."""
    axe.assert_no_violations(driver, page)
    unnamed = js(driver, """
        const visible = e => e.offsetParent !== null;
        const controls = [...document.querySelectorAll('input, select, textarea')].filter(visible)
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'));
        const buttons = [...document.querySelectorAll('button, a')].filter(visible)
          .filter(e => !(e.getAttribute('aria-label') || e.textContent.trim()));
        return controls.concat(buttons).map(e => e.outerHTML.slice(0, 120));""")
    if unnamed:
        raise Failed(f"{page}: controls without an accessible name: {unnamed}")


def confirm(driver, what: str, question: str) -> None:
    """The confirmation dialog before a destructive action: it asks `question`; it is accessible; yes."""
    asked = wait(driver, f"the confirmation before {what}", lambda d: next(
        (e.text for e in d.find_elements(By.CSS_SELECTOR, "dialog#confirm-dialog[open] h2") if e.is_displayed()), None))
    if question not in asked:
        raise Failed(f"the confirmation before {what} asks {asked!r}, not {question!r}")
    assert_accessible_form_controls(driver, f"the confirmation before {what}")
    click(driver, "#confirm-yes", f"yes, {what}")


def assert_no_console_errors(driver, who: str) -> None:
    """No script error and no Content-Security-Policy violation on the page (refused requests,
    like a refused rejoin, are expected network errors)."""
    errors = [e["message"] for e in driver.get_log("browser")
              if e["level"] == "SEVERE" and (e.get("source") != "network" or "Content Security Policy" in e["message"])]
    if errors:
        raise Failed(f"{who}'s browser console has errors: {errors[:5]}")


def outcome(driver) -> tuple[str, str]:
    return js(driver, "const m = document.getElementById('room-message');"
                      "return m ? [m.dataset.outcome || '', m.textContent] : ['', '']")


def quit_quietly(driver) -> None:
    try:
        driver.quit()
    except Exception:  # noqa: BLE001 - the browser may be gone already
        pass


def report_phone_connection(stack: Stack, meeting_id: str, connection_id: str = "phone-1") -> None:
    import grpc
    from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

    with grpc.insecure_channel(stack.procs["roster"].address) as channel:
        stub = roster_pb2_grpc.RosterServiceStub(channel)
        meeting = stub.GetMeeting(roster_pb2.GetMeetingRequest(meeting_id=meeting_id),
                                  metadata=(("authorization", f"Bearer {stack.tokens['media']}"),), timeout=5).meeting
        answer = stub.ReportConnection(roster_pb2.ReportConnectionRequest(
            meeting_id=meeting_id, connection_id=connection_id, kind=roster_pb2.CONNECTION_KIND_PHONE, connected=True,
            label="070-*** ** 12", media_instance=meeting.media_instance),
            metadata=(("authorization", f"Bearer {stack.tokens['media']}"),), timeout=5)
        if not answer.allowed:
            raise Failed("roster refused the phone connection")


SUMMARY = "Hemtjänst fyra gånger per dag från utskrivningen; uppföljning om två veckor."


def coordinator_tasks_before_the_meeting(coordinator, meeting_id: str, artifacts: Path) -> str:
    """On the meeting's page: the link with its invitation text and the dial-in ID beside it; one
    more party invited (by phone); the phone tasks listed; a confirmation received by phone recorded
    with names; a phone task marked done; the meeting moved an hour; no rebook requests."""
    dial_in = coordinator.find_element(By.ID, "dial-in").text
    wait(coordinator, "the meeting link with the dial-in ID", lambda d: d.find_element(By.ID, "link-dial-in").text == dial_in
         and meeting_id in d.find_element(By.ID, "portal-url").get_attribute("href"))
    text = coordinator.find_element(By.ID, "invitation-text").get_attribute("value")
    if dial_in not in text or meeting_id not in text:
        raise Failed(f"the invitation text lacks the link or the dial-in ID: {text!r}")
    click(coordinator, "#copy-invitation")
    wait(coordinator, "the copy confirmed", lambda d: "kopierad" in d.find_element(By.ID, "copy-message").text)
    if "SIP-möte" not in coordinator.title:
        raise Failed(f"the page title does not name the meeting: {coordinator.title!r}")

    type_into(coordinator, "#invite-name", "Avdelning 12")
    Select(coordinator.find_element(By.ID, "invite-kind")).select_by_value("PARTY_KIND_INPATIENT_WARD")
    Select(coordinator.find_element(By.ID, "invite-channel")).select_by_value("CHANNEL_PHONE")
    type_into(coordinator, "#invite-address", "036-32 10 00")
    click(coordinator, "#invite-submit")
    wait(coordinator, "the new party invited", lambda d: "Avdelning 12" in d.find_element(By.ID, "invitation-list").text)
    wait(coordinator, "both phone tasks listed", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#phone-tasks li.task")) == 2)
    tasks = coordinator.find_element(By.ID, "phone-tasks").text
    if dial_in not in tasks:
        raise Failed(f"the phone task does not give the dial-in ID: {tasks!r}")

    # Hemtjänsten Väster confirms by phone with the names of who will attend.
    first = coordinator.find_element(By.CSS_SELECTOR, "#invitation-list li.invitation")
    first.find_element(By.CSS_SELECTOR, "summary").click()
    first.find_element(By.CSS_SELECTOR, "textarea").send_keys("Mona Kommun\nKalle Hemtjänst")
    assert_accessible_form_controls(coordinator, "the confirmation form")
    first.find_element(By.CSS_SELECTOR, "button.confirm-invitation").click()
    wait(coordinator, "the confirmation with names", lambda d: "deltar: Mona Kommun, Kalle Hemtjänst" in
         d.find_element(By.ID, "invitation-list").text and "Bekräftad" in d.find_element(By.ID, "invitation-list").text)
    click(coordinator, "#phone-tasks button.task-done", "mark a phone task done")
    wait(coordinator, "one phone task done", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#phone-tasks li.task.done")) == 1)

    wait(coordinator, "no rebook requests", lambda d: "Inga önskemål" in d.find_element(By.ID, "rebook-requests").text)
    # Moved an hour later: the meeting follows.
    before = coordinator.find_element(By.CSS_SELECTOR, "dl.card dd").text
    js(coordinator, "const i = document.getElementById('new-start'); const t = new Date(i.value);"
                    "t.setHours(t.getHours() + 1);"
                    "i.value = new Date(t - t.getTimezoneOffset() * 6e4).toISOString().slice(0, 16);")
    click(coordinator, "#reschedule-submit")
    wait(coordinator, "the meeting moved", lambda d: d.find_element(By.CSS_SELECTOR, "dl.card dd").text not in ("", before))
    coordinator.save_screenshot(str(artifacts / "coordinator-tasks.png"))
    fits_a_phone(coordinator, "the coordinator's meeting page")
    return dial_in


def presence_and_delegation(coordinator) -> None:
    row = '#participants tr[data-participant]'
    rita = wait(coordinator, "Rita's row", lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, row)
                                                          if r.text.startswith(STAFF[1])), None))
    rita.find_element(By.CSS_SELECTOR, "input.presence").click()
    wait(coordinator, "Rita marked present", lambda d: "fysiskt närvarande hos patienten" in
         d.find_element(By.ID, "meeting-message").text)
    # Chosen and sent at once: the form is drawn again when the participant list is read again.
    wait(coordinator, "Rita chosen as co-lead", lambda d: js(
        d, "const s = document.getElementById('delegate-to'), b = document.getElementById('delegate-submit');"
           "const o = s && [...s.options].find(o => o.text === arguments[0]);"
           "if (!o || !b) return false; s.value = o.value; b.click(); return true;", STAFF[1]))
    wait(coordinator, "Rita delegated", lambda d: STAFF[1] in d.find_element(By.ID, "delegates").text)


def fits_a_phone(driver, state: str) -> None:
    """At 360 px wide (a phone, emulated: headless Chromium's window is at least 500 px) nothing
    sticks out sideways: the page does not scroll horizontally."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": False})
    try:
        wait(driver, f"{state} at 360 px without horizontal overflow", lambda d: js(
            d, "return innerWidth === 360 && document.documentElement.scrollWidth <= 360"), 10)
    except Failed as failed:
        # What sticks out (absolutely positioned text escapes a scrolling parent that is not positioned).
        wider = js(driver, "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 361"
                           " && getComputedStyle(e).position === 'absolute' || !e.closest('table')"
                           " && e.getBoundingClientRect().right > 361).slice(0, 8)"
                           ".map(e => e.tagName + '#' + e.id + '.' + e.className)")
        raise Failed(f"{failed} (wider than the screen: {wider})") from None
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def room_controls(coordinator, staff) -> None:
    """The control bar: microphone off and on again (the self tile says so), the gear opens device
    choices during the meeting, who is speaking is marked from audio levels (own and others'), the
    layout follows the tile count; the room fits a phone."""
    click(coordinator, "#mic-toggle")
    wait(coordinator, "the microphone off", lambda d: d.find_element(By.ID, "mic-toggle").get_attribute("aria-pressed")
         == "false" and "mic-off" in d.find_element(By.CSS_SELECTOR, "#video-grid .tile.self").get_attribute("class"))
    click(coordinator, "#mic-toggle")
    click(coordinator, "#room-gear")
    wait(coordinator, "cameras and microphones to choose during the meeting", lambda d: d.find_elements(
        By.CSS_SELECTOR, "#room-camera option") and d.find_elements(By.CSS_SELECTOR, "#room-microphone option"))
    assert_accessible_form_controls(coordinator, "the device settings during the meeting")
    click(coordinator, "#room-gear")
    for driver, who in ((coordinator, "coordinator"), (staff, STAFF[1])):
        wait(driver, f"{who}'s own speaking marked", lambda d: float(d.find_element(
            By.CSS_SELECTOR, "#video-grid .tile.self").get_attribute("data-peak") or 0) > 0.02)
        wait(driver, f"{who} sees others' speaking marked", lambda d: any(float(t.get_attribute("data-peak") or 0) > 0.02
             for t in d.find_elements(By.CSS_SELECTOR, "#video-grid .tile.remote")))
    wait(coordinator, "the layout for three tiles", lambda d: d.find_element(By.ID, "video-grid").get_attribute(
        "data-count") == "3")
    tiles_fit_the_window(coordinator)
    fits_a_phone(staff, "the room")


# Where the room's tiles are, as the page lays them out: every shown tile's box, the window's size
# and how far the page scrolls sideways.
TILE_BOXES = """
scrollTo(0, 0);
const grid = document.getElementById('video-grid');
const g = grid.getBoundingClientRect();
return { count: Number(grid.dataset.count), height: innerHeight, scrollWidth: document.documentElement.scrollWidth,
         grid: [g.left, g.top, g.right, g.bottom],
         tiles: [...grid.querySelectorAll('.tile:not([hidden])')].map(t => {
           const r = t.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }) };"""


def tiles_fit_the_window(driver) -> None:
    """In a 1280×720 window the room's tiles fill the window without any below the fold: the three
    tiles of the meeting, then (extra copies of the self tile standing in for more people) four to six."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 720, "deviceScaleFactor": 1, "mobile": False})
    try:
        for count in range(3, 7):
            if count > 3:
                js(driver, "const g = document.getElementById('video-grid'), c = g.querySelector('.tile.self').cloneNode(true);"
                           "c.className = 'tile layout-probe'; c.querySelector('video').setAttribute('aria-label', 'Provruta');"
                           "g.append(c);")

            seen: list[dict] = []

            def fits(d, count=count, seen=seen):
                boxes = js(d, TILE_BOXES)
                seen[:] = [boxes]
                if boxes["count"] != count or len(boxes["tiles"]) != count or boxes["scrollWidth"] > 1280:
                    return False
                # None below the fold, and filling the window, not shrunk to fit: the tiles take (nearly)
                # the grid's whole width or reach (nearly) the window's bottom edge.
                wide = max(box[2] for box in boxes["tiles"]) - min(box[0] for box in boxes["tiles"])
                free_below = boxes["height"] - max(box[3] for box in boxes["tiles"])
                return free_below >= 0 and (wide >= 0.9 * (boxes["grid"][2] - boxes["grid"][0])
                                            or free_below <= 0.1 * boxes["height"])
            try:
                wait(driver, f"{count} tiles filling a 1280×720 window, none below the fold", fits, 10)
            except Failed as failed:
                raise Failed(f"{failed}: {seen}") from None
    finally:
        js(driver, "document.querySelectorAll('#video-grid .layout-probe').forEach(t => t.remove())")
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_room_hears_and_measures(staff) -> None:
    """The test room plays the person's own sound back too, shows the microphone level, says how
    good the connection is in words, and stops."""
    if not js(staff, "const v = document.getElementById('test-echo'); return v.srcObject && v.srcObject.getAudioTracks().length"):
        raise Failed("the test room does not play the person's own sound back")
    wait(staff, "the microphone level moving", lambda d: float(d.find_element(By.ID, "test-level").get_attribute(
        "data-peak") or 0) > 0.01, 20)
    said = wait(staff, "the connection result in words", lambda d: d.find_element(By.ID, "test-result").text, 30)
    if staff.find_element(By.ID, "test-result").get_attribute("data-quality") not in ("bra", "svag") or "svarstid" not in said:
        raise Failed(f"the connection result is not in words: {said!r}")
    print(f"test room: {said}", flush=True)
    assert_accessible_form_controls(staff, "the test room measuring")
    fits_a_phone(staff, "the test room")
    click(staff, "#test-stop")
    wait(staff, "the test stopped", lambda d: d.find_element(By.ID, "test-start").is_displayed())


def refusals_in_swedish(coordinator) -> None:
    """Refusals are Swedish sentences a person can act on (never the server's English detail)."""
    type_into(coordinator, "#hsa-search", "V")
    click(coordinator, "#hsa-search-button")
    wait(coordinator, "the short search refused in Swedish",
         lambda d: "minst två bokstäver" in d.find_element(By.ID, "hsa-results").text)
    type_into(coordinator, "#p-name", "Fel Id")
    type_into(coordinator, "#p-id", "12345")
    click(coordinator, "#register-submit")
    said = wait(coordinator, "the bad ID refused", lambda d: (lambda m: m.text if "error" in m.get_attribute("class")
                                                              else None)(d.find_element(By.ID, "meeting-message")))
    if "Kontrollera id:t" not in said or re.search(r"\b(is|not|the|must)\b", said):
        raise Failed(f"the refusal is not the Swedish sentence: {said!r}")
    coordinator.find_element(By.ID, "hsa-search").clear()


def correct_registration(coordinator) -> None:
    """Mona's organisation corrected in her registration."""
    wait(coordinator, "Mona's registration opened", lambda d: js(
        d, "const r = [...document.querySelectorAll('#participants tr[data-participant]')]"
           ".find(r => r.textContent.startsWith(arguments[0]));"
           "if (!r) return false; const e = r.querySelector('details.edit-registration'); e.open = true;"
           "return true;", MUNICIPALITY[1]))
    assert_accessible_form_controls(coordinator, "correcting a registration")
    wait(coordinator, "the correction saved", lambda d: js(
        d, "const r = [...document.querySelectorAll('#participants tr[data-participant]')]"
           ".find(r => r.textContent.startsWith(arguments[0]));"
           "if (!r) return false; const i = r.querySelector('input[id^=edit-org-]'); i.value = 'Hemtjänsten Väster';"
           "r.querySelector('button.save-registration').click(); return true;", MUNICIPALITY[1]))
    wait(coordinator, "the corrected organisation listed",
         lambda d: "Hemtjänsten Väster" in d.find_element(By.ID, "participants").text)


def summary_step(coordinator, staff) -> None:
    for _ in range(8):
        if coordinator.find_elements(By.ID, "summary"):
            break
        step = coordinator.find_element(By.ID, "agenda-step").text
        click(coordinator, "#agenda-next")
        wait(coordinator, "the next agenda step", lambda d, step=step: d.find_element(By.ID, "agenda-step").text != step)
    field = wait(coordinator, "the summary field at the summary step", lambda d: d.find_element(By.ID, "summary"))
    field.send_keys(SUMMARY)
    assert_accessible_form_controls(coordinator, "the summary step")
    click(coordinator, "#summary-save")
    # Rita (a delegate, so a co-lead) sees it in her own (untouched) field.
    wait(staff, "the summary shown to the co-lead", lambda d: SUMMARY in js(
        d, "const t = document.getElementById('summary-text'), f = document.getElementById('summary');"
           "return t ? t.textContent : f ? f.value : ''"))


def run(artifacts: Path) -> None:
    artifacts.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="svpl-browser-"))
    stack = Stack(work / "stack", extra_env={"SVPL_DEVELOPMENT_LOGIN": "true", "SVPL_SHUTDOWN_GRACE_SECONDS": "0.5"})
    drivers: list[webdriver.Chrome] = []
    started = time.monotonic()
    with evidence_and_cleanup(artifacts, ("coordinator", "staff", "municipality"), drivers, stack):
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            launching = [pool.submit(browser, work / f"profile-{i}", write_camera(work / f"camera-{i}.y4m", *CAMERAS[name]))
                         for i, name in enumerate(("Vera Samordnare", STAFF[1], MUNICIPALITY[1]))]
            stack.start(timeout=30)
            drivers.extend(f.result() for f in launching)
        base = f"http://{stack.procs['gateway'].address}"
        coordinator, staff, municipality = drivers
        print(f"stack and browsers up in {time.monotonic() - started:.1f}s", flush=True)

        # The coordinator books a SIP video meeting.
        dev_login(coordinator, base, COORDINATOR)
        click(coordinator, "#nav-book", "the booking link")
        wait(coordinator, "the booking options", lambda d: d.find_elements(By.CSS_SELECTOR, "#care-service option"))
        type_into(coordinator, "#patient-name", "Tolvan Tolvansson")
        type_into(coordinator, "#patient", PATIENT)
        type_into(coordinator, "#unit", UNIT)
        type_into(coordinator, "#party-name", "Hemtjänsten Väster")
        Select(coordinator.find_element(By.ID, "party-channel")).select_by_value("CHANNEL_PHONE")
        type_into(coordinator, "#party-address", "036-10 10 10")
        assert_accessible_form_controls(coordinator, "booking form")
        click(coordinator, "#book-submit")
        meeting_id = wait(coordinator, "the new meeting's page",
                          lambda d: (re.search(r"#/meeting/([A-Za-z0-9_.:-]+)$", d.current_url) or [None, None])[1])
        wait(coordinator, "the invitation status", lambda d: "Hemtjänsten Väster" in d.find_element(By.ID, "invitations").text)
        dial_in = coordinator_tasks_before_the_meeting(coordinator, meeting_id, artifacts)

        assert_accessible_form_controls(coordinator, "meeting page")
        refusals_in_swedish(coordinator)
        # ... registers two participants (staff found in the HSA directory) ...
        for hsa_id, name in (STAFF, MUNICIPALITY):
            type_into(coordinator, "#hsa-search", name.split()[0])
            click(coordinator, "#hsa-search-button")
            click(coordinator, "#hsa-results button", f"{name} in the directory search")
            wait(coordinator, "the form filled from the directory",
                 lambda d, hsa_id=hsa_id: d.find_element(By.ID, "p-id").get_attribute("value") == hsa_id)
            click(coordinator, "#register-submit")
            wait(coordinator, f"{name} registered",
                 lambda d, name=name: name in d.find_element(By.ID, "participants").text)
            # The earlier refusal is gone: the message now says the registration worked.
            wait(coordinator, "the refusal cleared", lambda d: "är registrerad" in d.find_element(By.ID, "meeting-message").text)

        # ... marks who is physically present with the patient, delegates the role to Rita ...
        presence_and_delegation(coordinator)
        correct_registration(coordinator)
        # ... a participant who tries to join before the start is told so and may try again ...
        dev_login(staff, base, STAFF[0])
        # (Rita cannot reach the meeting service from her ward and asks for a rebooking, by the dial-in ID.)
        staff.get(f"{base}/portal/#/report")
        type_into(staff, "#problem-meeting", dial_in)
        type_into(staff, "#problem-text", "Når inte mötestjänsten från avdelningen")
        click(staff, "#problem-rebook")
        click(staff, "#report-submit")
        wait(staff, "the rebook request sent", lambda d: d.find_element(By.ID, "report-queue").text)
        staff.get(f"{base}/portal/#/room/{meeting_id}")
        click(staff, "#join")
        early = wait(staff, "the not-started refusal", lambda d: (lambda o: o[1] if o[0] == "unavailable" else None)(
            outcome(d)))
        if "inte startat" not in early or staff.find_element(By.ID, "join").text != "Försök igen":
            raise Failed(f"joining before the start says {early!r}, button {staff.find_element(By.ID, 'join').text!r}")
        assert_accessible_form_controls(staff, "the room before the start (refused)")
        # ... starting without a confidentiality assessment asks first, saying why it matters ...
        click(coordinator, "#start-meeting")
        asked = wait(coordinator, "the question before starting without an assessment", lambda d: next(
            (e.text for e in d.find_elements(By.CSS_SELECTOR, "dialog#confirm-dialog[open]") if e.is_displayed()), None))
        if "sekretessprövning" not in asked or "vårdgivare" not in asked:
            raise Failed(f"the question does not say why the assessment matters: {asked!r}")
        assert_accessible_form_controls(coordinator, "the question before starting without an assessment")
        click(coordinator, "#confirm-no")
        wait(coordinator, "the meeting not started", lambda d: d.find_element(By.ID, "meeting-state").text == "Planerat"
             and not d.find_elements(By.CSS_SELECTOR, "dialog[open]"))
        # ... sees Rita's rebook request on the meeting page and marks it handled ...
        coordinator.refresh()
        wait(coordinator, "Rita's rebook request", lambda d: STAFF[1] in d.find_element(By.ID, "rebook-requests").text)
        type_into(coordinator, "#rebook-requests li.rebook input", "Ingen ombokning: Rita ansluter från expeditionen")
        assert_accessible_form_controls(coordinator, "a rebook request")
        click(coordinator, "#rebook-requests button.resolve-rebook")
        wait(coordinator, "the rebook request handled",
             lambda d: "Hanterat" in d.find_element(By.CSS_SELECTOR, "#rebook-requests li.rebook.handled").text)
        # ... records the confidentiality assessment, listed with who, for whom, when and the note ...
        type_into(coordinator, "#assessment-provider", "Region Jönköpings län")
        type_into(coordinator, "#assessment-note", "Samtycke till samverkan finns")
        click(coordinator, "#assessment-form button[type=submit]")
        wait(coordinator, "the assessment listed", lambda d: "Region Jönköpings län" in d.find_element(By.ID, "assessments").text
             and "Vera Samordnare" in d.find_element(By.ID, "assessments").text)

        # ... starts it and joins.
        click(coordinator, "#start-meeting")
        wait(coordinator, "the meeting live", lambda d: d.find_element(By.ID, "meeting-state").text == "Pågår")
        click(coordinator, "#go-room")
        click(coordinator, "#gear", "the settings (gear) control")
        wait(coordinator, "a camera to choose", lambda d: d.find_elements(By.CSS_SELECTOR, "#camera option"))
        wait(coordinator, "the self-view playing", lambda d: js(d, "const v = document.getElementById('self-view');"
                                                                    "return v && v.videoWidth > 0"))
        click(coordinator, "#join")

        # The two participants join: Rita tries again on the same page; Mona logs in and joins.
        print(f"coordinator joined at {time.monotonic() - started:.1f}s", flush=True)
        click(staff, "#join", "Försök igen")
        dev_login(municipality, base, MUNICIPALITY[0])
        wait(municipality, "the meeting in their list", lambda d: meeting_id in d.find_element(By.ID, "meetings")
             .get_attribute("innerHTML"))
        assert_accessible_form_controls(municipality, "meeting list")
        municipality.get(f"{base}/portal/#/room/{meeting_id}")
        click(municipality, "#join")

        # Every page shows the other two's video playing, and 3 connected with the right names.
        everyone = sorted(["Vera Samordnare", STAFF[1], MUNICIPALITY[1]])
        print(f"participants joined at {time.monotonic() - started:.1f}s", flush=True)
        for driver, who in ((coordinator, "coordinator"), (staff, STAFF[1]), (municipality, MUNICIPALITY[1])):
            wait_for_others_playing(driver, who)
            print(f"{who} sees the others at {time.monotonic() - started:.1f}s", flush=True)
            wait_for_people(driver, who, everyone)
            wait_for_named_tiles(driver, who, [n for n in everyone if n != {"coordinator": "Vera Samordnare"}.get(who, who)])
        wait(coordinator, "the roster panel", lambda d: MUNICIPALITY[1] in d.find_element(By.ID, "roster-connected").text)
        coordinator.save_screenshot(str(artifacts / "coordinator-meeting.png"))
        if "Tolvan Tolvansson" not in coordinator.title:
            raise Failed(f"the room's title does not name the meeting: {coordinator.title!r}")
        room_controls(coordinator, staff)
        assert_accessible_form_controls(coordinator, "meeting room")
        assert_accessible_form_controls(staff, "meeting room (participant)")
        # Rita is physically present with the patient: the roster shows it, and it changes here.
        wait(coordinator, "the presence in the roster", lambda d: d.find_element(
            By.CSS_SELECTOR, '#roster-connected li[data-present="true"]').text.startswith(STAFF[1]))
        present = "return document.getElementById('people-present').textContent"
        wait(municipality, "Rita with the patient in the people panel", lambda d: STAFF[1] in js(d, present))
        # It changes during the meeting: the coordinator unticks it in the room; everyone's panel follows.
        click(coordinator, '#roster-connected li[data-present="true"] input.presence', "Rita's presence")
        wait(municipality, "nobody with the patient in the people panel", lambda d: js(d, present) == "")
        print(f"meeting running with 3 in {time.monotonic() - started:.1f}s", flush=True)

        # A phone dial-in nobody identified (as media reports it): highlighted for the coordinator, removed.
        report_phone_connection(stack, meeting_id)
        wait(coordinator, "the unidentified connection highlighted",
             lambda d: d.find_elements(By.CSS_SELECTOR, "#roster-connected li.unidentified"))
        coordinator.save_screenshot(str(artifacts / "coordinator-unidentified.png"))
        click(coordinator, '#roster-connected li.unidentified button.remove', "remove the unidentified connection")
        confirm(coordinator, "removing the caller", "Ta bort oidentifierad anslutning")
        wait(coordinator, "the unidentified connection gone",
             lambda d: not d.find_elements(By.CSS_SELECTOR, "#roster-connected li.unidentified"))

        # The coordinator leads the agenda: every page follows the current step. The routine's opening
        # steps come first (sight and sound, then a private place and no recording), then the welcome.
        for step, what, said in (("Ser och hör alla varandra?", "the sight-and-sound step", "ser och hör alla varandra"),
                                 ("spelas inte in", "the private-place step", "inte får spelas in"),
                                 ("välkomna", "the welcome step", "välkomna")):
            click(coordinator, "#agenda-next", "the next agenda step button")
            for driver, who in ((coordinator, "coordinator"), (staff, STAFF[1]), (municipality, MUNICIPALITY[1])):
                wait(driver, f"{who} sees {what}", lambda d, step=step: step in d.find_element(By.ID, "agenda-step").text)
            guidance = wait(coordinator, f"the guidance at {what}", lambda d: d.find_element(By.ID, "agenda-guidance").text)
            if said not in guidance:
                raise Failed(f"{what} does not say {said!r}: {guidance!r}")
        if coordinator.find_elements(By.ID, "summary"):
            raise Failed("the summary field is shown before the summary step")

        # The coordinator removes one: their page says so and their rejoin is refused.
        click(coordinator, f'#roster-connected li[data-participant] button.remove[aria-label="Ta bort {MUNICIPALITY[1]}"]',
              "the remove button")
        confirm(coordinator, "removing a participant", f"Ta bort {MUNICIPALITY[1]}")
        wait(municipality, "the removed participant told", lambda d: outcome(d)[0] == "removed")
        click(municipality, "#rejoin")
        refused = wait(municipality, "the rejoin refused", lambda d: outcome(d)[0] == "refused" and outcome(d)[1])
        if "tagits bort" not in refused:
            raise Failed(f"the refusal does not say the person was removed: {refused!r}")
        wait_for_people(coordinator, "coordinator after the removal", sorted(["Vera Samordnare", STAFF[1]]))
        wait_for_people(staff, STAFF[1] + " after the removal", sorted(["Vera Samordnare", STAFF[1]]))
        wait_for_named_tiles(staff, STAFF[1] + " after the removal", ["Vera Samordnare"])
        wait_for_named_tiles(coordinator, "coordinator after the removal", [STAFF[1]])
        coordinator.save_screenshot(str(artifacts / "coordinator-after-removal.png"))

        # A second caller is identified as the patient (registered, not connected).
        report_phone_connection(stack, meeting_id, "phone-2")
        click(coordinator, "#roster-connected li.unidentified button.identify", "identify the caller")
        wait(coordinator, "the caller identified as the patient",
             lambda d: "Tolvan" in d.find_element(By.ID, "roster-connected").text
             and not d.find_elements(By.CSS_SELECTOR, "#roster-connected li.unidentified"))
        # The agenda reaches its summary: written by the coordinator, read by everyone.
        summary_step(coordinator, staff)

        # The coordinator leaves and ends the meeting: every page shows it ended; rejoin is refused.
        click(coordinator, "#leave", "the red leave button")
        confirm(coordinator, "ending the meeting", "Lämna och avsluta mötet")
        for driver, who in ((coordinator, "coordinator"), (staff, STAFF[1])):
            wait(driver, f"{who} sees the meeting ended", lambda d: outcome(d)[0] == "ended")
        coordinator.save_screenshot(str(artifacts / "coordinator-ended.png"))
        for driver, who in ((coordinator, "coordinator"), (staff, STAFF[1])):
            wait(driver, f"{who}'s leave button and person icon gone", lambda d: not any(
                e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, "#leave, #people-button")))
        for driver, who in ((staff, STAFF[1]), (coordinator, "coordinator")):
            click(driver, "#rejoin")
            text = wait(driver, f"{who}'s rejoin refused", lambda d: outcome(d)[0] == "refused" and outcome(d)[1])
            if "avslutat" not in text:
                raise Failed(f"{who}'s refusal does not say the meeting ended: {text!r}")
        assert_accessible_form_controls(coordinator, "the room after the end")
        # The meeting page keeps the summary.
        coordinator.get(f"{base}/portal/#/meeting/{meeting_id}")
        wait(coordinator, "the summary on the meeting page",
             lambda d: SUMMARY in d.find_element(By.ID, "meeting-summary").text)
        assert_accessible_form_controls(coordinator, "the meeting page after the end")

        # A participant reports a problem and is told where the report went.
        # ... giving the meeting ID they see: the dial-in ID.
        staff.get(f"{base}/portal/#/report")
        type_into(staff, "#problem-meeting", dial_in)
        type_into(staff, "#problem-text", "Bilden frös under mötet")
        assert_accessible_form_controls(staff, "the report form")
        click(staff, "#report-submit")
        queue = wait(staff, "where the report went", lambda d: d.find_element(By.ID, "report-queue").text)
        assert_accessible_form_controls(staff, "the report sent")
        print(f"report went to: {queue}", flush=True)
        if staff.find_element(By.ID, "report-meeting").get_attribute("data-meeting") != meeting_id:
            raise Failed("the report's dial-in meeting ID was not taken as the meeting")

        # The test room: the person's own picture comes back from the media service.
        staff.get(f"{base}/portal/#/test")
        click(staff, "#test-start")
        wait(staff, "the echo playing", lambda d: int(js(d, "return Number(document.getElementById('test-echo')"
                                                             ".dataset.frames || 0)")) > 10, 30)
        test_room_hears_and_measures(staff)
        assert_accessible_form_controls(staff, "the test room")
        # The next of kin logs in from the demo list with 1177 e-services (the only method the routine allows them).
        dev_login(municipality, base, "198112289874")
        method = js(municipality, "return fetch('/api/v1/session').then(r => r.json()).then(s => s.method)")
        if method != "e_services_1177":
            raise Failed(f"the next of kin logged in with {method!r}, not 1177")
        for driver, who in ((coordinator, "coordinator"), (staff, STAFF[1]), (municipality, MUNICIPALITY[1])):
            assert_no_console_errors(driver, who)
        print(f"scenario passed in {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("SE_OFFLINE", "true")
    run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("test-artifacts/gateway"))
