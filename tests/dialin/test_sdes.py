"""SDES (RFC 4568) offer/answer and the SRTP it keys (services/dialin/sdes.py), directly: the trunk's
side is played with libsrtp from the keys on the wire, as an SBC would use them."""

from __future__ import annotations

import base64
import struct

import pylibsrtp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dialin import sdes

TRUNK_KEY = bytes(range(30))
OFFER = f"1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(TRUNK_KEY).decode()}"


def rtp(seq: int, payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, seq, seq * 160, 0x1234) + payload


def trunk_session(key: bytes, outbound: bool) -> pylibsrtp.Session:
    ssrc = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=ssrc))


def test_the_answer_keeps_the_tag_and_suite_with_a_fresh_key_and_both_directions_decrypt():
    ours = sdes.SrtpContext(sdes.choose([OFFER]))
    tag, suite, inline = ours.answer.split()
    answered = base64.b64decode(inline.removeprefix("inline:"))
    assert (tag, suite) == ("1", "AES_CM_128_HMAC_SHA1_80") and len(answered) == 30 and answered != TRUNK_KEY
    assert sdes.SrtpContext(sdes.choose([OFFER])).local_key != ours.local_key  # a new key per call
    # The trunk → us: protected with the trunk's offered key.
    sent = trunk_session(TRUNK_KEY, outbound=True).protect(rtp(1))
    assert sent != rtp(1) and ours.unprotect(sent, rtcp=False) == rtp(1)
    # Us → the trunk: the trunk decrypts with the key in our answer.
    assert trunk_session(answered, outbound=False).unprotect(ours.protect(rtp(7), rtcp=False)) == rtp(7)


def test_forged_replayed_and_plain_packets_are_dropped_and_counted():
    ours = sdes.SrtpContext(sdes.choose([OFFER]))
    trunk = trunk_session(TRUNK_KEY, outbound=True)
    packet = trunk.protect(rtp(1))
    assert ours.unprotect(packet, rtcp=False) == rtp(1)
    assert ours.unprotect(packet, rtcp=False) is None  # replayed
    forged = bytearray(trunk.protect(rtp(2)))
    forged[20] ^= 1
    assert ours.unprotect(bytes(forged), rtcp=False) is None  # one bit changed
    assert ours.unprotect(rtp(3), rtcp=False) is None  # in clear
    assert ours.unprotect(trunk_session(bytes(30), True).protect(rtp(4)), rtcp=False) is None  # another key
    assert ours.rejected == 4


@pytest.mark.parametrize("line", [
    "1 F8_128_HMAC_SHA1_80 inline:" + base64.b64encode(TRUNK_KEY).decode(),  # a suite we do not speak
    OFFER + " KDR=23",  # a session parameter
    OFFER + "|2^20|1:4",  # an MKI
    "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(16)).decode(),  # too short a key
    "1 AES_CM_128_HMAC_SHA1_80 inline:not base64!",
    "x AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(TRUNK_KEY).decode(),
])
def test_lines_we_cannot_honour_are_skipped_and_none_left_is_an_error(line):
    assert sdes.parse(line) is None
    assert sdes.choose([line, OFFER]).tag == "1"  # the next acceptable line is taken
    with pytest.raises(sdes.SdesError, match="no acceptable a=crypto"):
        sdes.choose([line])


def test_the_offers_order_is_its_preference_and_a_lifetime_is_accepted():
    second = f"2 AES_CM_128_HMAC_SHA1_32 inline:{base64.b64encode(TRUNK_KEY).decode()}|2^31"
    assert sdes.choose([second, OFFER]) == sdes.Crypto("2", "AES_CM_128_HMAC_SHA1_32", TRUNK_KEY)


@given(st.text(max_size=200))
def test_no_garbage_crypto_line_is_accepted_or_raises_anything_but_a_clear_error(line):
    crypto = sdes.parse(line)
    assert crypto is None or (crypto.suite in sdes.SUITES and len(crypto.key) == 30)
    try:
        sdes.choose([line])
    except sdes.SdesError:
        pass
