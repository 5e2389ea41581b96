"""People's and organisations' names as svpl shows them (tiles, speaking order, invitations, tickets).

A name is Unicode text in NFC with single spaces. Characters that change how *other* text is
displayed, or are not text, have no place in one: control characters (NUL, CR, LF, TAB, C1),
format characters (direction overrides such as U+202E, zero-width spaces and joiners, the BOM),
line and paragraph separators, surrogates, private-use and unassigned code points. A name given
to svpl is refused with the field named (`checked`); a name from a national source (the HSA
directory, BankID, 1177) is cleaned of them instead (`displayable`): the person exists, and must
still be shown, but never with someone else's name spoofed into the display.
"""

from __future__ import annotations

import unicodedata

from services.runtime.errors import InvalidArgument

_NOT_IN_NAMES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _allowed(char: str) -> bool:
    return unicodedata.category(char) not in _NOT_IN_NAMES


def _spaced(value: str) -> str:
    return " ".join(value.split())


def checked(field: str, value: str, max_chars: int = 200, required: bool = True) -> str:
    """The name as stored, or InvalidArgument naming `field`."""
    value = unicodedata.normalize("NFC", value or "")
    bad = next((c for c in value if not _allowed(c)), None)
    if bad is not None:
        raise InvalidArgument(field, f"contains a character that is not allowed in a name (U+{ord(bad):04X})")
    value = _spaced(value)
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_chars:
        raise InvalidArgument(field, f"at most {max_chars} characters")
    return value


def displayable(value: str) -> str:
    """A name from a national source, without the characters `checked` refuses."""
    return _spaced("".join(c for c in unicodedata.normalize("NFC", value or "") if _allowed(c)))
