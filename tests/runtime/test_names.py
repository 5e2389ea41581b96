"""Names as svpl shows them: refused when given to svpl with a character that is not text or that
changes how other text is displayed; cleaned when they come from a national source."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.identity.directory import DirectoryPerson
from services.identity.token_service import citizen_principal
from services.runtime import names
from services.runtime.errors import InvalidArgument

SPOOFING = ["Eve\x00", "Eve\u202eevE", "E\u200bve", "Eve\r\nAdmin", "Eve\u2028", "\ufeffEve", "Eve\u2066x\u2069",
            "Eve\ue000", "Eve\x85"]


@pytest.mark.parametrize("name", SPOOFING)
def test_a_name_with_control_or_direction_characters_is_refused_naming_the_field(name):
    with pytest.raises(InvalidArgument) as refused:
        names.checked("full_name", name)
    assert refused.value.field == "full_name"


def test_real_names_pass_normalised():
    assert names.checked("full_name", "  Åsa  Öberg-Ünal ") == "Åsa Öberg-Ünal"
    assert names.checked("full_name", "A\u030asa") == "Åsa"  # NFC
    assert names.checked("organization", "", required=False) == ""
    with pytest.raises(InvalidArgument):
        names.checked("full_name", "   ")


@given(st.text(max_size=60))
def test_displayable_never_keeps_what_checked_refuses(text):
    shown = names.displayable(text)
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") for c in shown)
    assert names.displayable(shown) == shown
    if shown:
        assert names.checked("name", shown, max_chars=10_000) == shown


def test_directory_and_citizen_names_from_national_sources_are_cleaned():
    person = DirectoryPerson(hsa_id="SE2321000057-9999", given_name="Vera\u202e", surname="Sam\u200bordnare\n",
                             organization="Region\x00 Jönköpings län")
    assert (person.name, person.organization) == ("Vera Samordnare", "Region Jönköpings län")
    assert citizen_principal("191212121212", "Tolvan\u202e Tolvansson", "bankid", "high").name == \
        "Tolvan Tolvansson"
