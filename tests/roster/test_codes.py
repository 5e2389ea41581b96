"""Dial-in meeting IDs: well formed, and a single mistyped digit or swapped neighbours is caught."""

from hypothesis import given, settings
from hypothesis import strategies as st

from services.roster import codes


@settings(max_examples=60)
@given(st.integers(min_value=6, max_value=15), st.data())
def test_a_single_typo_in_a_dial_in_code_is_caught(digits, data):
    code = codes.new_code(digits)
    assert len(code) == digits + 1 and codes.well_formed(code)
    i = data.draw(st.integers(0, len(code) - 1))
    wrong = data.draw(st.sampled_from([d for d in "0123456789" if d != code[i]]))
    assert not codes.well_formed(code[:i] + wrong + code[i + 1:])
    j = data.draw(st.integers(0, len(code) - 2))
    swapped = code[:j] + code[j + 1] + code[j] + code[j + 2:]
    if swapped != code and {code[j], code[j + 1]} != {"0", "9"}:  # Luhn misses only 09 <-> 90
        assert not codes.well_formed(swapped)


def test_codes_are_not_a_sequence():
    drawn = [codes.new_code(9) for _ in range(200)]
    assert len(set(drawn)) == 200
    # No code predicts the next: consecutive differences are all over the place.
    assert len({int(b[:-1]) - int(a[:-1]) for a, b in zip(drawn, drawn[1:])}) > 190
