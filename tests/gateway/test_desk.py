"""The support desk through the gateway (the real services, the demo directory's people): what a
desk member and a reporter do, and what a person with a valid login may not (another
municipality's desk, a reporter trying desk actions), and the public report's attackers (a flood
from one address, script in the free text, a report trying to attach a meeting's evidence)."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.app import create_app
from tests.gateway.conftest import MUNICIPALITY_STAFF, Browser, gateway_settings

DESK_JONKOPING = "SE2120000829-4002"  # Kim Kommunit, Jönköpings kommun's IT
DESK_VARNAMO = "SE2120000597-4003"  # Berit Värnamoit, Värnamo kommun's IT
DESK_REGION, DESK_REGION_2 = "SE2321000057-4001", "SE2321000057-4002"  # Sam and Siv Support
PUBLIC = {"reporter_kind": "REPORTER_KIND_REGION_STAFF", "name": "Rut Ny", "contact": "070-123 45 67",
          "problem": "PROBLEM_KIND_NETWORK_PASSWORD", "description": "Lösenordet efter SITHS-kortet fungerar inte"}


async def _logged_in(new_browser, person_id: str) -> Browser:
    browser = new_browser()
    await browser.login(person_id)
    return browser


async def _nurse_report(nurse: Browser, description: str = "Når inte mötestjänsten fast nätet är bra") -> dict:
    response = await nurse.post("/api/v1/support/reports", json={"problem": "PROBLEM_KIND_TECHNICAL",
                                                                  "description": description})
    assert response.status_code == 200, response.text
    return response.json()["ticket"]


async def test_the_municipality_desk_works_its_nurses_report_and_the_region_closes_it(gateway):
    app, system, new_browser = gateway
    nurse = await _logged_in(new_browser, MUNICIPALITY_STAFF)
    kim, sam = await _logged_in(new_browser, DESK_JONKOPING), await _logged_in(new_browser, DESK_REGION)
    ticket = await _nurse_report(nurse)
    tid = ticket["ticket_id"]
    assert ticket["routing"]["queue"]["queue_id"] == "kommunens_it" and len(ticket["number"]) == 9

    queue = (await kim.get("/api/v1/desk/tickets", params={"state": "TICKET_STATE_NEW"})).json()["tickets"]
    assert tid in {t["ticket_id"] for t in queue}
    taken = await kim.post(f"/api/v1/desk/tickets/{tid}/take")
    assert taken.status_code == 200 and taken.json()["ticket"]["assignee_name"] == "Kim Kommunit"
    assert (await kim.post(f"/api/v1/desk/tickets/{tid}/comments", json={"text": "Vi kollar nätet"})).status_code == 200
    assert (await kim.post(f"/api/v1/desk/tickets/{tid}/comments",
                           json={"text": "Switchen i hus B", "internal": True})).status_code == 200
    escalated = await kim.post(f"/api/v1/desk/tickets/{tid}/escalation", json={"reason": "Kommunens nät fungerar"})
    assert escalated.json()["ticket"]["routing"]["queue"]["queue_id"] == "region_it_teknik"

    oldest = (await sam.get("/api/v1/desk/tickets", params={"order": "oldest",
                                                            "problem": "PROBLEM_KIND_TECHNICAL"})).json()["tickets"]
    assert tid in {t["ticket_id"] for t in oldest}
    closed = await sam.post(f"/api/v1/desk/tickets/{tid}/close", json={"resolution": "Brandväggsregel rättad"})
    assert closed.status_code == 200 and closed.json()["ticket"]["state"] == "TICKET_STATE_CLOSED"

    mine = (await nurse.get("/api/v1/support/my-reports")).json()["tickets"]
    own = next(t for t in mine if t["ticket_id"] == tid)
    assert own["state"] == "TICKET_STATE_CLOSED"
    texts = [h.get("text", "") for h in own["history"]]
    assert "Vi kollar nätet" in texts and "Switchen i hus B" not in texts  # the internal note is the desk's own


async def test_another_municipalitys_desk_and_the_reporter_cannot_work_the_ticket(gateway):
    app, system, new_browser = gateway
    nurse = await _logged_in(new_browser, MUNICIPALITY_STAFF)
    berit, kim = await _logged_in(new_browser, DESK_VARNAMO), await _logged_in(new_browser, DESK_JONKOPING)
    ticket = await _nurse_report(nurse)
    tid, number = ticket["ticket_id"], ticket["number"]

    listed = (await berit.get("/api/v1/desk/tickets")).json()["tickets"]
    assert tid not in {t["ticket_id"] for t in listed}
    assert (await berit.get("/api/v1/desk/tickets", params={"number": number})).json().get("tickets", []) == []
    for method, path, body in (
        ("GET", "", None), ("POST", "/take", None), ("POST", "/comments", {"text": "Hej från Värnamo"}),
        ("POST", "/state", {"state": "TICKET_STATE_WAITING"}), ("POST", "/escalation", {"reason": "x"}),
        ("POST", "/close", {"resolution": "x"}),
    ):
        url = f"/api/v1/desk/tickets/{tid}{path}"
        response = await (berit.get(url) if method == "GET" else berit.post(url, json=body))
        assert response.status_code == 403, (path, response.text)
        assert response.json()["reason"] == "NOT_YOUR_QUEUE"
    # The reporter reads and comments on her own ticket, but does no desk work.
    for path, body in (("/take", None), ("/state", {"state": "TICKET_STATE_RESOLVED"}),
                       ("/escalation", {"reason": "x"}), ("/close", {"resolution": "klart"})):
        response = await nurse.post(f"/api/v1/desk/tickets/{tid}{path}", json=body)
        assert response.status_code == 403, (path, response.text)
    assert (await nurse.get("/api/v1/desk/tickets")).status_code == 403
    internal = await nurse.post(f"/api/v1/desk/tickets/{tid}/comments", json={"text": "x", "internal": True})
    assert internal.status_code == 400 and internal.json()["errors"][0]["field"] == "internal"
    # Nothing changed, and a second desk member's take is a clear Swedish 409.
    after = (await kim.get(f"/api/v1/desk/tickets/{tid}")).json()["ticket"]
    assert [h["action"] for h in after["history"]] == ["filed"] and after["state"] == "TICKET_STATE_NEW"


async def test_the_second_desk_member_to_take_a_ticket_gets_a_409(gateway):
    app, system, new_browser = gateway
    region_staff = await _logged_in(new_browser, "SE2321000057-2001")
    sam, siv = await _logged_in(new_browser, DESK_REGION), await _logged_in(new_browser, DESK_REGION_2)
    tid = (await _nurse_report(region_staff))["ticket_id"]
    first, second = await asyncio.gather(sam.post(f"/api/v1/desk/tickets/{tid}/take"),
                                         siv.post(f"/api/v1/desk/tickets/{tid}/take"))
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    lost = second if second.status_code == 409 else first
    assert lost.json()["reason"] == "ALREADY_TAKEN" and "redan tagits av" in lost.json()["detail"]


async def test_a_public_report_gets_a_short_number_and_the_phone_number_without_a_login(gateway):
    app, system, new_browser = gateway
    anonymous, sam = new_browser(), await _logged_in(new_browser, DESK_REGION)
    contacts = (await anonymous.get("/api/v1/public/support")).json()
    assert "Jönköpings kommun" in contacts["organizations"]
    response = await anonymous.post("/api/v1/public/reports", json=PUBLIC)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"number", "queue"}  # no ticket id, nothing to look anything up with
    assert answer["queue"]["phone"] == "010 241 41 50" and answer["queue"]["phone_option"] == "1"
    found = (await sam.get("/api/v1/desk/tickets", params={"number": answer["number"]})).json()["tickets"]
    assert [t["public_report"] for t in found] == [True]


@pytest.mark.parametrize("extra", [{"meeting_id": "m-1"}, {"participant_id": "p-1"}, {"request_rebook": True},
                                   {"evidence": {"meeting_id": "m-1"}}])
async def test_a_public_report_cannot_attach_a_meeting_or_a_rebook_request(gateway, extra):
    app, system, new_browser = gateway
    sam = await _logged_in(new_browser, DESK_REGION)
    before = len((await sam.get("/api/v1/desk/tickets")).json().get("tickets", []))
    response = await new_browser().post("/api/v1/public/reports", json={**PUBLIC, **extra})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == next(iter(extra))
    assert len((await sam.get("/api/v1/desk/tickets")).json().get("tickets", [])) == before


async def test_a_flood_of_public_reports_from_one_address_is_refused(gateway):
    _, system, _ = gateway
    app = create_app(gateway_settings(system, public_report_rate_per_hour=3, trusted_proxies=["10.0.0.1"]))
    flooder, other = Browser(app, "203.0.113.9"), Browser(app, "198.51.100.7")
    try:
        codes = [(await flooder.post("/api/v1/public/reports", json=PUBLIC)).status_code for _ in range(3)]
        assert codes == [200] * 3
        refused = await flooder.post("/api/v1/public/reports", json=PUBLIC)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert refused.json()["reason"] == "TOO_MANY_REPORTS"
        # A forwarded-for header from a peer that is no trusted proxy changes nothing.
        spoofed = await flooder.post("/api/v1/public/reports", json=PUBLIC, headers={"x-forwarded-for": "192.0.2.1"})
        assert spoofed.status_code == 429
        assert (await other.post("/api/v1/public/reports", json=PUBLIC)).status_code == 200
    finally:
        for browser in (flooder, other):
            await browser.close()
        await app.state.backends.close()


async def test_free_text_is_stored_and_answered_as_text_never_markup(gateway):
    app, system, new_browser = gateway
    sam = await _logged_in(new_browser, DESK_REGION)
    script = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    answer = (await new_browser().post("/api/v1/public/reports", json={**PUBLIC, "name": "Eve <b>", "description": script})
              ).json()
    response = await sam.get("/api/v1/desk/tickets", params={"number": answer["number"]})
    assert response.headers["content-type"].startswith("application/json")
    assert "nosniff" in response.headers["x-content-type-options"]
    ticket = response.json()["tickets"][0]
    assert (ticket["description"], ticket["reporter"]["name"]) == (script, "Eve <b>")
    too_long = await new_browser().post("/api/v1/public/reports", json={**PUBLIC, "description": "x" * 4001})
    assert too_long.status_code == 400 and too_long.json()["errors"][0]["field"] == "description"
