"""The support desk in headless Chromium against the real gateway and services: a municipality
nurse reports a fault; her municipality's IT desk sees it arrive live, takes it, comments and
escalates it; another municipality's desk never sees it; the region's IT desk sees it with its
history and closes it; the nurse sees the state change. And a person who cannot log in reports
from the public page and gets a short ticket number and the right phone number.

No media here, so no network namespace: the browsers talk to the gateway on loopback. Selenium
is synchronous, so the scenario runs in a thread while the event loop serves the gateway."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.gateway.conftest import MUNICIPALITY_STAFF

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "desk"
DESK_JONKOPING, DESK_VARNAMO, DESK_REGION = "SE2120000829-4002", "SE2120000597-4003", "SE2321000057-4001"
INJECTED = '<img src=x onerror="document.body.dataset.pwned=1">Skrivaren <b>och</b> mötet'
NUMBER = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")


def scenario(base: str, profiles: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.gateway.browser_scenario import (
        Failed,
        assert_accessible_form_controls,
        assert_no_console_errors,
        browser,
        click,
        js,
        quit_quietly,
        save_failure_evidence,
        type_into,
        wait,
    )

    drivers: dict[str, object] = {}
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # only this run's screenshots count
    ARTIFACTS.mkdir(parents=True)

    def open_browser(name: str):
        drivers[name] = browser(profiles / name)
        return drivers[name]

    def login(driver, person_id: str, lands_on: str) -> None:
        driver.get(f"{base}/auth/rjl/login")
        click(driver, f'button.dev-login[data-person="{person_id}"]', f"the development login for {person_id}")
        wait(driver, f"{person_id} lands on {lands_on}",
             lambda d: lands_on in d.current_url and d.find_element(By.ID, "whoami").text)

    def queue_ids(driver) -> list[str]:
        return js(driver, "return [...document.querySelectorAll('#tickets tbody tr[data-ticket]')]"
                          ".map(r => r.dataset.ticket)")

    def history_actions(driver) -> list[str]:
        return js(driver, "return [...document.querySelectorAll('#history li')].map(li => li.dataset.action)")

    def said(driver, element_id: str) -> str:
        return js(driver, f"const m = document.getElementById('{element_id}'); return m && !m.hidden ? m.textContent : ''")

    try:
        kim = open_browser("kim")
        login(kim, DESK_JONKOPING, "/desk/")  # a desk member starts on the desk, not on an empty "Mina möten"
        wait(kim, "Kim's queue to follow changes live",
             lambda d: js(d, "const s = document.getElementById('live-status'); return s && s.dataset.live === 'yes'"))
        assert_accessible_form_controls(kim, "the desk's queue")
        berit = open_browser("berit")
        login(berit, DESK_VARNAMO, "/desk/")
        wait(berit, "Berit's queue", lambda d: js(d, "return document.getElementById('tickets')?.dataset.loaded"))

        nurse = open_browser("nurse")
        login(nurse, MUNICIPALITY_STAFF, "/portal/")
        nurse.get(f"{base}/portal/#/report")
        Select(wait(nurse, "the report form", lambda d: d.find_element(By.ID, "problem-kind"))).select_by_value(
            "PROBLEM_KIND_TECHNICAL")
        type_into(nurse, "#problem-text", INJECTED)
        click(nurse, "#report-submit")
        number = wait(nurse, "the report's ticket number", lambda d: d.find_element(By.ID, "report-number").text)
        if not NUMBER.match(number):
            raise Failed(f"the ticket number {number!r} is not short and readable")

        # Kim's open queue shows it without a reload.
        # (Read in the page, in one go: the live queue replaces its rows whenever a ticket changes.)
        ticket_id = wait(kim, "the nurse's report in Kim's queue, live", lambda d: js(
            d, "return [...document.querySelectorAll('#tickets tbody tr[data-ticket]')]"
               ".find(r => r.querySelector('.number-cell').textContent === arguments[0])?.dataset.ticket", number))
        click(kim, f'#tickets tr[data-ticket="{ticket_id}"] a', "open the ticket")
        description = wait(kim, "the ticket's description", lambda d: js(
            d, "return document.getElementById('ticket-description')?.textContent"))
        if description != INJECTED or js(kim, "return document.querySelectorAll('#ticket-description *').length"):
            raise Failed("the report's free text was not shown as plain text")
        assert_accessible_form_controls(kim, "the desk's ticket page")
        click(kim, "#take", "take the ticket")
        wait(kim, "the ticket taken", lambda d: d.find_element(By.ID, "ticket-assignee").text == "Kim Kommunit")
        type_into(kim, "#comment-text", "Vi har kontrollerat kommunens nät")
        click(kim, "#comment-submit")
        wait(kim, "the comment in the history", lambda d: history_actions(d) == ["filed", "assigned", "commented"])
        type_into(kim, "#escalate-reason", "Kommunens nät och datorer fungerar")
        click(kim, "#escalate-submit")
        wait(kim, "the ticket escalated", lambda d: d.find_element(By.ID, "ticket-state").text == "Eskalerad")

        # Another municipality's desk never sees it: not in the queue, and not by its id.
        berit.refresh()
        wait(berit, "Berit's queue reloaded", lambda d: js(d, "return document.getElementById('tickets')?.dataset.loaded"))
        if ticket_id in queue_ids(berit):
            raise Failed("Värnamo's desk sees Jönköping's ticket")
        berit.get(f"{base}/desk/#/ticket/{ticket_id}")
        refusal = wait(berit, "Berit refused the ticket", lambda d: said(d, "ticket-message"))
        if refusal != "Ärendet ligger inte i en kö som du arbetar med.":
            raise Failed(f"Berit's refusal does not say why, in Swedish: {refusal!r}")

        # The nurse follows her reports; then the region's desk closes the ticket.
        nurse.get(f"{base}/desk/#/mine")
        wait(nurse, "the nurse's report in her list", lambda d: js(
            d, f"return document.querySelector('#my-reports li[data-ticket=\"{ticket_id}\"]')?.dataset.state")
            == "TICKET_STATE_ESCALATED")
        click(berit, "#logout")
        wait(berit, "Berit logged out", lambda d: "/auth/" in d.current_url)
        login(berit, DESK_REGION, "/desk/")
        sam = berit
        wait(sam, "the escalated ticket in the region's queue", lambda d: ticket_id in queue_ids(d))
        sam.get(f"{base}/desk/#/ticket/{ticket_id}")
        wait(sam, "the whole history for the region's desk",
             lambda d: history_actions(d) == ["filed", "assigned", "commented", "escalated"])
        type_into(sam, "#close-resolution", "Brandväggsregeln för mötestjänsten rättad")
        click(sam, "#close-submit")
        wait(sam, "the ticket closed", lambda d: d.find_element(By.ID, "ticket-state").text == "Stängd")
        sam.save_screenshot(str(ARTIFACTS / "region-desk-closed.png"))
        # What the desk reads is for people: said once, in Swedish, no internal routing rule ids.
        page = sam.find_element(By.ID, "main").text
        if page.count("Ärendet är stängt.") != 1 or "Regel " in page or "MEETING_STATE_" in page:
            raise Failed(f"the closed ticket's page repeats itself or shows internal codes: {page!r}")
        wait(nurse, "the nurse sees the ticket closed (live)", lambda d: js(
            d, f"return document.querySelector('#my-reports li[data-ticket=\"{ticket_id}\"]')?.dataset.state")
            == "TICKET_STATE_CLOSED")
        for name, driver in drivers.items():
            assert_no_console_errors(driver, name)
            if js(driver, "return document.body.dataset.pwned"):
                raise Failed(f"script in a report ran in {name}'s browser")

        # Someone who cannot log in: the public page, from the login page.
        click(kim, "#logout")
        wait(kim, "Kim logged out", lambda d: "/auth/" in d.current_url)
        click(kim, "#public-report-link", "the login page's link to the public report")
        Select(wait(kim, "the public form", lambda d: d.find_element(By.ID, "reporter-kind"))).select_by_value(
            "REPORTER_KIND_REGION_STAFF")
        wait(kim, "the contacts table", lambda d: d.find_elements(By.CSS_SELECTOR, "#contacts tbody tr"))
        Select(kim.find_element(By.ID, "problem")).select_by_value("PROBLEM_KIND_NETWORK_PASSWORD")
        type_into(kim, "#name", "Rut Ny")
        type_into(kim, "#contact", "070-123 45 67")
        type_into(kim, "#description", "Lösenordet efter SITHS-kortet fungerar inte")
        assert_accessible_form_controls(kim, "the public report page")
        click(kim, "#report-submit")
        public_number = wait(kim, "the public report's number", lambda d: d.find_element(By.ID, "ticket-number").text)
        if not NUMBER.match(public_number):
            raise Failed(f"the public ticket number {public_number!r} is not short and readable")
        kim.save_screenshot(str(ARTIFACTS / "public-report-answer.png"))
        contact = kim.find_element(By.ID, "result-contact").text
        if contact != "Ring 010 241 41 50, val 1 (Teknik)":
            raise Failed(f"the public reporter was told {contact!r}")
        assert_no_console_errors(kim, "the public reporter")
    except BaseException:
        save_failure_evidence(ARTIFACTS, list(drivers.items()), None)
        raise
    finally:
        for driver in drivers.values():
            quit_quietly(driver)


@pytest.mark.slow
async def test_a_report_through_two_desks_in_browsers(served, monkeypatch):
    for tool in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        assert shutil.which(tool), f"{tool} is needed (make system-deps)"
    monkeypatch.setenv("SE_OFFLINE", "true")
    address, _app, _system, _new_browser = served
    with tempfile.TemporaryDirectory() as profiles:
        await asyncio.to_thread(scenario, f"http://{address}", Path(profiles))
