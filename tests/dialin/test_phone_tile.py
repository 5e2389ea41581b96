"""The portal's view of a phone caller: Debian's SIPp dials in, the coordinator lets the caller in
as the patient through the gateway, and the WebRTC participants' tile list (what the portal's room
renders) and people list name the patient as on the phone: an audio slot only, no video."""

from __future__ import annotations

import pytest

from devstack.peers import Peer
from devstack.sipp import free_udp_port
from services.gateway.app import create_app
from tests.dialin.conftest import MEDIA_INSTANCE, dialin_settings
from tests.dialin.test_phone_caller import NUMBER, enter
from tests.gateway.conftest import ALL, Browser, gateway_settings
from tests.gateway.flow import live_meeting_with_staff
from tests.gateway.test_signalling import join
from tests.gateway.test_tiles import tiles_when
from tests.polling import poll


@pytest.fixture
async def phone_gateway(system_factory):
    """(system, new_browser, SIP address): every service, the dial-in service and the gateway."""
    sip_port = free_udp_port()
    system = await system_factory(ALL + ["dialin"], overrides={
        "identity": {"development_login": True}, "media": {"instance_id": MEDIA_INSTANCE},
        "dialin": dialin_settings(sip_port, 36000)})
    app = create_app(gateway_settings(system))
    browsers: list[Browser] = []

    def new_browser() -> Browser:
        browsers.append(Browser(app))
        return browsers[-1]

    yield system, new_browser, ("127.0.0.1", sip_port)
    for browser in browsers:
        await browser.close()
    await app.state.backends.close()


async def json_of(browser: Browser, path: str) -> dict:
    response = await browser.get(path)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
async def test_a_caller_let_in_shows_as_a_phone_tile_and_on_the_phone_in_the_people_list(phone_gateway, tmp_path):
    from devstack import sipp

    system, new_browser, sip_address = phone_gateway
    coordinator, staff = new_browser(), new_browser()
    meeting_id = await live_meeting_with_staff(coordinator, staff)
    meeting = (await json_of(coordinator, f"/api/v1/meetings/{meeting_id}"))["meeting"]
    patient = next(p for p in (await json_of(coordinator, f"/api/v1/meetings/{meeting_id}/participants"))["participants"]
                   if p["role"] == "PARTICIPANT_ROLE_PATIENT")
    peers = [Peer(slots=2), Peer(slots=2)]
    caller = None
    try:
        await join(coordinator, meeting_id, peers[0])
        await join(staff, meeting_id, peers[1])
        caller = await sipp.run(sipp.scenario(tmp_path / "tile.xml", NUMBER, enter(tmp_path, "tile",
                                                                                  meeting["dial_in_code"] + "##")),
                                sip_address, free_udp_port(), free_udp_port())

        async def lobby() -> list[dict]:
            return (await json_of(coordinator, f"/api/v1/meetings/{meeting_id}/reconciliation")).get(
                "connected_not_identified", [])

        waiting = await poll(lobby, timeout=20, what="the caller in the lobby")
        assert [c["label"] for c in waiting] == ["Telefon, slutar på …12"]
        # In the lobby nobody is on the phone in the room: no phone tile, no one listed as on the phone.
        assert not any(t.get("phone") for t in (await json_of(staff, f"/api/v1/meetings/{meeting_id}/tiles"))["tiles"])

        identified = await coordinator.post(f"/api/v1/meetings/{meeting_id}/identifications", json={
            "connection_id": waiting[0]["connection_id"], "participant_id": patient["participant_id"]})
        assert identified.status_code == 200, identified.text

        # Every video participant's tiles: the patient on the phone, by name, in an audio slot only.
        for browser, peer in zip((coordinator, staff), peers, strict=True):
            tiles = await tiles_when(browser, meeting_id, lambda t: any(x["phone"] for x in t),
                                     "the caller's phone tile")
            phone = [t for t in tiles if t["participant_id"] == patient["participant_id"]]
            assert phone and all(t["phone"] and t["full_name"] == patient["full_name"] for t in phone), tiles
            kinds = {t.mid: t.kind for t in peer.pc.getTransceivers()}
            assert {kinds[t["mid"]] for t in phone} == {"audio"}, (phone, kinds)
            assert not any(t["phone"] for t in tiles if t["participant_id"] != patient["participant_id"])
        people = (await json_of(staff, f"/api/v1/meetings/{meeting_id}/connected"))["people"]
        assert {p["full_name"]: bool(p.get("by_phone")) for p in people} == {
            "Vera Samordnare": False, "Rita Region": False, patient["full_name"]: True}
        # The calling number is nowhere in what the participants' browsers get.
        for path in ("tiles", "connected", "reconciliation"):
            assert NUMBER not in (await coordinator.get(f"/api/v1/meetings/{meeting_id}/{path}")).text

        # Removed: the call ends and the phone tile goes from the others' rooms.
        removed = await coordinator.post(f"/api/v1/meetings/{meeting_id}/removals",
                                         json={"participant_id": patient["participant_id"], "reason": "test"})
        assert removed.status_code == 200, removed.text
        await tiles_when(staff, meeting_id, lambda t: not any(x["phone"] for x in t), "the phone tile gone")
        people = (await json_of(staff, f"/api/v1/meetings/{meeting_id}/connected"))["people"]
        assert not any(p.get("by_phone") for p in people)
    finally:
        if caller is not None and caller.returncode is None:
            caller.kill()
            await caller.wait()
        for peer in peers:
            await peer.close()
