"""Personnummer and samordningsnummer: parse, validate, normalise to 12 digits, mask.

Hand-written rather than wrapping the `personnummer` package (3.2.1): it ignores its
options, accepts future birth dates, does not strip spaces and reports every error
as one exception without saying what is wrong. The rules (Skatteverket, SKV 704):
a Luhn check digit over the 10-digit form YYMMDDNNN; a samordningsnummer adds 60 to
the day; the separator turns from '-' to '+' the year the person turns 100; serial
000 is never issued. Errors name what is wrong ("check digit should be 8").
The `personnummer` package is still the baseline in `make bench-identity`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from services.runtime.errors import InvalidArgument

SWEDEN = ZoneInfo("Europe/Stockholm")  # "today" for birth dates is the Swedish date
PERSONNUMMER = "personnummer"
SAMORDNINGSNUMMER = "samordningsnummer"

_SHAPE = re.compile(r"^(?P<century>[0-9]{2})?(?P<yy>[0-9]{2})(?P<mm>[0-9]{2})(?P<dd>[0-9]{2})"
                    r"(?P<sep>[-+]?)(?P<serial>[0-9]{3})(?P<check>[0-9])$")


@dataclass(frozen=True)
class Personnummer:
    normalized: str  # 12 digits, YYYYMMDDNNNC (the number's own day, +60 for samordningsnummer)
    birth_date: dt.date  # the real day
    kind: str  # PERSONNUMMER | SAMORDNINGSNUMMER

    @property
    def masked(self) -> str:
        return mask(self.normalized)


def mask(normalized: str) -> str:
    """For display: YYYYMMDD-****."""
    return f"{normalized[:8]}-****"


def luhn_check_digit(nine_digits: str) -> int:
    """The check digit over YYMMDDNNN (weights 2,1,2,1,...; digits of products summed)."""
    total = 0
    for i, ch in enumerate(nine_digits):
        product = int(ch) * (2 if i % 2 == 0 else 1)
        total += product - 9 if product > 9 else product
    return (10 - total % 10) % 10


def _date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a non-leap target year
        return day.replace(year=day.year + years, day=28)


def parse(value: str, field: str = "personnummer", today: dt.date | None = None) -> Personnummer:
    """Validate and normalise; raises InvalidArgument(field, what is wrong)."""
    today = today or dt.datetime.now(SWEDEN).date()
    text = (value or "").strip()
    if not text:
        raise InvalidArgument(field, "is required")
    m = _SHAPE.match(text)
    if not m:
        raise InvalidArgument(
            field, "expected YYMMDD-NNNC, YYMMDD+NNNC, YYYYMMDDNNNC or YYYYMMDD-NNNC (digits only, besides - or +)"
        )
    century, yy, mm, dd, sep = m["century"], int(m["yy"]), int(m["mm"]), int(m["dd"]), m["sep"]
    serial, check = m["serial"], int(m["check"])
    if century and sep == "+":
        raise InvalidArgument(field, "'+' (100 years or older) only goes with a two-digit year: YYMMDD+NNNC")
    if not 1 <= mm <= 12:
        raise InvalidArgument(field, f"month {m['mm']} does not exist")
    kind = PERSONNUMMER
    real_day = dd
    if dd > 60:
        kind, real_day = SAMORDNINGSNUMMER, dd - 60
    if not 1 <= real_day <= 31:
        raise InvalidArgument(field, f"day {m['dd']} does not exist (a samordningsnummer adds 60 to the day)")
    if serial == "000":
        raise InvalidArgument(field, "serial number 000 is never issued")
    expected = luhn_check_digit(f"{m['yy']}{m['mm']}{m['dd']}{serial}")
    if check != expected:
        raise InvalidArgument(field, f"check digit should be {expected}")

    if century:
        year = int(century + m["yy"])
        birth = _date(year, mm, real_day)
        if birth is None:
            raise InvalidArgument(field, f"{year:04d}-{mm:02d}-{real_day:02d} is not a date")
        if birth > today:
            raise InvalidArgument(field, f"birth date {birth.isoformat()} is in the future")
    else:
        # The latest real date with these digits that is not in the future ('-'), or
        # that is at least 100 years ago ('+').
        latest = today if sep != "+" else _add_years(today, -100)
        birth = None
        start = latest.year - latest.year % 100 + yy
        for year in (start, start - 100):
            candidate = _date(year, mm, real_day)
            # Within the 100 years the separator stands for: under 100 ('-'), 100 to 199 ('+').
            if candidate is not None and candidate <= latest and _add_years(candidate, 100) > latest:
                birth = candidate
                break
        if birth is None:
            raise InvalidArgument(field, f"{m['mm']}-{real_day:02d} is not a date in any year ending in {m['yy']}")
    normalized = f"{birth.year:04d}{mm:02d}{dd:02d}{serial}{check}"
    return Personnummer(normalized=normalized, birth_date=birth, kind=kind)


def is_valid(value: str) -> bool:
    try:
        parse(value)
    except InvalidArgument:
        return False
    return True
