"""The coordinator with a long list and a cancelled meeting, in two headless Chromium browsers
against the real system (every service as its own process).

The coordinator has more meetings and phone tasks than one page of the API holds (paging.DEFAULT_SIZE):
the meeting list, the meeting page's phone tasks and the report form's dial-in ID lookup page through
all of them, so a meeting on the second page is listed, its phone task shown and its dial-in ID found.
Then "Avboka mötet" asks first, the meeting page says the meeting is cancelled, and the registered
participant's join is refused. Rita, a participant with a valid login, cannot cancel it or read the
coordinator's phone tasks.

`python -m tests.gateway.cancel_scenario <artifacts dir>`; exit status 0 = passed (test_browser.py
runs it in a private network namespace like the other scenarios).
"""

from __future__ import annotations

import concurrent.futures
import sys
import tempfile
import time
from pathlib import Path

from selenium.webdriver.common.by import By

from devstack.stack import Stack
from services.runtime import paging
from tests.gateway.browser_scenario import (
    COORDINATOR,
    STAFF,
    UNIT,
    Failed,
    assert_accessible_form_controls,
    assert_no_console_errors,
    browser,
    click,
    confirm,
    dev_login,
    evidence_and_cleanup,
    js,
    outcome,
    type_into,
    wait,
)

# One more than a page: the last booking (the latest start, the last phone task) is on the second page.
EARLIER = paging.DEFAULT_SIZE
PATIENT = "191212121212"

# Books through the coordinator's own session (the portal's SVPL.api: the same requests the booking
# form makes), `count` meetings an hour and a half apart from `first_hour` hours on, each with a party
# to call; answers [booking_id, ...] or the first error.
BOOK = """
const [count, firstHour, unit, patient, partyName, done] = arguments;
(async () => {
  const options = await SVPL.api("GET", "/booking-options");
  const ids = [];
  for (let i = 0; i < count; i++) {
    const start = new Date(Date.now() + (firstHour * 60 + i * 90) * 60e3);
    start.setSeconds(0, 0);
    const { booking } = await SVPL.api("POST", "/bookings", { idempotency_key: crypto.randomUUID(),
      patient_personnummer: patient, patient_name: "Tolvan Tolvansson", start: start.toISOString(),
      duration_minutes: 60, booking_unit_hsa_id: unit, care_service: options.video_care_service,
      contact_type: options.video_contact_type,
      parties: [{ kind: "PARTY_KIND_MUNICIPALITY_UNIT", name: partyName + (count > 1 ? " " + (i + 1) : ""),
                  channel: "CHANNEL_PHONE", address: "036-10 10 10" }] });
    ids.push(booking.booking_id);
  }
  return ids;
})().then(ids => done({ ids }), err => done({ error: String(err && (err.reason || err.status || err)) }));
"""

# The HTTP status of a request made with the person's own session (SVPL.api), 200 when it worked.
STATUS = """
const [method, path, body, done] = arguments;
SVPL.api(method, path, body).then(() => done(200), err => done(err.status || 0));
"""


def book(driver, count: int, first_hour: int, party: str) -> list[str]:
    driver.set_script_timeout(180)
    answer = driver.execute_async_script(BOOK, count, first_hour, UNIT, PATIENT, party)
    if "error" in answer:
        raise Failed(f"booking through the API refused: {answer['error']}")
    return answer["ids"]


def meeting_of(driver, booking_id: str) -> str:
    """The meeting the booking service created for the booking (it may do so in the background)."""
    return wait(driver, "the booking's meeting room", lambda d: d.execute_async_script(
        "const [id, done] = arguments; SVPL.api('GET', '/bookings/' + id)"
        ".then(r => done(r.booking.meeting_id || ''), () => done(''));", booking_id))


def status(driver, method: str, path: str, body: dict | None = None) -> int:
    return driver.execute_async_script(STATUS, method, path, body)


def run(artifacts: Path) -> None:
    artifacts.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="svpl-cancel-"))
    stack = Stack(work / "stack", extra_env={"SVPL_DEVELOPMENT_LOGIN": "true", "SVPL_SHUTDOWN_GRACE_SECONDS": "0.5"})
    drivers: list = []
    started = time.monotonic()
    with evidence_and_cleanup(artifacts, ("coordinator", "staff"), drivers, stack):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            launching = [pool.submit(browser, work / f"profile-{i}") for i in range(2)]
            stack.start(timeout=30)
            drivers.extend(f.result() for f in launching)
        base = f"http://{stack.procs['gateway'].address}"
        coordinator, staff = drivers
        dev_login(coordinator, base, COORDINATOR)
        book(coordinator, EARLIER, 2, "Hemtjänsten Väster")
        (last,) = book(coordinator, 1, 24 * 60, "Hemtjänsten Öster")
        meeting_id = meeting_of(coordinator, last)
        print(f"{EARLIER + 1} meetings booked in {time.monotonic() - started:.1f}s", flush=True)

        # The meeting list shows every meeting, the second page's too.
        coordinator.get(f"{base}/portal/#/")
        wait(coordinator, "every meeting listed (both pages)", lambda d: len(d.find_elements(
            By.CSS_SELECTOR, "#meetings tbody a[href^='#/meeting/']")) == EARLIER + 1)
        coordinator.find_element(By.CSS_SELECTOR, f"#meetings a[href='#/meeting/{meeting_id}']")

        # Its meeting page lists its phone task, which is on the second page of the coordinator's tasks.
        coordinator.get(f"{base}/portal/#/meeting/{meeting_id}")
        wait(coordinator, "the phone task from the second page", lambda d: [e.text.split("\n")[0] for e in d.find_elements(
            By.CSS_SELECTOR, "#phone-tasks li.task strong")] == ["Hemtjänsten Öster (036-10 10 10)"])
        dial_in = wait(coordinator, "the dial-in ID", lambda d: d.find_element(By.ID, "dial-in").text)
        assert_accessible_form_controls(coordinator, "the meeting page with its phone task")
        type_into(coordinator, "#hsa-search", STAFF[1].split()[0])
        click(coordinator, "#hsa-search-button")
        click(coordinator, "#hsa-results button", f"{STAFF[1]} in the directory search")
        wait(coordinator, "the form filled from the directory",
             lambda d: d.find_element(By.ID, "p-id").get_attribute("value") == STAFF[0])
        click(coordinator, "#register-submit")
        wait(coordinator, "Rita registered", lambda d: STAFF[1] in d.find_element(By.ID, "participants").text)

        # A report by the dial-in ID the person sees, of the meeting on the second page.
        coordinator.get(f"{base}/portal/#/report")
        type_into(coordinator, "#problem-meeting", dial_in[:3] + " " + dial_in[3:])
        type_into(coordinator, "#problem-text", "Hemtjänsten Öster når inte mötestjänsten")
        click(coordinator, "#report-submit")
        wait(coordinator, "where the report went", lambda d: d.find_element(By.ID, "report-queue").text)
        if coordinator.find_element(By.ID, "report-meeting").get_attribute("data-meeting") != meeting_id:
            raise Failed("the dial-in ID of a meeting on the second page was not taken as that meeting")

        # Rita, registered and logged in, may neither cancel the booking nor see the coordinator's calls.
        dev_login(staff, base, STAFF[0])
        refused = status(staff, "POST", f"/bookings/{last}/cancel", {"reason": "Rita försöker"})
        if refused not in (403, 404):
            raise Failed(f"a participant's cancellation answered {refused}, not 403/404")
        tasks = staff.execute_async_script("const done = arguments[0]; SVPL.api('GET', '/phone-tasks?include_done=true')"
                                           ".then(r => done(r.tasks.length), e => done(-e.status));")
        if tasks not in (0, -403):
            raise Failed(f"a participant's phone-task list answered {tasks}")

        # "Avboka mötet" asks first; then the meeting page says it is cancelled.
        coordinator.get(f"{base}/portal/#/meeting/{meeting_id}")
        click(coordinator, "#cancel-booking", "Avboka mötet")
        confirm(coordinator, "cancelling the booking", "Avboka mötet?")
        wait(coordinator, "the meeting page saying cancelled", lambda d: d.find_element(By.ID, "meeting-state").text
             == "Inställt" and not d.find_elements(By.ID, "cancel-booking"))
        coordinator.save_screenshot(str(artifacts / "coordinator-cancelled.png"))
        assert_accessible_form_controls(coordinator, "the cancelled meeting's page")

        # Rita's join is refused, in Swedish.
        staff.get(f"{base}/portal/#/room/{meeting_id}")
        click(staff, "#join")
        said = wait(staff, "the join refused", lambda d: outcome(d)[0] == "refused" and outcome(d)[1])
        if "inställt" not in said:
            raise Failed(f"joining a cancelled meeting says {said!r}")
        assert_accessible_form_controls(staff, "the room of a cancelled meeting")
        for driver, who in ((coordinator, "coordinator"), (staff, STAFF[1])):
            assert_no_console_errors(driver, who)
        if js(coordinator, "return document.title").find("SIP-möte") < 0:
            raise Failed("the cancelled meeting's page title does not name the meeting")
        print(f"scenario passed in {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("test-artifacts/gateway-cancel"))
