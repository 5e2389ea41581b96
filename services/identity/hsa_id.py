"""HSA-id: `SE` + a 10-digit organisation number + `-` + one or more of A-Z a-z 0-9; at most 31 characters."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.runtime.errors import InvalidArgument

MAX_LENGTH = 31
_SUFFIX = re.compile(r"^[A-Za-z0-9]+$")
_WHOLE = re.compile(r"SE([0-9]{10})-[A-Za-z0-9]+", re.ASCII)


@dataclass(frozen=True)
class HsaId:
    normalized: str
    organization_number: str


def parse(value: str, field: str = "hsa_id") -> HsaId:
    text = (value or "").strip()
    if text[:2] == "se":
        text = "SE" + text[2:]
    whole = _WHOLE.fullmatch(text)
    if whole and len(text) <= MAX_LENGTH:  # the common case; the checks below say what is wrong
        return HsaId(normalized=text, organization_number=whole.group(1))
    if not text:
        raise InvalidArgument(field, "is required")
    if len(text) > MAX_LENGTH:
        raise InvalidArgument(field, f"an HSA-id has at most {MAX_LENGTH} characters (this one has {len(text)})")
    if text[:2].upper() != "SE":
        raise InvalidArgument(field, "an HSA-id starts with SE")
    org = text[2:12]
    if len(org) < 10 or not org.isascii() or not org.isdigit():
        raise InvalidArgument(field, "SE must be followed by the 10-digit organisation number")
    if text[12:13] != "-":
        raise InvalidArgument(field, "a '-' must follow the 10-digit organisation number")
    suffix = text[13:]
    if not suffix:
        raise InvalidArgument(field, "after the '-', one or more of A-Z a-z 0-9")
    if not (suffix.isascii() and _SUFFIX.match(suffix)):
        bad = next(ch for ch in suffix if not (ch.isascii() and ch.isalnum()))
        raise InvalidArgument(field, f"after the '-', only A-Z a-z 0-9 are allowed (found {bad!r})")
    return HsaId(normalized=f"SE{org}-{suffix}", organization_number=org)


def is_valid(value: str) -> bool:
    try:
        parse(value)
    except InvalidArgument:
        return False
    return True
