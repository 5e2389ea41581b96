"""The dial-in service's plain parts: keypad entry, guessing bounds, masking, connection ids, the
audio mix and the prompts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dialin import entry
from services.dialin.audio import FRAME_BYTES, PlayoutBuffer, Prompts, mix
from services.dialin.config import DialinSettings

KEY = b"k" * 40


def test_keys_until_pound_make_the_entry_and_star_starts_over():
    d = entry.Digits()
    assert [d.feed(k) for k in "12*34"] == [None] * 5
    assert d.feed("#") == "34"
    assert d.feed("#") == ""  # nothing entered: an empty entry (the flow counts it as a try)


@given(st.text(alphabet="0123456789*#ABCD", max_size=80))
def test_an_entry_is_never_longer_than_a_meeting_id_can_be(keys):
    d = entry.Digits()
    for k in keys:
        out = d.feed(k)
        assert out is None or (out.isdigit() or out == "") and len(out) <= entry.MAX_DIGITS


@pytest.mark.parametrize(("raw", "number"), [
    ("sip:0701234512@trunk.example.se", "0701234512"),
    ('"Kalle" <sip:+46701234512@10.0.0.1:5060>;tag=x', "+46701234512"),
    ("<tel:+46-70-123 45 12>", "+46701234512"),
    ("sip:anonymous@anonymous.invalid", ""),
    ("sip:12@x", ""),
])
def test_the_calling_number_is_read_from_the_uri(raw, number):
    assert entry.caller_number(raw) == number


def test_numbers_are_masked_to_their_last_two_digits():
    assert entry.label("0701234512") == "Telefon, slutar på …12"
    assert entry.label("") == "Telefon, dolt nummer"
    assert "0701234512" not in entry.masked("0701234512")


def test_a_number_has_the_same_connection_id_in_a_meeting_and_a_withheld_one_never_does():
    a = entry.connection_id(KEY, "m1", "0701234512")
    assert a == entry.connection_id(KEY, "m1", "0701234512")
    assert a != entry.connection_id(KEY, "m2", "0701234512")
    assert a != entry.connection_id(b"x" * 40, "m1", "0701234512")
    assert "0701234512" not in a
    assert entry.connection_id(KEY, "m1", "") != entry.connection_id(KEY, "m1", "")


def test_entries_are_bounded_per_number_and_in_total_over_sliding_windows():
    now = [0.0]
    limit = entry.RateLimit(per_number=3, number_window=60, total=5, total_window=10, clock=lambda: now[0])
    assert [limit.allow("070111") for _ in range(4)] == ["", "", "", "number"]
    assert [limit.allow("070222") for _ in range(3)] == ["", "", "total"]
    now[0] = 11.0  # the total window has passed, the number's has not
    assert limit.allow("070111") == "number"
    assert limit.allow("070222") == ""
    now[0] = 61.0
    assert limit.allow("070111") == ""


def test_the_mix_sums_and_clips():
    loud = np.full(160, 30000, np.int16).tobytes()
    quiet = np.full(160, -1000, np.int16).tobytes()
    assert np.frombuffer(mix([loud, loud]), np.int16).max() == 32767
    assert np.frombuffer(mix([loud, quiet]), np.int16)[0] == 29000
    assert mix([]) == bytes(FRAME_BYTES)


def test_every_prompt_the_flow_plays_is_there_at_8_khz():
    prompts = Prompts()
    for name in ("welcome", "wrong_id", "too_many", "lobby", "admitted", "removed", "refused", "not_started",
                 "ended", "busy", "personal_code", "wrong_code", "too_many_codes"):
        assert prompts.seconds(name) > 0.5, name
        assert all(len(f) == FRAME_BYTES for f in prompts.frames(name))
    # The goodbyes leave time for the BYE within 2 s.
    assert prompts.seconds("removed") < 1.5 and prompts.seconds("ended") < 1.5


def test_settings_refuse_a_missing_trunk_or_a_short_key():
    with pytest.raises(ValueError, match="trunk_networks"):
        DialinSettings(connection_key="k" * 40, trunk_networks=[])
    with pytest.raises(ValueError, match="connection_key"):
        DialinSettings(connection_key="short", trunk_networks=["10.0.0.0/24"])
    with pytest.raises(ValueError, match="not-a-network"):
        DialinSettings(connection_key="k" * 40, trunk_networks=["not-a-network"])


def test_the_playout_buffer_waits_for_a_few_frames_plays_them_in_order_and_bounds_the_delay():
    b = PlayoutBuffer(start=3, limit=5)
    frames = [bytes([i]) * FRAME_BYTES for i in range(1, 9)]
    b.push(frames[0] + frames[1][:100])  # any packet size
    assert b.pull() is None  # not enough yet to ride out jitter
    b.push(frames[1][100:] + frames[2])
    assert [b.pull(), b.pull(), b.pull()] == frames[:3]
    assert b.pull() is None and b.underruns == 1  # ran dry: waits for 3 frames again
    for f in frames[3:]:
        b.push(f)  # 5 frames: at the limit
    b.push(bytes([9]) * FRAME_BYTES)  # one more: the oldest goes
    assert b.dropped == FRAME_BYTES and b.buffered_frames == 5
    assert b.pull() == frames[4]
