"""HSA-id: `SE` + the organisation number (10 digits, or the 12-digit form with the century
prefix `16`, as Inera's own `SE165565594230-1000`) + `-` + one or more of A-Z a-z 0-9; at most
31 characters.

Inera's test environments issue HSA-ids with other prefixes (`TSTNMT2321000156-1019` on test
SITHS cards, `T-SERVICES-SE165565594230-11JQ` on test function certificates). Those are
accepted only where the deployment says it is a test environment (`test_environment=True`,
from the identity setting SVPL_TEST_ENVIRONMENT); a production deployment refuses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.runtime.errors import InvalidArgument

MAX_LENGTH = 31
CENTURY = "16"  # the organisation number's "century" prefix in the 12-digit form
TEST_PREFIXES = ("TSTNMT", "T-SERVICES-SE")  # Inera's test environments (longest first is not needed)
_SUFFIX = re.compile(r"^[A-Za-z0-9]+$")
_WHOLE = re.compile(r"SE((?:16)?[0-9]{10})-[A-Za-z0-9]+", re.ASCII)
_TEST = re.compile(r"(?:TSTNMT|T-SERVICES-SE)((?:16)?[0-9]{10})-[A-Za-z0-9]+", re.ASCII)


@dataclass(frozen=True)
class HsaId:
    normalized: str
    organization_number: str  # always the 10-digit form
    test: bool = False  # a test-environment HSA-id (only ever parsed with test_environment=True)


def organization_number(digits: str) -> str:
    """The 10-digit organisation number of a 10- or 12-digit form (`16` + 10 digits)."""
    return digits[2:] if len(digits) == 12 and digits.startswith(CENTURY) else digits


def parse(value: str, field: str = "hsa_id", *, test_environment: bool = False) -> HsaId:
    text = (value or "").strip()
    if text[:2] == "se":
        text = "SE" + text[2:]
    whole = _WHOLE.fullmatch(text)
    if whole and len(text) <= MAX_LENGTH:  # the common case; the checks below say what is wrong
        return HsaId(normalized=text, organization_number=organization_number(whole.group(1)))
    if not text:
        raise InvalidArgument(field, "is required")
    if len(text) > MAX_LENGTH:
        raise InvalidArgument(field, f"an HSA-id has at most {MAX_LENGTH} characters (this one has {len(text)})")
    if text.upper().startswith(TEST_PREFIXES):
        test = _TEST.fullmatch(text)
        if not test_environment:
            raise InvalidArgument(field, "a test-environment HSA-id (TSTNMT…, T-SERVICES-SE…) is not accepted here")
        if test:
            return HsaId(normalized=text, organization_number=organization_number(test.group(1)), test=True)
        raise InvalidArgument(field, "a test-environment HSA-id is its prefix, the organisation number, '-' and "
                                     "one or more of A-Z a-z 0-9")
    if text[:2].upper() != "SE":
        raise InvalidArgument(field, "an HSA-id starts with SE")
    digits = len(text[2:]) - len(text[2:].lstrip("0123456789"))
    if digits not in (10, 12) or (digits == 12 and not text[2:4] == CENTURY):
        raise InvalidArgument(field, "SE must be followed by the organisation number: 10 digits, or 12 beginning "
                                     "with 16")
    if text[2 + digits:3 + digits] != "-":
        raise InvalidArgument(field, "a '-' must follow the organisation number")
    suffix = text[3 + digits:]
    if not suffix:
        raise InvalidArgument(field, "after the '-', one or more of A-Z a-z 0-9")
    if not (suffix.isascii() and _SUFFIX.match(suffix)):
        bad = next(ch for ch in suffix if not (ch.isascii() and ch.isalnum()))
        raise InvalidArgument(field, f"after the '-', only A-Z a-z 0-9 are allowed (found {bad!r})")
    org = text[2:2 + digits]
    return HsaId(normalized=f"SE{org}-{suffix}", organization_number=organization_number(org))


def is_valid(value: str, *, test_environment: bool = False) -> bool:
    try:
        parse(value, test_environment=test_environment)
    except InvalidArgument:
        return False
    return True
