"""Trunk SIP digest authentication (RFC 3261 §22, RFC 2617 qop=auth): SIPp as the trunk with the
configured credentials gets in; without credentials it is challenged (401), and with wrong ones
(the attacker who reached the SIP port from a trunk address) refused 403, before any prompt or roster
lookup. The check itself (DigestCheck) is tested directly too."""

from __future__ import annotations

import pytest
from aiosipua import SipDigestAuth, parse_auth, stringify_auth
from aiosipua.auth import build_credentials
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from devstack import sipp
from devstack.sipp import free_udp_port
from services.dialin.config import DialinSettings
from services.dialin.sip import DigestCheck
from tests.dialin.test_phone_caller import enter, finished, unidentified
from tests.polling import poll

USER, PASSWORD = "region-trunk", "trunk-secret-0123456789"
URI = "sip:dialin@10.0.0.5:5060"
CHECK = DigestCheck("svpl-dialin", USER, PASSWORD, b"n" * 40)


def answer(challenge: str, password: str = PASSWORD, uri: str = URI, user: str = USER) -> str:
    """What a trunk answers a challenge with (aiosipua's client side)."""
    credentials = build_credentials(SipDigestAuth(user, password), parse_auth(challenge), "INVITE", uri)
    assert credentials is not None
    return stringify_auth(credentials)


def verdicts(verdict: str) -> float:
    return REGISTRY.get_sample_value("svpl_dialin_digest_checks_total", {"verdict": verdict}) or 0.0


def test_the_right_answer_to_a_fresh_challenge_is_accepted_and_anything_else_is_not():
    challenge = CHECK.challenge(1000.0)
    assert 'qop="auth"' in challenge and "stale" not in challenge
    assert CHECK.verify(answer(challenge), "INVITE", URI, 1010.0) == "ok"
    assert CHECK.verify("", "INVITE", URI, 1010.0) == "missing"
    assert CHECK.verify(answer(challenge, password="wrong-password-000"), "INVITE", URI, 1010.0) == "wrong"
    assert CHECK.verify(answer(challenge, user="someone-else"), "INVITE", URI, 1010.0) == "wrong"
    # Answered for another request URI, or replayed for another method: wrong.
    assert CHECK.verify(answer(challenge, uri="sip:dialin@10.9.9.9:5060"), "INVITE", URI, 1010.0) == "wrong"
    assert CHECK.verify(answer(challenge, uri="sip:10.0.0.5:5060"), "INVITE", URI, 1010.0) == "ok"
    assert CHECK.verify(answer(challenge), "BYE", URI, 1010.0) == "wrong"
    # A nonce this service did not sign (another key, or edited) is wrong; an old one of ours is stale.
    forged = DigestCheck("svpl-dialin", USER, PASSWORD, b"x" * 40).challenge(1000.0)
    assert CHECK.verify(answer(forged), "INVITE", URI, 1010.0) == "wrong"
    assert CHECK.verify(answer(challenge.replace('nonce="1000.', 'nonce="2000.')), "INVITE", URI, 2010.0) == "wrong"
    assert CHECK.verify(answer(challenge), "INVITE", URI, 1000.0 + 301) == "stale"
    assert "stale=true" in CHECK.challenge(1301.0, stale=True)


@given(st.text(max_size=300))
def test_no_garbage_authorization_is_accepted_or_crashes_the_check(header):
    assert CHECK.verify(header, "INVITE", URI, 1000.0) in {"missing", "wrong"}
    assert CHECK.verify("Digest " + header, "INVITE", URI, 1000.0) == "wrong"


def test_settings_need_networks_or_credentials_and_both_parts_of_the_credentials():
    key = "k" * 40
    assert DialinSettings(connection_key=key, trunk_username=USER, trunk_password=PASSWORD).trunk_networks == []
    with pytest.raises(ValueError, match="together"):
        DialinSettings(connection_key=key, trunk_networks=["10.0.0.0/24"], trunk_username=USER)
    with pytest.raises(ValueError, match="at least 16"):
        DialinSettings(connection_key=key, trunk_username=USER, trunk_password="short")


@pytest.fixture
async def digest_world(dialin_factory):
    """Only digest credentials: no trunk networks (any source address may try)."""
    return await dialin_factory(trunk_networks=[], trunk_username=USER, trunk_password=PASSWORD)


@pytest.mark.slow
async def test_the_trunk_with_its_credentials_is_challenged_then_let_through_to_the_prompts(digest_world, tmp_path):
    world = digest_world
    m = await world.live()
    before = verdicts("missing"), verdicts("ok")
    scenario = sipp.scenario(tmp_path / "trunk.xml", "0707777712", enter(tmp_path, "trunk", m.dial_in_code + "##"),
                             digest=True)
    proc = await sipp.run(scenario, world.sip, free_udp_port(), free_udp_port(), credentials=(USER, PASSWORD))
    try:
        lobby = await poll(lambda: unidentified(world, m.meeting_id), timeout=20, what="the caller in the lobby")
        assert [c.label for c in lobby] == ["Telefon, slutar på …12"]
        assert (verdicts("missing") - before[0], verdicts("ok") - before[1]) == (1, 1)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
async def test_wrong_credentials_are_refused_403_and_no_credentials_only_get_a_challenge(digest_world, tmp_path):
    """The attacker: no credentials get only a 401 challenge (and no call); a wrong password, 403."""
    world = digest_world
    m = await world.live()
    before = verdicts("wrong"), REGISTRY.get_sample_value("svpl_dialin_calls_total", {"outcome": "bad_credentials"}) or 0
    plain = sipp.scenario(tmp_path / "plain.xml", "0708888812", [], refused=401)
    assert await finished(await sipp.run(plain, world.sip, free_udp_port(), free_udp_port()), 30) == 0
    wrong = sipp.scenario(tmp_path / "wrong.xml", "0708888812", [], refused=403, digest=True)
    proc = await sipp.run(wrong, world.sip, free_udp_port(), free_udp_port(),
                          credentials=(USER, "not-the-password-123"))
    assert await finished(proc, 30) == 0
    assert verdicts("wrong") - before[0] == 1
    assert (REGISTRY.get_sample_value("svpl_dialin_calls_total", {"outcome": "bad_credentials"}) or 0) - before[1] == 1
    assert world.component.dialin.active == 0
    assert await unidentified(world, m.meeting_id) == []


@pytest.mark.slow
async def test_srtp_keys_offered_over_plain_udp_are_refused_488(dialin_world, tmp_path):
    """SDES (RFC 4568) keys travel in the SDP: offered over SIP/UDP they were readable on the way, so the
    offer gets 488 (not an answer with our key in clear too), and no call is made."""
    world = dialin_world
    before = REGISTRY.get_sample_value("svpl_dialin_calls_total", {"outcome": "sdes_insecure"}) or 0
    scenario = sipp.scenario(tmp_path / "srtp.xml", "0709999912", [], refused=488)
    text = scenario.read_text(encoding="iso-8859-1")
    assert "RTP/AVP 8 0 101" in text
    scenario.write_text(text.replace("RTP/AVP 8 0 101", "RTP/SAVP 8 0 101\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
                                     "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"), encoding="iso-8859-1")
    assert await finished(await sipp.run(scenario, world.sip, free_udp_port(), free_udp_port()), 30) == 0
    assert (REGISTRY.get_sample_value("svpl_dialin_calls_total", {"outcome": "sdes_insecure"}) or 0) - before == 1
    assert world.component.dialin.active == 0
